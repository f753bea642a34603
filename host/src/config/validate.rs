//! Raw -> typed validation. Every rule reports the dotted key it is about.

use super::raw::*;
use super::*;
use std::collections::HashSet;

/// hyper's HTTP/1 parser needs at least this much buffer for a request head.
const MIN_HEADER_SIZE: u64 = 8 * 1024;
const MAX_WEIGHT: i64 = 10_000;

struct Ctx<'a> {
    file: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

pub(super) fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let cx = Ctx { file, base };
    let raw = deserialize(text, &cx)?;
    build(raw, &cx)
}

fn deserialize(text: &str, cx: &Ctx) -> Result<RawConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(cx, text, &e))?;
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let problem = match inner.span() {
            Some(span) => format!("{} (line {})", inner.message(), line_of(text, span.start)),
            None => inner.message().to_string(),
        };
        cx.err(
            if key == "." {
                "(top level)".into()
            } else {
                key
            },
            problem,
        )
    })
}

fn syntax_error(cx: &Ctx, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    cx.err(format!("(syntax, line {line})"), e.message().to_string())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn build(raw: RawConfig, cx: &Ctx) -> Result<Config, ConfigError> {
    if raw.listener.is_empty() {
        return Err(cx.err("listener", "at least one [[listener]] is required"));
    }
    let mut listeners = Vec::with_capacity(raw.listener.len());
    let mut seen_addrs = HashSet::new();
    for (i, l) in raw.listener.into_iter().enumerate() {
        let key = format!("listener[{i}]");
        let address = socket_addr(&l.address, &format!("{key}.address"), cx)?;
        // Port 0 asks the OS for a free port, so two such listeners never collide.
        if address.port() != 0 && !seen_addrs.insert(address) {
            return Err(cx.err(
                format!("{key}.address"),
                format!("{address} is used by two listeners"),
            ));
        }
        let tls = l
            .tls
            .map(|t| listener_tls(t, &format!("{key}.tls"), cx))
            .transpose()?;
        listeners.push(ListenerConfig {
            name: l.name.unwrap_or_else(|| format!("listener{i}")),
            address,
            tls,
        });
    }

    if raw.pool.is_empty() {
        return Err(cx.err("pool", "at least one [[pool]] is required"));
    }
    let mut pools = Vec::with_capacity(raw.pool.len());
    let mut names = HashSet::new();
    for (i, p) in raw.pool.into_iter().enumerate() {
        let key = format!("pool[{i}]");
        let pool = pool(p, &key, cx)?;
        if !names.insert(pool.name.clone()) {
            return Err(cx.err(
                format!("{key}.name"),
                format!("pool \"{}\" is defined twice", pool.name),
            ));
        }
        pools.push(pool);
    }

    let default_pool = match raw.proxy.default_pool {
        Some(name) if names.contains(&name) => name,
        Some(name) => {
            return Err(cx.err("proxy.default_pool", format!("no pool named \"{name}\"")));
        }
        None if pools.len() == 1 => pools[0].name.clone(),
        None => {
            return Err(cx.err(
                "proxy.default_pool",
                "required when more than one pool is defined",
            ));
        }
    };
    let via_name = raw.proxy.via_name.unwrap_or_else(|| "sluice".into());
    if via_name.is_empty() || !via_name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(cx.err(
            "proxy.via_name",
            "must be a non-empty token without spaces or commas",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (i, entry) in raw.proxy.trusted_proxies.iter().flatten().enumerate() {
        let net = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                cx.err(
                    format!("proxy.trusted_proxies[{i}]"),
                    format!("{entry:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"),
                )
            })?;
        trusted_proxies.push(net.trunc());
    }
    let client_ip = match raw.proxy.client_ip.as_deref() {
        None | Some("peer") => ClientIp::Peer,
        Some("forwarded") if trusted_proxies.is_empty() => {
            return Err(cx.err(
                "proxy.client_ip",
                "\"forwarded\" needs proxy.trusted_proxies: only a trusted peer's X-Forwarded-For is believed",
            ));
        }
        Some("forwarded") => ClientIp::Forwarded,
        Some(other) => {
            return Err(cx.err(
                "proxy.client_ip",
                format!("{other:?} is not \"peer\" or \"forwarded\""),
            ));
        }
    };
    let proxy = ProxySettings {
        default_pool,
        preserve_host: raw.proxy.preserve_host.unwrap_or(true),
        via: raw.proxy.via.unwrap_or(true),
        forwarded_headers: raw.proxy.forwarded_headers.unwrap_or(true),
        via_name,
        trusted_proxies,
        client_ip,
        request_id: raw.proxy.request_id.unwrap_or(true),
    };

    let d = Timeouts::default();
    let t = raw.timeouts;
    let timeouts = Timeouts {
        client_header: positive(
            t.client_header,
            d.client_header,
            "timeouts.client_header",
            cx,
        )?,
        client_idle: positive(t.client_idle, d.client_idle, "timeouts.client_idle", cx)?,
        upstream_connect: positive(
            t.upstream_connect,
            d.upstream_connect,
            "timeouts.upstream_connect",
            cx,
        )?,
        upstream_response: positive(
            t.upstream_response,
            d.upstream_response,
            "timeouts.upstream_response",
            cx,
        )?,
        shutdown_grace: t.shutdown_grace.unwrap_or(d.shutdown_grace),
        lingering: t.lingering.unwrap_or(d.lingering),
    };

    let dl = Limits::default();
    let max_connections = match raw.limits.max_connections {
        None => dl.max_connections,
        Some(n) if (1..=1_000_000).contains(&n) => n as usize,
        Some(n) => {
            return Err(cx.err(
                "limits.max_connections",
                format!("{n} is out of range 1..=1000000"),
            ));
        }
    };
    let max_request_header_size = match raw.limits.max_request_header_size {
        None => dl.max_request_header_size,
        Some(s) if (MIN_HEADER_SIZE..=1 << 20).contains(&s.as_u64()) => s.as_u64() as usize,
        Some(s) => {
            return Err(cx.err(
                "limits.max_request_header_size",
                format!("{s} is out of range 8KiB..=1MiB"),
            ));
        }
    };
    let max_request_body = match raw.limits.max_request_body {
        None => dl.max_request_body,
        Some(s) => s.as_u64(),
    };
    let limits = Limits {
        max_connections,
        max_request_header_size,
        max_request_body,
    };

    let admin = raw.admin.map(|a| admin(a, cx)).transpose()?;
    if let Some(admin) = &admin {
        if seen_addrs.contains(&admin.address) {
            return Err(cx.err(
                "admin.address",
                "must not be the address of a proxy listener",
            ));
        }
    }

    let level = raw.log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(cx.err(
            "log.level",
            format!("\"{level}\" is not a valid filter (try \"info\" or \"sluice=debug\")"),
        ));
    }
    let format = match raw.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(cx.err(
                "log.format",
                format!("\"{other}\" is not one of \"text\", \"json\""),
            ));
        }
    };
    let log = LogConfig {
        level,
        format,
        access_log: raw.log.access_log.unwrap_or(true),
        access_log_path: raw.log.access_log_path.as_deref().map(|p| cx.path(p)),
    };

    let policy = match raw.policy {
        None => PolicyConfig::default(),
        Some(p) => policy(p, cx)?,
    };

    let (cache, shared) = match raw.cache {
        None => (None, None),
        Some(mut c) => {
            let shared = c.shared.take().map(|s| shared(s, cx)).transpose()?;
            (Some(cache(c, cx)?), shared)
        }
    };

    let dr = RuntimeConfig::default();
    let mode = match raw.runtime.mode.as_deref() {
        None => dr.mode,
        Some("per-core") => RuntimeMode::PerCore,
        Some("shared") => RuntimeMode::Shared,
        Some(other) => {
            return Err(cx.err(
                "runtime.mode",
                format!("\"{other}\" is not one of \"per-core\", \"shared\""),
            ));
        }
    };
    let workers = match raw.runtime.workers {
        None => dr.workers,
        Some(n) if (1..=256).contains(&n) => n as usize,
        Some(n) => {
            return Err(cx.err("runtime.workers", format!("{n} is out of range 1..=256")));
        }
    };
    if raw.runtime.workers.is_some() && mode == RuntimeMode::Shared {
        return Err(cx.err(
            "runtime.workers",
            "applies to mode = \"per-core\" only (a shared runtime uses every CPU)",
        ));
    }
    let runtime = RuntimeConfig { mode, workers };

    let otlp = raw.otlp.map(|o| otlp(o, cx)).transpose()?;
    Ok(Config {
        listeners,
        pools,
        proxy,
        timeouts,
        limits,
        admin,
        log,
        policy,
        cache,
        runtime,
        otlp,
        shared,
    })
}

