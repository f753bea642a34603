//! Configuration: TOML file -> raw serde structs (`raw`) -> validated, typed [`Config`].
//!
//! Loading does no I/O beyond reading the one file: certificate files named by the config are
//! read when listeners start (and by `sluice check`), not here. Relative paths are resolved
//! against the directory of the config file, so a config and its certificates can move together.

mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    pub file: String,
    /// Dotted path of the offending key, e.g. `pool[0].endpoints[1].weight`.
    pub key: String,
    pub problem: String,
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
    pub proxy: ProxySettings,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
    pub policy: PolicyConfig,
    pub cache: Option<CacheConfig>,
    pub runtime: RuntimeConfig,
    /// Span export over OTLP/HTTP; off without the table.
    pub otlp: Option<OtlpConfig>,
    /// `[cache.shared]`: the fleet's Redis (second cache tier, purge fan-out, policy
    /// rollout, node registry); off without the table.
    pub shared: Option<SharedConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certificates: Vec<CertificateConfig>,
    /// Index into `certificates` used when the client sends no SNI or an unknown name.
    pub default_certificate: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Explicit names; empty means "the SANs of the certificate".
    pub server_names: Vec<String>,
    /// Config key of this entry, for error messages raised when the files are read.
    pub key_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub endpoints: Vec<EndpointConfig>,
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTls>,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    /// Algorithm, panic threshold, slow start, hashing and circuit-breaker limits.
    pub balance: crate::balance::Options,
    pub retry: RetryConfig,
    pub health_check: Option<HealthCheckConfig>,
    /// `None` when `outlier_detection.enabled = false`.
    pub outlier: Option<OutlierConfig>,
}

/// Retrying a failed exchange on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Further attempts after the first; 0 = never retry.
    pub retries: u32,
    /// Retries in flight may be at most this fraction (0..=1) of the pool's requests in flight...
    pub budget_ratio: f64,
    /// ...or this many, whichever is larger.
    pub budget_min: u32,
    /// Request bodies up to this size (with a known length) are buffered so they can be replayed.
    pub buffer: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            retries: 2,
            budget_ratio: 0.2,
            budget_min: 3,
            buffer: 64 * 1024,
        }
    }
}

/// Active health checking of a pool's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    /// Each wait is `interval` plus a random amount up to this.
    pub jitter: Duration,
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub fall: u32,
    /// Whether endpoints start unhealthy (until `rise` checks pass) rather than healthy.
    pub start_unhealthy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckKind {
    /// A TCP connect (and the TLS handshake for a TLS pool).
    Tcp,
    Http(HttpCheck),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub method: http::Method,
    /// Origin-form request target.
    pub path: String,
    /// `Host` to send; the endpoint's address when absent.
    pub host: Option<String>,
    /// Inclusive ranges of passing statuses.
    pub expect_status: Vec<(u16, u16)>,
    /// A substring the body must contain (the first 64 KiB are read).
    pub expect_body: Option<String>,
}

/// Passive health: ejecting endpoints that fail in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive 5xx responses or local failures (0 = off).
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 responses or local failures (connect, reset, timeout).
    pub consecutive_gateway_errors: u32,
    /// Consecutive failures to connect.
    pub consecutive_connect_failures: u32,
    /// First ejection time; the n-th ejection in a row lasts n times as long...
    pub base_ejection_time: Duration,
    /// ...but never longer than this.
    pub max_ejection_time: Duration,
    /// At most this fraction (0..=1) of the pool is ejected at once (always at least one).
    pub max_ejection_ratio: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 5,
            consecutive_connect_failures: 3,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_ratio: 0.5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `host:port`; an IP literal is used as is, a name is resolved at connect time.
    pub address: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub server_name: String,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub default_pool: String,
    /// Keep the client's `Host` (true) or send the endpoint address (false).
    pub preserve_host: bool,
    /// Add `Via` to requests and responses (RFC 9110 §7.6.3).
    pub via: bool,
    /// Add `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
    pub forwarded_headers: bool,
    /// The pseudonym used in `Via`.
    pub via_name: String,
    /// Peers whose `X-Forwarded-*`, `Forwarded`, `X-Real-IP` and `X-Request-Id` are kept
    /// (and extended); from any other peer they are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where the client address comes from (policy `client-ip`, IP hash, access log).
    pub client_ip: ClientIp,
    /// Give every request an `X-Request-Id` (a trusted peer's is kept).
    pub request_id: bool,
}

