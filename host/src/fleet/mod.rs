//! The fleet: sluice nodes sharing one Redis-compatible server (Redis or Valkey; standalone,
//! Sentinel or Cluster) named by `[cache.shared]`. It carries
//! - a second cache tier behind each node's memory cache ([`tier`]): a local miss looks there
//!   before the origin, a stored response is written there too, and at most one node at a
//!   time fetches a key from the origin (a lock with a lease);
//! - purges to every node ([`events`]: a Redis stream, read from the last event seen, so a
//!   short disconnect loses nothing);
//! - policy revisions published to the fleet, canary first, rolled back automatically
//!   ([`rollout`]), and the node registry behind `GET /fleet`.
//!
//! The fleet runs on an existing engine, not a protocol of ours. The client is `fred`
//! (pooled, pipelined, reconnecting by itself). Redis being down or slow never fails a request:
//! every operation has a deadline (`timeout`), a [`Breaker`] stops trying for `breaker_open`
//! after `breaker_failures` failures in a row, and while no connection is up each operation
//! is skipped at once; the memory cache and the origins go on serving.
//!
//! Keys (all under `{namespace}:v{VERSION}:`, so a format change starts a new key space):
//! - `o:{H}` a key's stored variants ([`crate::cache::wire`]), `o:{H}:c:ID:N` chunks of a
//!   large body, `o:{H}:lock` the fetch lock (`H` = 128 bits of SHA-256 of the cache key,
//!   in braces: a Redis Cluster hash tag, so one key's values live on one shard);
//! - `tag:T` (sorted set: head keys by expiry), `urls` (sorted set of `URL \n H` by expiry),
//!   for tag, URL and prefix purges;
//! - `events` (stream), `nodes` (hash: node → JSON), `policy:SHA` (bytes), `rollout` (JSON).

mod events;
pub mod rollout;
mod tier;

use crate::cache::{Cache, wire};
use crate::config::SharedConfig;
use crate::metrics::ListenerList;
use crate::policy::PolicyRuntime;
use bytes::Bytes;
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use tier::Shared;

/// Stored responses being written to the shared tier at once; more are not written (and
/// counted): a slow server must not make the node hold every response body in memory.
const MAX_WRITES: usize = 256;

/// Counters for `GET /stats` (`"shared"`) and `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stores: AtomicU64,
    /// Not written: the write queue was full, or the object would expire within a second.
    pub store_skipped: AtomicU64,
    /// Operations not tried: breaker open or no connection.
    pub skipped: AtomicU64,
    /// Operations that failed or timed out.
    pub errors: AtomicU64,
    /// Values that did not decode (or missed chunks): counted as misses and deleted.
    pub corrupt: AtomicU64,
    pub breaker_opened: AtomicU64,
    pub locks_taken: AtomicU64,
    /// Misses that found another node fetching the key and waited for it.
    pub lock_waits: AtomicU64,
    pub lock_wait_hits: AtomicU64,
    pub lock_wait_timeouts: AtomicU64,
    pub purges_sent: AtomicU64,
    pub purges_failed: AtomicU64,
    pub events_received: AtomicU64,
    /// Reconnections after which events had been trimmed from the stream unread: the memory
    /// cache was emptied, since a purge may have been among them.
    pub events_lost: AtomicU64,
}

impl Stats {
    pub fn json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "hits": g(&self.hits),
            "misses": g(&self.misses),
            "stores": g(&self.stores),
            "store_skipped": g(&self.store_skipped),
            "skipped": g(&self.skipped),
            "errors": g(&self.errors),
            "corrupt": g(&self.corrupt),
            "breaker_opened": g(&self.breaker_opened),
            "locks_taken": g(&self.locks_taken),
            "lock_waits": g(&self.lock_waits),
            "lock_wait_hits": g(&self.lock_wait_hits),
            "lock_wait_timeouts": g(&self.lock_wait_timeouts),
            "purges_sent": g(&self.purges_sent),
            "purges_failed": g(&self.purges_failed),
            "events_received": g(&self.events_received),
            "events_lost": g(&self.events_lost),
        })
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A circuit breaker over the server: `threshold` failures in a row open it for `open_for`;
/// then one operation at a time probes (half-open), and a success closes it.
struct Breaker {
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which it is open; 0 = closed.
    open_until: AtomicU64,
    threshold: u32,
    open_for: u64,
    epoch: Instant,
}