fn shared(s: super::raw::RawShared, cx: &Ctx) -> Result<SharedConfig, ConfigError> {
    let scheme = s.url.split_once("://").map_or("", |(scheme, _)| scheme);
    let known = ["redis", "valkey"].iter().any(|base| {
        ["", "s"].iter().any(|tls| {
            ["", "-cluster", "-sentinel"]
                .iter()
                .any(|form| scheme == format!("{base}{tls}{form}"))
        })
    });
    if !known {
        return Err(cx.err(
            "cache.shared.url",
            format!(
                "\"{}\" is not a Redis URL such as redis://127.0.0.1:6379 (schemes: redis, rediss, redis-cluster, redis-sentinel, and their valkey forms)",
                s.url
            ),
        ));
    }
    // fred parses every form (standalone, TLS, Sentinel, Cluster); its message says why not.
    fred::types::config::Config::from_url(&s.url).map_err(|e| {
        cx.err(
            "cache.shared.url",
            format!(
                "\"{}\" is not a Redis URL such as redis://127.0.0.1:6379 ({e})",
                s.url
            ),
        )
    })?;
    let token = |v: &str| {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    let namespace = s.namespace.unwrap_or_else(|| "sluice".into());
    if !token(&namespace) {
        return Err(cx.err(
            "cache.shared.namespace",
            format!("\"{namespace}\" must be 1 to 64 letters, digits, '-', '.', '_'"),
        ));
    }
    let node = match s.node {
        Some(n) => n,
        None => default_node_name(),
    };
    if !token(&node) {
        return Err(cx.err(
            "cache.shared.node",
            format!("\"{node}\" must be 1 to 64 letters, digits, '-', '.', '_'"),
        ));
    }
    let ratio = |v: Option<f64>, d: f64, key: &str| match v {
        None => Ok(d),
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(_) => Err(cx.err(key, "must be between 0 and 1")),
    };
    let chunk_size = s.chunk_size.map_or(512 << 10, |b| b.as_u64());
    if !(4 << 10..=64 << 20).contains(&chunk_size) {
        return Err(cx.err("cache.shared.chunk_size", "must be between 4KiB and 64MiB"));
    }
    let connections = match s.connections {
        None => 2,
        Some(n @ 1..=64) => n as usize,
        Some(n) => {
            return Err(cx.err(
                "cache.shared.connections",
                format!("{n} is out of range 1..=64"),
            ));
        }
    };
    let breaker_failures = match s.breaker_failures {
        None => 3,
        Some(0) => return Err(cx.err("cache.shared.breaker_failures", "must be at least 1")),
        Some(n) => n,
    };
    Ok(SharedConfig {
        url: s.url,
        namespace,
        node,
        timeout: positive(
            s.timeout,
            Duration::from_millis(50),
            "cache.shared.timeout",
            cx,
        )?,
        lock_lease: positive(
            s.lock_lease,
            Duration::from_secs(10),
            "cache.shared.lock_lease",
            cx,
        )?,
        breaker_failures,
        breaker_open: positive(
            s.breaker_open,
            Duration::from_secs(1),
            "cache.shared.breaker_open",
            cx,
        )?,
        chunk_size,
        connections,
        heartbeat: positive(
            s.heartbeat,
            Duration::from_secs(1),
            "cache.shared.heartbeat",
            cx,
        )?,
        canary_window: positive(
            s.canary_window,
            Duration::from_secs(30),
            "cache.shared.canary_window",
            cx,
        )?,
        rollback_failure_ratio: ratio(
            s.rollback_failure_ratio,
            0.05,
            "cache.shared.rollback_failure_ratio",
        )?,
        rollback_5xx_ratio: ratio(s.rollback_5xx_ratio, 0.2, "cache.shared.rollback_5xx_ratio")?,
    })
}

/// The host name and process id: unique on a machine, readable in `GET /fleet`.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

fn otlp(o: super::raw::RawOtlp, cx: &Ctx) -> Result<OtlpConfig, ConfigError> {
    let uri: http::Uri = o
        .endpoint
        .parse()
        .map_err(|_| cx.err("otlp.endpoint", format!("\"{}\" is not a URL", o.endpoint)))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(cx.err(
            "otlp.endpoint",
            format!(
                "\"{}\" is not an http:// URL (OTLP/HTTP to a local collector or agent; https is not supported yet)",
                o.endpoint
            ),
        ));
    }
    let sample_ratio = o.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(cx.err("otlp.sample_ratio", "must be between 0 and 1"));
    }
    Ok(OtlpConfig {
        endpoint: uri,
        service_name: o.service_name.unwrap_or_else(|| "sluice".into()),
        sample_ratio,
        flush_interval: positive(
            o.flush_interval,
            Duration::from_secs(1),
            "otlp.flush_interval",
            cx,
        )?,
    })
}

