//! sluice: an edge reverse proxy whose routing is decided by WebAssembly policies.
//!
//! The library starts a proxy in-process so that the binary, `sluice demo` and the
//! integration tests all run the same code: [`start`] binds every socket and returns a
//! [`Running`] handle with the bound addresses, a certificate-reload hook and graceful shutdown.

pub mod activity;
pub mod admin;
pub mod alloc_count;
pub mod balance;
pub mod build;
pub mod cache;
pub mod config;
pub mod demo;
pub mod filewatch;
pub mod fleet;
pub mod fuzz;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod policy;
pub mod proxy;
mod signals;
pub mod upstream;
pub mod worker;

pub use signals::StopSignals;

use config::Config;
use listener::Shared;
use listener::reload::CertReloader;
use listener::set::ListenerSet;
use listener::tls::TlsError;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        what: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Listener(#[from] listener::set::SetError),
    #[error("{0}")]
    Pool(#[from] upstream::PoolError),
    #[error("{0}")]
    Policy(#[from] policy::LoadError),
    #[error("log.access_log_path {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("cache.shared: {0}")]
    Fleet(String),
}

/// A started proxy. Dropping it stops accepting (and in per-core mode ends the workers with
/// their connections); [`Running::shutdown`] lets in-flight requests finish first.
pub struct Running {
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    drain_tx: Option<mpsc::Sender<()>>,
    drain_rx: mpsc::Receiver<()>,
    /// What every connection shares (settings that reloads replace, the connection limit).
    shared: Arc<Shared>,
    /// The config in force, its listeners and their TLS certificates; a reload holds the lock.
    live: std::sync::Mutex<Live>,
    /// The listeners' counters as `/metrics` and the status page see them.
    listener_stats: Arc<metrics::ListenerList>,
    policy: Arc<policy::PolicyRuntime>,
    pools: Arc<upstream::PoolTable>,
    /// Active checks and ejection expiry of the current pool generation.
    health: std::sync::Mutex<health::Monitor>,
    cache: Option<Arc<cache::Cache>>,
    access_log: Option<Arc<logging::AccessLog>>,
    spans: Option<Arc<otlp::Exporter>>,
    /// This node's part in a fleet (`[cache.shared]`); its tasks stop when this drops.
    fleet: Option<FleetGuard>,
    /// The module file being watched and its watcher (replaced when a reload changes the
    /// file or turns watching on or off).
    policy_watcher: std::sync::Mutex<PolicyWatcher>,
    accepted: Arc<listener::Accepted>,
    /// Reloads of the config and pools (certificates and the policy count their own).
    reloads: Arc<metrics::Reloads>,
    /// Config reloads applied so far, for those who wait on one.
    config_reloaded: watch::Sender<u64>,
    /// Per-core mode's worker threads (declared last: they stop after the rest is dropped).
    workers: Option<listener::workers::Workers>,
}

/// Stops the fleet's tasks when the [`Running`] holding it goes.
struct FleetGuard(Arc<fleet::Fleet>);

impl Drop for FleetGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What a config reload replaces, under one lock.
struct Live {
    config: Config,
    listeners: ListenerSet,
    certificates: CertReloader,
}

/// Why a config reload was refused; the config in force keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Listener(#[from] listener::set::SetError),
    #[error("{0}")]
    Pools(#[from] upstream::PoolError),
}

/// What a config reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub listeners: listener::set::Changes,
    /// Sections that changed but take effect only at the next start.
    pub need_restart: Vec<&'static str>,
    /// The policy reload's outcome (it fails on its own: the other changes stay applied and
    /// the active revision keeps serving).
    pub policy: Result<policy::RevisionInfo, policy::LoadError>,
}

/// The policy module file a [`Running`] watches.
struct PolicyWatcher {
    file: Option<std::path::PathBuf>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl PolicyWatcher {
    fn of(policy: &Arc<policy::PolicyRuntime>) -> PolicyWatcher {
        PolicyWatcher {
            file: policy.watched_file(),
            _watcher: policy::watch::watch_module(policy),
        }
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out with connections still open.
    TimedOut,
}

/// Binds every listener and starts serving. Must be called inside a tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let pools = Arc::new(upstream::PoolTable::new(upstream::Pools::new(
        &config, None,
    )?));
    let health = std::sync::Mutex::new(health::Monitor::start(&pools.current()));
    let cache = config.cache.clone().map(|c| Arc::new(cache::Cache::new(c)));
    let policy = {
        let (cfg, upstreams, cache) = (config.policy.clone(), pools.clone(), cache.clone());
        // Compiling may take a while (seconds for a JavaScript component without a cache).
        let built = tokio::task::spawn_blocking(move || {
            policy::PolicyRuntime::with_cache(&cfg, upstreams, cache)
        })
        .await
        .map_err(|e| policy::LoadError(format!("loading the policy: {e}")))?;
        Arc::new(built?)
    };
    let access_log =
        logging::AccessLog::start(&config.log).map_err(|source| StartError::AccessLog {
            path: format!(
                "{:?}",
                config
                    .log
                    .access_log_path
                    .as_deref()
                    .unwrap_or("stderr".as_ref())
            ),
            source,
        })?;
    let spans = config.otlp.as_ref().map(otlp::Exporter::start);
    let mode = match config.runtime.mode {
        config::RuntimeMode::PerCore => config.runtime.workers,
        config::RuntimeMode::Shared => 0,
    };
    let listener_stats_list = Arc::new(metrics::ListenerList::from_pointee(Vec::new()));
    let fleet = match (&config.shared, &cache) {
        (Some(s), Some(c)) => Some(
            fleet::Fleet::start(
                s.clone(),
                c.clone(),
                policy.clone(),
                listener_stats_list.clone(),
            )
            .map_err(|e| StartError::Fleet(e.to_string()))?,
        ),
        _ => None,
    };
    let proxy = Arc::new(proxy::Proxy::new(
        &config,
        pools.clone(),
        policy.clone(),
        cache.clone(),
        fleet.clone(),
        access_log.clone(),
        spans.clone(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = mpsc::channel(1);

    // Per-core mode: every listener gets one SO_REUSEPORT socket per worker.
    let workers = mode;
    let mut listeners = ListenerSet::new(workers);
    let plan = listeners.prepare(&config.listeners)?;
    let listener_stats = listener_stats_list;
    listener_stats.store(Arc::new(plan.stats()));

    let reloads = Arc::new(metrics::Reloads::default());
    let admin_addr = match &config.admin {
        None => None,
        Some(a) => {
            let bind_err = |source| StartError::Bind {
                what: "admin".into(),
                address: a.address,
                source,
            };
            let tcp = listener::bind(a.address).map_err(bind_err)?;
            let local = tcp.local_addr().map_err(bind_err)?;
            let mut state = admin::AdminState::new(
                policy.clone(),
                pools.clone(),
                cache.clone(),
                listener_stats.clone(),
                reloads.clone(),
                access_log.clone(),
            );
            state.spans = spans.clone();
            state.fleet = fleet.clone();
            tokio::spawn(admin::run(
                tcp,
                a.clone(),
                state,
                shutdown_rx.clone(),
                drain_tx.clone(),
            ));
            Some(local)
        }
    };

    let shared = Arc::new(Shared::new(
        listener::Settings::new(proxy, config.timeouts, &config.limits),
        config.limits.max_connections,
        shutdown_rx,
        drain_tx.clone(),
        workers,
    ));
    let threads = match workers {
        0 => None,
        n => Some(
            listener::workers::start(n, shared.clone())
                .await
                .map_err(|source| StartError::Bind {
                    what: format!("{n} per-core workers"),
                    address: config
                        .listeners
                        .first()
                        .map_or(([0, 0, 0, 0], 0).into(), |l| l.address),
                    source,
                })?,
        ),
    };
    listeners.apply(plan, &shared, threads.as_ref());
    for (name, address) in listeners.addresses() {
        tracing::info!(listener = %name, %address, workers, "listening");
    }
    let certificates = CertReloader::new(listeners.resolvers(), reloads.clone());

    Ok(Running {
        admin: admin_addr,
        shutdown: shutdown_tx,
        drain_tx: Some(drain_tx),
        drain_rx,
        accepted: shared.accepted.clone(),
        shared,
        live: std::sync::Mutex::new(Live {
            config,
            listeners,
            certificates,
        }),
        listener_stats,
        policy_watcher: std::sync::Mutex::new(PolicyWatcher::of(&policy)),
        policy,
        pools,
        health,
        cache,
        access_log,
        spans,
        fleet: fleet.map(FleetGuard),
        reloads,
        config_reloaded: watch::Sender::new(0),
        workers: threads,
    })
}

impl Running {
    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Name and bound address of each listener, in config order.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.live().listeners.addresses()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads every listener certificate. All-or-nothing per listener; established
    /// connections are untouched.
    pub fn reload_certificates(&self) -> Result<(), TlsError> {
        self.live().certificates.reload()
    }

    /// Applies a new config without a restart: listeners (added, removed, moved, TLS
    /// settings), pools, `[proxy]`, `[timeouts]`, `[limits]`, the cache's settings and size,
    /// and the policy. All or nothing up to the policy: a listener that cannot bind, a TLS
    /// file that cannot be read or a pool that cannot be built refuses the whole reload, and
    /// the config in force keeps serving. Connections already open keep the settings they
    /// started with; nothing open is closed, except by a smaller `max_connections`, which
    /// waits for connections to end instead. Counted as a config reload either way.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let applied = self.apply(&config);
        self.count_config_reload(applied.is_ok());
        let (listeners, need_restart) = applied?;
        if !need_restart.is_empty() {
            tracing::warn!(
                sections = ?need_restart,
                "changed, and take effect at the next restart"
            );
        }
        tracing::info!(
            added = ?listeners.added,
            removed = ?listeners.removed,
            tls_changed = ?listeners.tls_changed,
            pools = config.pools.len(),
            "config reloaded"
        );
        // Failures are logged by the runtime; the active revision keeps serving.
        let policy = self.reload_policy(Some(config.policy)).await;
        self.config_reloaded.send_modify(|n| *n += 1);
        Ok(Reloaded {
            listeners,
            need_restart,
            policy,
        })
    }

    /// The synchronous part of [`Running::reload`]: everything but the policy.
    fn apply(
        &self,
        config: &Config,
    ) -> Result<(listener::set::Changes, Vec<&'static str>), ReloadError> {
        let mut live = self.live();
        // Bind and load first: nothing runs differently until every step has succeeded.
        let plan = live.listeners.prepare(&config.listeners)?;
        self.reload_pools(config)?;
        let proxy = Arc::new(proxy::Proxy::new(
            config,
            self.pools.clone(),
            self.policy.clone(),
            self.cache.clone(),
            self.fleet.as_ref().map(|f| f.0.clone()),
            self.access_log.clone(),
            self.spans.clone(),
        ));
        self.shared.reconfigure(
            listener::Settings::new(proxy, config.timeouts, &config.limits),
            config.limits.max_connections,
        );
        let changes = live
            .listeners
            .apply(plan, &self.shared, self.workers.as_ref());
        self.listener_stats.store(Arc::new(live.listeners.stats()));
        if changes != listener::set::Changes::default() {
            let resolvers = live.listeners.resolvers();
            live.certificates.replace(resolvers);
        }
        if let (Some(cache), Some(c)) = (&self.cache, &config.cache) {
            cache.reconfigure(c.clone());
        }
        let old = &live.config;
        let mut need_restart = Vec::new();
        if old.cache.is_some() != config.cache.is_some() {
            need_restart.push("[cache] (on or off)");
        }
        if old.admin != config.admin {
            need_restart.push("[admin]");
        }
        if old.log != config.log {
            need_restart.push("[log]");
        }
        if old.runtime != config.runtime {
            need_restart.push("[runtime]");
        }
        if old.otlp != config.otlp {
            need_restart.push("[otlp]");
        }
        if old.shared != config.shared {
            need_restart.push("[cache.shared]");
        }
        live.config = config.clone();
        Ok((changes, need_restart))
    }

    /// Counts a reload of the config file: read and valid (`ok`), or not.
    pub fn count_config_reload(&self, ok: bool) {
        self.reloads.count(metrics::Reload::Config, ok);
    }

    /// Counts config reloads that were applied (SIGHUP, file change or [`Running::reload`]).
    pub fn config_reloads(&self) -> watch::Receiver<u64> {
        self.config_reloaded.subscribe()
    }

    /// Counts successful certificate reloads (SIGHUP, file change or API); tests wait on it.
    pub fn certificate_reloads(&self) -> watch::Receiver<u64> {
        self.live().certificates.subscribe()
    }

    /// The upstream pools: live state, health, reload.
    pub fn pools(&self) -> &Arc<upstream::PoolTable> {
        &self.pools
    }

    /// Replaces the pools with those of `config` (keeping the live state of every endpoint
    /// that stays) and restarts the health checks for the new generation.
    pub fn reload_pools(&self, config: &Config) -> Result<(), upstream::PoolError> {
        let r = self.pools.reload(config);
        self.reloads.count(metrics::Reload::Pools, r.is_ok());
        r?;
        let next = health::Monitor::start(&self.pools.current());
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Connections accepted so far: one figure per worker in per-core mode, one in all for
    /// the shared runtime.
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted.snapshot()
    }

    /// The HTTP cache, when `[cache]` is configured. It lives as long as the process: a
    /// reload does not empty or resize it.
    pub fn cache(&self) -> Option<&Arc<cache::Cache>> {
        self.cache.as_ref()
    }

    /// Reloads the policy (with `config` replacing its settings when given, as on SIGHUP),
    /// then watches the module file the active settings name, if that changed.
    pub async fn reload_policy(
        &self,
        config: Option<config::PolicyConfig>,
    ) -> Result<policy::RevisionInfo, policy::LoadError> {
        let result = self.policy.reload(config).await;
        let mut w = self
            .policy_watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if w.file != self.policy.watched_file() {
            *w = PolicyWatcher::of(&self.policy);
            tracing::info!(file = ?w.file, "watching the policy module");
        }
        result
    }

    /// The policy runtime: reload, upload, rollback, status.
    pub fn policy(&self) -> &Arc<policy::PolicyRuntime> {
        &self.policy
    }

    /// Stops accepting, lets in-flight requests finish, closes idle connections; waits at
    /// most `timeouts.shutdown_grace`.
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        if let Some(f) = &self.fleet {
            f.0.close().await;
        }
        let _ = self.shutdown.send(true);
        self.drain_tx = None;
        let grace = self.live().config.timeouts.shutdown_grace;
        // The accept loops, the connections and `shared` hold drain senders.
        drop(self.shared);
        match tokio::time::timeout(grace, self.drain_rx.recv()).await {
            Ok(_) => ShutdownOutcome::Drained,
            Err(_) => ShutdownOutcome::TimedOut,
        }
    }
}