impl Breaker {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        // Past the window: the one caller that moves it on probes.
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.open_for,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("shared cache reachable again; circuit breaker closed");
        }
    }

    /// Returns whether this failure opened it.
    fn failed(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.threshold {
            return false;
        }
        let until = self.now() + self.open_for;
        self.open_until.swap(until, Ordering::AcqRel) == 0
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

/// Key names (see the module comment).
struct Keys {
    prefix: String,
}

impl Keys {
    fn hash(key: &[u8]) -> String {
        use sha2::Digest;
        let d = sha2::Sha256::digest(key);
        d[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
    fn head(&self, h: &str) -> String {
        format!("{}:o:{{{h}}}", self.prefix)
    }
    fn chunk(&self, h: &str, id: u64, i: u32) -> String {
        format!("{}:o:{{{h}}}:c:{id:016x}:{i}", self.prefix)
    }
    fn lock(&self, h: &str) -> String {
        format!("{}:o:{{{h}}}:lock", self.prefix)
    }
    fn tag(&self, t: &str) -> String {
        format!("{}:tag:{t}", self.prefix)
    }
    fn urls(&self) -> String {
        format!("{}:urls", self.prefix)
    }
    fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn policy(&self, sha: &str) -> String {
        format!("{}:policy:{sha}", self.prefix)
    }
    fn rollout(&self) -> String {
        format!("{}:rollout", self.prefix)
    }
    /// Every object key of this namespace and version (for a purge of everything).
    fn objects_pattern(&self) -> String {
        format!("{}:o:*", self.prefix)
    }
}

/// This node's part in the fleet. Started by [`Fleet::start`]; [`Fleet::close`] ends its
/// tasks and takes it out of the registry.
pub struct Fleet {
    cfg: SharedConfig,
    keys: Keys,
    pool: Pool,
    /// Its own connection for the blocking read of the event stream.
    events: Client,
    breaker: Breaker,
    pub stats: Stats,
    cache: Arc<Cache>,
    policy: Arc<PolicyRuntime>,
    listeners: Arc<ListenerList>,
    /// The main runtime: writes and purges run there, whichever worker's request started them.
    handle: tokio::runtime::Handle,
    /// Fetch locks this node holds, by cache key: the token to release each with.
    held: Mutex<HashMap<Bytes, String>>,
    writes: Arc<tokio::sync::Semaphore>,
    /// This node's view of the last rollout it took part in.
    rollout: Mutex<Option<rollout::NodeRollout>>,
    started_ms: u64,
    stop: watch::Sender<bool>,
    /// Held while writing the registry entry; `true` once the node has left it, so no
    /// heartbeat in flight puts it back.
    left: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("node", &self.cfg.node)
            .finish()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fleet {
    /// Connects (in the background: a server that is down now is retried until it is up),
    /// puts the shared tier behind `cache`, and starts following the fleet's events and
    /// writing this node's registry entry. Must be called inside the main tokio runtime.
    pub fn start(
        cfg: SharedConfig,
        cache: Arc<Cache>,
        policy: Arc<PolicyRuntime>,
        listeners: Arc<ListenerList>,
    ) -> Result<Arc<Fleet>, fred::error::Error> {
        let redis = fred::types::config::Config::from_url(&cfg.url)?;
        let builder = |timeout: Duration| {
            let mut b = Builder::from_config(redis.clone());
            b.with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1).max(cfg.timeout);
                c.internal_command_timeout = Duration::from_secs(2);
                // Commands queued while reconnecting are bounded (and time out at their
                // deadline anyway): no unbounded buffer while the server is away.
                c.max_command_buffer_len = 10_000;
                c.max_command_attempts = 1;
                c.tcp = fred::types::config::TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            .with_performance_config(|p| p.default_command_timeout = timeout)
            // Forever, 50 ms doubling to 1 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
            b
        };
        let pool = builder(cfg.timeout * 4).build_pool(cfg.connections)?;
        let events = builder(events::BLOCK + Duration::from_secs(2)).build()?;
        // The connection tasks run detached; they reconnect by themselves.
        drop(pool.connect());
        drop(events.connect());
        let (stop, _) = watch::channel(false);
        let fleet = Arc::new(Fleet {
            keys: Keys {
                prefix: format!("{}:v{}", cfg.namespace, wire::VERSION),
            },
            breaker: Breaker {
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                threshold: cfg.breaker_failures,
                open_for: cfg.breaker_open.as_millis() as u64,
                epoch: Instant::now(),
            },
            cfg,
            pool,
            events,
            stats: Stats::default(),
            cache: cache.clone(),
            policy,
            listeners,
            handle: tokio::runtime::Handle::current(),
            held: Mutex::new(HashMap::new()),
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_WRITES)),
            rollout: Mutex::new(None),
            started_ms: unix_ms(),
            stop,
            left: tokio::sync::Mutex::new(false),
        });
        cache.set_tier(Arc::new(tier::Hook(Arc::downgrade(&fleet))));
        tokio::spawn(events::follow(fleet.clone(), fleet.stop.subscribe()));
        tokio::spawn(rollout::heartbeat(fleet.clone(), fleet.stop.subscribe()));
        tracing::info!(node = %fleet.cfg.node, namespace = %fleet.cfg.namespace, "fleet: shared cache tier on");
        Ok(fleet)
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// Ends the event reader, the heartbeat and a canary watch.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// [`Fleet::stop`], and takes this node out of the registry.
    pub async fn close(&self) {
        self.stop();
        let mut left = self.left.lock().await;
        *left = true;
        if let Some(c) = self.client() {
            let _: Option<i64> = self
                .run(c.hdel(self.keys.nodes(), self.cfg.node.as_str()))
                .await;
        }
        let _ = self.pool.quit().await;
        let _ = self.events.quit().await;
    }

    /// A connected client, or `None` (counted) when the breaker is open or nothing is
    /// connected: the caller goes on without the shared tier at once.
    fn client(&self) -> Option<&Client> {
        if !self.breaker.allow() {
            bump(&self.stats.skipped);
            return None;
        }
        let c = self.pool.next_connected();
        if !c.is_connected() {
            bump(&self.stats.skipped);
            return None;
        }
        Some(c)
    }

    /// Runs one operation within the deadline, feeding the breaker; `None` on failure.
    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Option<T> {
        self.run_within(self.cfg.timeout, op).await
    }

    async fn run_within<T>(
        &self,
        deadline: Duration,
        op: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Option<T> {
        match tokio::time::timeout(deadline, op).await {
            Ok(Ok(v)) => {
                self.breaker.succeeded();
                Some(v)
            }
            outcome => {
                bump(&self.stats.errors);
                if self.breaker.failed() {
                    bump(&self.stats.breaker_opened);
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {:?}", deadline),
                    };
                    tracing::warn!(error = %why, open_for = ?self.cfg.breaker_open, "shared cache failing; circuit breaker open, serving without it");
                }
                None
            }
        }
    }

    /// `"closed"`, `"open"` or `"disconnected"`.
    pub fn state(&self) -> &'static str {
        if !self.pool.next_connected().is_connected() {
            "disconnected"
        } else if self.breaker.is_open() {
            "open"
        } else {
            "closed"
        }
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = self.stats.json();
        v["state"] = self.state().into();
        v["node"] = self.cfg.node.as_str().into();
        v
    }
}