fn cache(c: super::raw::RawCache, cx: &Ctx) -> Result<CacheConfig, ConfigError> {
    let d = CacheConfig::default();
    let capacity = c.capacity.map_or(d.capacity, |b| b.as_u64());
    if capacity < 64 << 10 {
        return Err(cx.err("cache.capacity", "must be at least 64KiB"));
    }
    let max_object_size = c
        .max_object_size
        .map_or(d.max_object_size.min(capacity / 8), |b| b.as_u64());
    if max_object_size == 0 {
        return Err(cx.err("cache.max_object_size", "must be greater than zero"));
    }
    // The store is split into shards that each hold a share of the capacity; an object must
    // fit in one (see cache::store::shards_for).
    if max_object_size > capacity / 8 {
        return Err(cx.err(
            "cache.max_object_size",
            format!(
                "{} is more than an eighth of cache.capacity ({}); raise the capacity or lower the limit",
                bytesize::ByteSize(max_object_size),
                bytesize::ByteSize(capacity)
            ),
        ));
    }
    let name = c.name.unwrap_or(d.name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(cx.err(
            "cache.name",
            format!("\"{name}\" must be a non-empty token of letters, digits, '-', '.', '_'"),
        ));
    }
    Ok(CacheConfig {
        capacity,
        max_object_size,
        coalesce_timeout: positive(
            c.coalesce_timeout,
            d.coalesce_timeout,
            "cache.coalesce_timeout",
            cx,
        )?,
        hit_for_miss: c.hit_for_miss.unwrap_or(d.hit_for_miss),
        stale_on_error: c.stale_on_error.unwrap_or(d.stale_on_error),
        stale_on_5xx: c.stale_on_5xx.unwrap_or(d.stale_on_5xx),
        convert_head: c.convert_head.unwrap_or(d.convert_head),
        vary: vary_rules(c.vary.unwrap_or_default(), d.vary, cx)?,
        targeted: match c.targeted {
            None => d.targeted,
            Some(names) => names
                .iter()
                .map(|n| {
                    http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                        cx.err(
                            "cache.targeted",
                            format!("\"{n}\" is not a header field name"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        },
        forward_targeted: c.forward_targeted.unwrap_or(d.forward_targeted),
        x_cache: c.x_cache.unwrap_or(false),
        name,
    })
}

/// `[cache.vary]` over the defaults: each entry names a field and how it compares.
fn vary_rules(
    raw: std::collections::BTreeMap<String, String>,
    mut rules: Vec<(http::HeaderName, VaryNorm)>,
    cx: &Ctx,
) -> Result<Vec<(http::HeaderName, VaryNorm)>, ConfigError> {
    for (field, mode) in raw {
        let key = format!("cache.vary.{field}");
        let name = http::HeaderName::from_bytes(field.as_bytes())
            .map_err(|_| cx.err(&key, format!("\"{field}\" is not a header field name")))?;
        let Some(&(_, norm)) = VaryNorm::NAMES.iter().find(|(n, _)| *n == mode) else {
            let names: Vec<String> = VaryNorm::NAMES
                .iter()
                .map(|(n, _)| format!("\"{n}\""))
                .collect();
            return Err(cx.err(
                &key,
                format!("\"{mode}\" is not one of {}", names.join(", ")),
            ));
        };
        rules.retain(|(n, _)| *n != name);
        rules.push((name, norm));
    }
    Ok(rules)
}

fn policy(p: RawPolicy, cx: &Ctx) -> Result<PolicyConfig, ConfigError> {
    let d = PolicyConfig::default();
    let module = p.module.map(|m| cx.path(&m));
    let name = match (p.name, &module) {
        (Some(n), _) => n,
        (None, Some(m)) => m
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.name.clone()),
        (None, None) => d.name.clone(),
    };
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(cx.err(
            "policy.name",
            "must be 1 to 64 printable characters without spaces",
        ));
    }
    let fail = match p.fail.as_deref() {
        None => d.fail,
        Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            return Err(cx.err(
                "policy.fail",
                format!("\"{other}\" is not one of \"open\", \"closed\""),
            ));
        }
    };
    let deadline = p.deadline.unwrap_or(d.deadline);
    if deadline < Duration::from_millis(1) || deadline > Duration::from_secs(10) {
        return Err(cx.err(
            "policy.deadline",
            format!("{deadline:?} is out of range 1ms..=10s"),
        ));
    }
    let memory = match p.memory {
        None => d.memory,
        Some(m) if (1 << 20..=MAX_POLICY_MEMORY).contains(&m.as_u64()) => m.as_u64() as usize,
        Some(m) => {
            return Err(cx.err("policy.memory", format!("{m} is out of range 1MiB..=1GiB")));
        }
    };
    let instances = match p.instances.and_then(|i| i.reuse) {
        None => d.instances,
        Some(1) => InstanceMode::Fresh,
        Some(n) if (2..=1_000_000).contains(&n) => InstanceMode::Reuse(n as u32),
        Some(n) => {
            return Err(cx.err(
                "policy.instances.reuse",
                format!("{n} is out of range 1..=1000000"),
            ));
        }
    };
    let allow_imports = p.allow_imports.unwrap_or_default();
    for (i, a) in allow_imports.iter().enumerate() {
        if !REFUSED_IMPORTS.contains(&a.as_str())
            && !crate::config::FORMERLY_REFUSED_IMPORTS.contains(&a.as_str())
        {
            return Err(cx.err(
                format!("policy.allow_imports[{i}]"),
                format!("\"{a}\" is not one of {REFUSED_IMPORTS:?}"),
            ));
        }
    }
    let mut settings = std::collections::BTreeMap::new();
    for (k, v) in p.settings.unwrap_or_default() {
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(cx.err(
                    format!("policy.settings.{k}"),
                    format!(
                        "a {} is not allowed: settings are strings, numbers or booleans",
                        other.type_str()
                    ),
                ));
            }
        };
        settings.insert(k, text);
    }
    Ok(PolicyConfig {
        module,
        name,
        fail,
        deadline,
        memory,
        instances,
        watch: p.watch.unwrap_or(d.watch),
        allow_imports,
        settings,
        native: p.native.unwrap_or(false),
    })
}