/// `[proxy] client_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIp {
    /// The connection's peer address.
    Peer,
    /// From a trusted peer: the rightmost `X-Forwarded-For` address that is not itself a
    /// trusted proxy (nginx's `real_ip_recursive on`); otherwise the peer.
    Forwarded,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub client_header: Duration,
    pub client_idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub shutdown_grace: Duration,
    /// How long a closing HTTP/1.1 connection reads and discards what the client still sends
    /// (`listener::linger`); zero = close at once.
    pub lingering: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_request_header_size: usize,
    pub max_request_body: u64,
}

/// How a request field that `Vary` selects on is compared between requests (RFC 9111 §4.1
/// allows the equivalences each mode applies; `cache/vary.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaryNorm {
    /// Byte for byte, after joining the field's lines.
    Exact,
    /// A list (RFC 9110 §5.6.1): whitespace around members and parameters and empty members
    /// do not count.
    List,
    /// A list whose order does not matter.
    SortedList,
    /// A list whose order does not matter, of case-insensitive tokens (`Accept-Encoding`,
    /// `Accept-Language`, `Accept-Charset`).
    Tokens,
}

impl VaryNorm {
    pub const NAMES: [(&'static str, VaryNorm); 4] = [
        ("exact", VaryNorm::Exact),
        ("list", VaryNorm::List),
        ("sorted-list", VaryNorm::SortedList),
        ("tokens", VaryNorm::Tokens),
    ];

    /// Preference lists whose order is carried by `q` weights and whose values are
    /// case-insensitive; `Accept`'s parameters may be case-sensitive, so it is only sorted.
    pub fn defaults() -> Vec<(http::HeaderName, VaryNorm)> {
        use http::header;
        vec![
            (header::ACCEPT_ENCODING, VaryNorm::Tokens),
            (header::ACCEPT_LANGUAGE, VaryNorm::Tokens),
            (header::ACCEPT_CHARSET, VaryNorm::Tokens),
            (header::ACCEPT, VaryNorm::SortedList),
        ]
    }
}

/// `[cache]`: the HTTP cache is on when the table is present.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Byte budget of the store: bodies, header fields and keys.
    pub capacity: u64,
    /// Larger responses are passed through, not stored.
    pub max_object_size: u64,
    /// How long a request waits for another request's fetch of the same key.
    pub coalesce_timeout: Duration,
    /// How long a key whose response was not storable sends requests straight upstream.
    pub hit_for_miss: Duration,
    /// How stale a stored response may be and still be served when the origin cannot be
    /// reached (RFC 9111 §4.2.4); zero = never.
    pub stale_on_error: Duration,
    /// Also serve it (within `stale_on_error`) when the origin answers 500, 502, 503 or 504.
    pub stale_on_5xx: bool,
    /// A HEAD miss fetches (and stores) the GET, as nginx's `proxy_cache_convert_head`.
    pub convert_head: bool,
    /// How `Vary`'s selecting fields compare (`[cache.vary]` over the defaults); fields not
    /// named compare exactly.
    pub vary: Vec<(http::HeaderName, VaryNorm)>,
    /// Targeted cache-control fields (RFC 9213), most specific first: the first present and
    /// valid one replaces `Cache-Control` and `Expires` for this cache.
    pub targeted: Vec<http::HeaderName>,
    /// Pass the targeted fields on to clients (downstream caches may be their targets too).
    pub forward_targeted: bool,
    /// Add `X-Cache: HIT|MISS`.
    pub x_cache: bool,
    /// The cache's name in `Cache-Status` (RFC 9211 §2).
    pub name: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 256 << 20,
            max_object_size: 8 << 20,
            coalesce_timeout: Duration::from_secs(5),
            hit_for_miss: Duration::from_secs(30),
            stale_on_error: Duration::ZERO,
            stale_on_5xx: false,
            convert_head: true,
            vary: VaryNorm::defaults(),
            targeted: vec![http::HeaderName::from_static("cdn-cache-control")],
            forward_targeted: true,
            x_cache: false,
            name: "sluice".into(),
        }
    }
}

/// `[cache.shared]`: a Redis-compatible server shared by a fleet of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedConfig {
    /// `redis://`, `rediss://`, `redis-cluster://`, `redis-sentinel://` (and `valkey*`).
    pub url: String,
    /// Prefix of every key, so fleets (or a test) can share one server.
    pub namespace: String,
    /// This node's name in the fleet.
    pub node: String,
    /// Bound on one Redis operation; past it the request goes on without the shared tier.
    pub timeout: Duration,
    /// How long a node fetching a key from the origin holds the fleet-wide lock at most.
    pub lock_lease: Duration,
    /// Consecutive failed operations that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one operation probes the server.
    pub breaker_open: Duration,
    /// Bodies larger than this are stored in chunks of this size.
    pub chunk_size: u64,
    /// Connections to the server (commands are pipelined on each).
    pub connections: usize,
    /// How often this node writes its entry in the node registry.
    pub heartbeat: Duration,
    /// How long a canary runs a published policy before it is promoted to the fleet.
    pub canary_window: Duration,
    /// A canary node whose policy failures (traps, deadline, memory, invalid decisions)
    /// over its calls exceed this rolls the rollout back.
    pub rollback_failure_ratio: f64,
    /// The same for 5xx responses over all responses.
    pub rollback_5xx_ratio: f64,
}