fn listener_tls(t: RawListenerTls, key: &str, cx: &Ctx) -> Result<ListenerTls, ConfigError> {
    if t.certificates.is_empty() {
        return Err(cx.err(
            format!("{key}.certificates"),
            "at least one certificate is required",
        ));
    }
    let default_certificate = t.default_certificate.unwrap_or(0);
    if default_certificate >= t.certificates.len() {
        return Err(cx.err(
            format!("{key}.default_certificate"),
            format!(
                "index {default_certificate} but only {} certificates",
                t.certificates.len()
            ),
        ));
    }
    let mut certificates = Vec::with_capacity(t.certificates.len());
    for (i, c) in t.certificates.into_iter().enumerate() {
        let ckey = format!("{key}.certificates[{i}]");
        let server_names = c.server_names.unwrap_or_default();
        for n in &server_names {
            if !valid_server_name(n) {
                return Err(cx.err(
                    format!("{ckey}.server_names"),
                    format!("\"{n}\" is not a DNS name or *.wildcard"),
                ));
            }
        }
        certificates.push(CertificateConfig {
            cert: cx.path(&c.cert),
            key: cx.path(&c.key),
            server_names: server_names
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            key_path: ckey,
        });
    }
    Ok(ListenerTls {
        certificates,
        default_certificate,
    })
}

fn valid_server_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn pool(p: RawPool, key: &str, cx: &Ctx) -> Result<PoolConfig, ConfigError> {
    if p.name.is_empty()
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(cx.err(
            format!("{key}.name"),
            format!(
                "\"{}\" must be non-empty and use only A-Z a-z 0-9 - _ .",
                p.name
            ),
        ));
    }
    if p.endpoints.is_empty() {
        return Err(cx.err(
            format!("{key}.endpoints"),
            "at least one endpoint is required",
        ));
    }
    let balance = balance_options(&p, p.endpoints.len(), key, cx)?;
    let retry = retry(&p, key, cx)?;
    let mut endpoints = Vec::with_capacity(p.endpoints.len());
    for (i, e) in p.endpoints.into_iter().enumerate() {
        let ekey = format!("{key}.endpoints[{i}]");
        let (address, weight) = match e {
            RawEndpoint::Address(a) => (a, None),
            RawEndpoint::Full(t) => (t.address, t.weight),
        };
        host_port(&address).map_err(|why| cx.err(format!("{ekey}.address"), why))?;
        let weight = match weight {
            None => 1,
            Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
            Some(w) => {
                return Err(cx.err(
                    format!("{ekey}.weight"),
                    format!("{w} is out of range 1..={MAX_WEIGHT}"),
                ));
            }
        };
        endpoints.push(EndpointConfig { address, weight });
    }
    let protocol = match p.protocol.as_deref() {
        None | Some("h1") | Some("http1") => UpstreamProtocol::Http1,
        Some("h2") | Some("http2") => UpstreamProtocol::Http2,
        Some(other) => {
            return Err(cx.err(
                format!("{key}.protocol"),
                format!("\"{other}\" is not one of \"h1\", \"h2\""),
            ));
        }
    };
    let tls = match p.tls {
        None => None,
        Some(t) => {
            let server_name = match t.server_name {
                Some(n) => n,
                None => host_port(&endpoints[0].address)
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_default(),
            };
            if rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
                return Err(cx.err(
                    format!("{key}.tls.server_name"),
                    format!("\"{server_name}\" is not a valid server name"),
                ));
            }
            Some(UpstreamTls {
                server_name,
                ca: t.ca.map(|c| cx.path(&c)),
            })
        }
    };
    let health_check = p
        .health_check
        .map(|h| health_check(h, &format!("{key}.health_check"), cx))
        .transpose()?;
    let outlier = match p.outlier_detection {
        None => Some(OutlierConfig::default()),
        Some(o) => outlier(o, &format!("{key}.outlier_detection"), cx)?,
    };
    Ok(PoolConfig {
        name: p.name,
        endpoints,
        protocol,
        tls,
        max_idle_per_endpoint: p.max_idle_per_endpoint.unwrap_or(1024),
        idle_timeout: p.idle_timeout.unwrap_or(Duration::from_secs(60)),
        balance,
        retry,
        health_check,
        outlier,
    })
}