/// `[otlp]`: one span per request, exported in batches as OTLP/HTTP protobuf.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Where batches are POSTed, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: http::Uri,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Share of requests without a sampled parent that start a sampled trace; requests with a
    /// `traceparent` follow its sampled flag.
    pub sample_ratio: f64,
    /// Longest a finished span waits before its batch is sent.
    pub flush_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How connections are spread over threads (`[runtime]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub mode: RuntimeMode,
    /// Worker threads of `per-core` mode; by default one per CPU this process may use.
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeMode {
    /// One single-threaded event loop per worker thread, each with its own `SO_REUSEPORT`
    /// accept socket per listener and its own idle upstream connections: a connection and
    /// everything it does stay on one thread, as with nginx's worker processes.
    PerCore,
    /// One work-stealing tokio runtime that every connection shares.
    Shared,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            mode: RuntimeMode::PerCore,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `info` or `sluice=debug,warn`.
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
    /// Where access-log lines go (appended); stderr when `None`.
    pub access_log_path: Option<PathBuf>,
}

/// What happens to a request whose policy traps, overruns its deadline or memory cap, or
/// returns a decision the host rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Forward the request, unchanged, to `proxy.default_pool`.
    Open,
    /// Answer 503.
    Closed,
}

/// How instances of the policy component are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// A new instance per request (`instances = { reuse = 1 }`): no state survives a request.
    Fresh,
    /// Each instance serves up to this many requests, one at a time; guest globals survive
    /// between those requests. An instance that fails is discarded.
    Reuse(u32),
}

/// Requests one instance serves by default. Measured (bench/RESULTS.md, step 2): a fresh
/// instance per request costs the whole proxy 1.76x the CPU of a native decision, reuse 1.14x;
/// 1000 bounds how long guest state can live.
pub const DEFAULT_REUSE: u32 = 1000;

/// Largest `policy.memory`; the engine's memory slots are sized for it.
pub const MAX_POLICY_MEMORY: u64 = 1 << 30;

/// WASI interfaces refused at load unless the operator allows them by name (then linked to
/// functions that trap). A policy has no business making HTTP requests of its own.
pub const REFUSED_IMPORTS: [&str; 1] = ["wasi:http"];

/// Names `policy.allow_imports` accepted before 0.3: `wasi:filesystem` and `wasi:sockets` are
/// now always linked, granting nothing (no directory, no address), so allowing them is a no-op.
pub const FORMERLY_REFUSED_IMPORTS: [&str; 2] = ["wasi:filesystem", "wasi:sockets"];

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// The component file; `None` runs the default policy built into the binary.
    pub module: Option<PathBuf>,
    /// Names the policy in logs and the admin API.
    pub name: String,
    pub fail: FailMode,
    /// CPU time one `decide` call may take.
    pub deadline: Duration,
    /// Cap on the guest's linear memory.
    pub memory: usize,
    pub instances: InstanceMode,
    /// Reload when the module file changes.
    pub watch: bool,
    /// Entries of [`REFUSED_IMPORTS`] the operator allows (linked to trapping stubs).
    pub allow_imports: Vec<String>,
    /// `[policy.settings]`, every value as text; what the guest's `config.get` returns.
    pub settings: std::collections::BTreeMap<String, String>,
    /// Decide with a native Rust copy of the default policy instead of running Wasm: only for
    /// measuring what the Wasm call costs.
    pub native: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            module: None,
            name: "default".into(),
            fail: FailMode::Closed,
            deadline: Duration::from_millis(5),
            memory: 16 << 20,
            instances: InstanceMode::Reuse(DEFAULT_REUSE),
            watch: true,
            allow_imports: Vec::new(),
            settings: Default::default(),
            native: false,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &file, base)
    }

    /// Validates config text. `file` names it in errors; `base` resolves relative paths.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, file, base)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header: Duration::from_secs(10),
            client_idle: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(3),
            upstream_response: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            lingering: Duration::from_secs(5),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_request_header_size: 64 * 1024,
            max_request_body: 1 << 30,
        }
    }
}