/// An integer setting within `range`, or `default` when absent.
fn int_in(
    v: Option<i64>,
    default: u32,
    range: std::ops::RangeInclusive<i64>,
    key: &str,
    cx: &Ctx,
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n as u32),
        Some(n) => Err(cx.err(
            key,
            format!("{n} is out of range {}..={}", range.start(), range.end()),
        )),
    }
}

/// A percentage setting in `min..=100`, as a fraction; `default` is a fraction already.
fn percent(
    v: Option<f64>,
    default: f64,
    min: f64,
    key: &str,
    cx: &Ctx,
) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(p) if (min..=100.0).contains(&p) => Ok(p / 100.0),
        Some(p) => Err(cx.err(key, format!("{p} is not a percentage in {min}..=100"))),
    }
}

fn balance_options(
    p: &RawPool,
    endpoints: usize,
    key: &str,
    cx: &Ctx,
) -> Result<crate::balance::Options, ConfigError> {
    use crate::balance::{Algorithm, Options};
    let d = Options::default();
    let algorithm = match p.algorithm.as_deref() {
        None => d.algorithm,
        Some(name) => Algorithm::parse(name).ok_or_else(|| {
            let all: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
            cx.err(
                format!("{key}.algorithm"),
                format!("\"{name}\" is not one of {}", all.join(", ")),
            )
        })?,
    };
    let (points, bounded_load) = match &p.ring_hash {
        None => (d.ring_points_per_weight, None),
        Some(r) => {
            let points = int_in(
                r.points_per_weight,
                d.ring_points_per_weight,
                1..=10_000,
                &format!("{key}.ring_hash.points_per_weight"),
                cx,
            )?;
            let bounded = match r.bounded_load {
                None => None,
                Some(c) if c > 1.0 && c.is_finite() => Some(c),
                Some(c) => {
                    return Err(cx.err(
                        format!("{key}.ring_hash.bounded_load"),
                        format!("{c} must be greater than 1 (1.25 allows 25% above the mean)"),
                    ));
                }
            };
            (points, bounded)
        }
    };
    let table_size = match p.maglev.as_ref().and_then(|m| m.table_size) {
        None => d.maglev_table_size,
        Some(m) => {
            let k = format!("{key}.maglev.table_size");
            if !(1..=(1 << 24)).contains(&m) || !is_prime(m as u64) {
                return Err(cx.err(k, format!("{m} is not a prime up to 16777216")));
            }
            if (m as usize) < 100 * endpoints {
                return Err(cx.err(
                    k,
                    format!("{m} is too small for {endpoints} endpoints (at least 100 slots each)"),
                ));
            }
            m as u32
        }
    };
    if let Some(s) = p.slow_start {
        if s.is_zero() {
            return Err(cx.err(format!("{key}.slow_start"), "must be greater than zero"));
        }
    }
    Ok(Options {
        algorithm,
        panic_threshold: percent(
            p.panic_threshold,
            d.panic_threshold,
            0.0,
            &format!("{key}.panic_threshold"),
            cx,
        )?,
        slow_start: p.slow_start,
        ring_points_per_weight: points,
        bounded_load,
        maglev_table_size: table_size,
        max_in_flight_per_endpoint: int_in(
            p.max_in_flight_per_endpoint,
            0,
            0..=1_000_000,
            &format!("{key}.max_in_flight_per_endpoint"),
            cx,
        )?,
        max_in_flight: int_in(
            p.max_in_flight,
            0,
            0..=10_000_000,
            &format!("{key}.max_in_flight"),
            cx,
        )?,
    })
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn retry(p: &RawPool, key: &str, cx: &Ctx) -> Result<RetryConfig, ConfigError> {
    let d = RetryConfig::default();
    let (ratio, min) = match &p.retry_budget {
        None => (d.budget_ratio, d.budget_min),
        Some(b) => (
            percent(
                b.percent,
                d.budget_ratio,
                0.0,
                &format!("{key}.retry_budget.percent"),
                cx,
            )?,
            int_in(
                b.min_concurrent,
                d.budget_min,
                0..=100_000,
                &format!("{key}.retry_budget.min_concurrent"),
                cx,
            )?,
        ),
    };
    let buffer = match p.retry_buffer {
        None => d.buffer,
        Some(b) if b.as_u64() <= 16 << 20 => b.as_u64(),
        Some(b) => {
            return Err(cx.err(
                format!("{key}.retry_buffer"),
                format!("{b} is more than 16 MiB"),
            ));
        }
    };
    Ok(RetryConfig {
        retries: int_in(p.retries, d.retries, 0..=10, &format!("{key}.retries"), cx)?,
        budget_ratio: ratio,
        budget_min: min,
        buffer,
    })
}

fn health_check(h: RawHealthCheck, key: &str, cx: &Ctx) -> Result<HealthCheckConfig, ConfigError> {
    let interval = positive(
        h.interval,
        Duration::from_secs(5),
        &format!("{key}.interval"),
        cx,
    )?;
    let timeout = positive(
        h.timeout,
        Duration::from_secs(2),
        &format!("{key}.timeout"),
        cx,
    )?;
    let start_unhealthy = match h.initial.as_deref() {
        None | Some("healthy") => false,
        Some("unhealthy") => true,
        Some(other) => {
            return Err(cx.err(
                format!("{key}.initial"),
                format!("\"{other}\" is not one of \"healthy\", \"unhealthy\""),
            ));
        }
    };
    let http_only = [
        ("method", h.method.is_some()),
        ("path", h.path.is_some()),
        ("host", h.host.is_some()),
        ("expect_status", h.expect_status.is_some()),
        ("expect_body", h.expect_body.is_some()),
    ];
    let kind = match h.kind.as_deref() {
        None | Some("http") => HealthCheckKind::Http(http_check(&h, key, cx)?),
        Some("tcp") => {
            if let Some((name, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(cx.err(
                    format!("{key}.{name}"),
                    "only applies to type = \"http\" checks",
                ));
            }
            HealthCheckKind::Tcp
        }
        Some(other) => {
            return Err(cx.err(
                format!("{key}.type"),
                format!("\"{other}\" is not one of \"http\", \"tcp\""),
            ));
        }
    };
    Ok(HealthCheckConfig {
        kind,
        interval,
        jitter: h.jitter.unwrap_or(interval / 10).min(interval),
        timeout,
        rise: int_in(h.rise, 2, 1..=100, &format!("{key}.rise"), cx)?,
        fall: int_in(h.fall, 3, 1..=100, &format!("{key}.fall"), cx)?,
        start_unhealthy,
    })
}

fn http_check(h: &RawHealthCheck, key: &str, cx: &Ctx) -> Result<HttpCheck, ConfigError> {
    let method = match h.method.as_deref() {
        None => http::Method::GET,
        Some(m) => match http::Method::from_bytes(m.as_bytes()) {
            Ok(m)
                if [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS].contains(&m) =>
            {
                m
            }
            _ => {
                return Err(cx.err(
                    format!("{key}.method"),
                    format!("\"{m}\" is not one of \"GET\", \"HEAD\", \"OPTIONS\""),
                ));
            }
        },
    };
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(cx.err(
            format!("{key}.path"),
            format!("\"{path}\" is not an origin-form path such as \"/healthz\""),
        ));
    }
    if let Some(host) = &h.host {
        if http::uri::Authority::try_from(host.as_str()).is_err() {
            return Err(cx.err(format!("{key}.host"), format!("\"{host}\" is not a host")));
        }
    }
    let expect_status = match &h.expect_status {
        None => vec![(200, 399)],
        Some(list) if list.is_empty() => {
            return Err(cx.err(format!("{key}.expect_status"), "must not be empty"));
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                status_range(v).ok_or_else(|| {
                    cx.err(
                        format!("{key}.expect_status[{i}]"),
                        format!(
                            "{v} is not a status (200) or range (\"200-299\") within 100..=599"
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(HttpCheck {
        method,
        path,
        host: h.host.clone(),
        expect_status,
        expect_body: h.expect_body.clone(),
    })
}

fn status_range(v: &toml::Value) -> Option<(u16, u16)> {
    let (lo, hi) = match v {
        toml::Value::Integer(n) => (*n, *n),
        toml::Value::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            (a.trim().parse().ok()?, b.trim().parse().ok()?)
        }
        _ => return None,
    };
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo as u16, hi as u16))
}

fn outlier(o: RawOutlier, key: &str, cx: &Ctx) -> Result<Option<OutlierConfig>, ConfigError> {
    if o.enabled == Some(false) {
        return Ok(None);
    }
    let d = OutlierConfig::default();
    let base = positive(
        o.base_ejection_time,
        d.base_ejection_time,
        &format!("{key}.base_ejection_time"),
        cx,
    )?;
    let max = positive(
        o.max_ejection_time,
        d.max_ejection_time.max(base),
        &format!("{key}.max_ejection_time"),
        cx,
    )?;
    if max < base {
        return Err(cx.err(
            format!("{key}.max_ejection_time"),
            format!("{max:?} is shorter than base_ejection_time ({base:?})"),
        ));
    }
    let count = |v, default, name: &str| int_in(v, default, 0..=1000, &format!("{key}.{name}"), cx);
    Ok(Some(OutlierConfig {
        consecutive_5xx: count(o.consecutive_5xx, d.consecutive_5xx, "consecutive_5xx")?,
        consecutive_gateway_errors: count(
            o.consecutive_gateway_errors,
            d.consecutive_gateway_errors,
            "consecutive_gateway_errors",
        )?,
        consecutive_connect_failures: count(
            o.consecutive_connect_failures,
            d.consecutive_connect_failures,
            "consecutive_connect_failures",
        )?,
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_ratio: percent(
            o.max_ejection_percent,
            d.max_ejection_ratio,
            0.0,
            &format!("{key}.max_ejection_percent"),
            cx,
        )?,
    }))
}

fn admin(a: RawAdmin, cx: &Ctx) -> Result<AdminConfig, ConfigError> {
    let address = match a.address {
        Some(s) => socket_addr(&s, "admin.address", cx)?,
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
    };
    if let Some(t) = &a.token {
        if t.len() < 16 {
            return Err(cx.err("admin.token", "must be at least 16 characters"));
        }
    }
    if !address.ip().is_loopback() && !a.allow_non_loopback.unwrap_or(false) {
        return Err(cx.err(
            "admin.address",
            format!("{address} is not loopback; set admin.allow_non_loopback = true (and a token) to expose it"),
        ));
    }
    if !address.ip().is_loopback() && a.token.is_none() {
        return Err(cx.err(
            "admin.token",
            "required when the admin listener is not on loopback",
        ));
    }
    Ok(AdminConfig {
        address,
        token: a.token,
    })
}

fn socket_addr(s: &str, key: &str, cx: &Ctx) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| cx.err(key, format!("\"{s}\" is not an IP:port address")))
}

fn positive(
    v: Option<Duration>,
    default: Duration,
    key: &str,
    cx: &Ctx,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(cx.err(key, "must be greater than zero")),
        Some(d) => Ok(d),
    }
}

/// Splits `host:port` (IPv6 in brackets). Returns why not, for the error message.
pub(crate) fn host_port(s: &str) -> Result<(&str, u16), String> {
    let bad = || format!("\"{s}\" is not host:port");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok((host, port))
}
