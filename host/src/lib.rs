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
pub mod fuzz;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
mod signals;
pub mod upstream;
pub mod worker;

pub use signals::StopSignals;

use config::Config;
use listener::reload::CertReloader;
use listener::tls::{CertResolver, TlsError};
use listener::{Listener, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
    Tls(#[from] TlsError),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Pool(#[from] upstream::PoolError),
    #[error("{0}")]
    Policy(#[from] policy::LoadError),
    #[error("log.access_log_path {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
}

/// A started proxy. Dropping it stops accepting (and in per-core mode ends the workers with
/// their connections); [`Running::shutdown`] lets in-flight requests finish first.
pub struct Running {
    /// Bound address of each listener, in config order, with its name.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    drain_tx: Option<mpsc::Sender<()>>,
    drain_rx: mpsc::Receiver<()>,
    grace: Duration,
    certificates: CertReloader,
    policy: Arc<policy::PolicyRuntime>,
    pools: Arc<upstream::PoolTable>,
    /// Active checks and ejection expiry of the current pool generation.
    health: std::sync::Mutex<health::Monitor>,
    cache: Option<Arc<cache::Cache>>,
    /// The module file being watched and its watcher (replaced when a reload changes the
    /// file or turns watching on or off).
    policy_watcher: std::sync::Mutex<PolicyWatcher>,
    accepted: Arc<listener::Accepted>,
    /// Reloads of the config and pools (certificates and the policy count their own).
    reloads: Arc<metrics::Reloads>,
    /// Per-core mode's worker threads (declared last: they stop after the rest is dropped).
    _workers: Option<listener::workers::Workers>,
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
    let proxy = Arc::new(proxy::Proxy::new(
        &config,
        pools.clone(),
        policy.clone(),
        cache.clone(),
        access_log.clone(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = mpsc::channel(1);

    // Per-core mode: every listener gets one SO_REUSEPORT socket per worker.
    let workers = match config.runtime.mode {
        config::RuntimeMode::PerCore => config.runtime.workers,
        config::RuntimeMode::Shared => 0,
    };
    let mut resolvers = Vec::new();
    let mut bound = Vec::new();
    let mut per_worker: Vec<Vec<listener::workers::Bound>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    let mut listener_stats = Vec::new();
    for l in &config.listeners {
        let acceptor = match &l.tls {
            None => None,
            Some(t) => {
                let resolver = Arc::new(CertResolver::new(t.clone())?);
                resolvers.push(resolver.clone());
                Some(tokio_rustls::TlsAcceptor::from(
                    listener::tls::server_config(resolver)?,
                ))
            }
        };
        let stats = Arc::new(metrics::ListenerStats::new(l.name.as_str().into(), workers));
        listener_stats.push(stats.clone());
        let bind_err = |source| StartError::Bind {
            what: format!("listener \"{}\"", l.name),
            address: l.address,
            source,
        };
        if workers == 0 {
            let tcp = listener::bind(l.address).map_err(bind_err)?;
            addrs.push((l.name.clone(), tcp.local_addr().map_err(bind_err)?));
            bound.push(Listener::new(stats, tcp, acceptor));
            continue;
        }
        // SO_REUSEPORT would let us share the port with another process of this user (a
        // second sluice started by mistake) and split its traffic silently: a plain bind
        // first fails with "address in use" when anything listens there.
        if l.address.port() != 0 {
            drop(listener::bind_socket(l.address, false).map_err(bind_err)?);
        }
        // The first socket settles the port (the config may say 0); the others share it.
        let mut address = l.address;
        for sockets in &mut per_worker {
            let socket = listener::bind_socket(address, true).map_err(bind_err)?;
            address = socket.local_addr().map_err(bind_err)?;
            sockets.push(listener::workers::Bound {
                stats: stats.clone(),
                socket,
                tls: acceptor.clone(),
            });
        }
        addrs.push((l.name.clone(), address));
    }

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
            let state = admin::AdminState::new(
                policy.clone(),
                pools.clone(),
                cache.clone(),
                listener_stats.clone(),
                reloads.clone(),
                access_log.clone(),
            );
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
        proxy,
        config.timeouts,
        config.limits,
        shutdown_rx,
        drain_tx.clone(),
        workers,
    ));
    for l in bound {
        tokio::spawn(l.run(shared.clone()));
    }
    let threads = workers;
    let workers = match threads {
        0 => None,
        n => Some(
            listener::workers::start(per_worker, shared.clone())
                .await
                .map_err(|source| StartError::Bind {
                    what: format!("{n} per-core workers"),
                    address: addrs.first().map_or(([0, 0, 0, 0], 0).into(), |a| a.1),
                    source,
                })?,
        ),
    };
    for (name, address) in &addrs {
        tracing::info!(listener = %name, %address, workers = threads, "listening");
    }

    Ok(Running {
        listeners: addrs,
        admin: admin_addr,
        shutdown: shutdown_tx,
        drain_tx: Some(drain_tx),
        drain_rx,
        grace: config.timeouts.shutdown_grace,
        certificates: CertReloader::new(resolvers, reloads.clone()),
        policy_watcher: std::sync::Mutex::new(PolicyWatcher::of(&policy)),
        policy,
        pools,
        health,
        cache,
        accepted: shared.accepted.clone(),
        reloads,
        _workers: workers,
    })
}

impl Running {
    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Re-reads every listener certificate. All-or-nothing per listener; established
    /// connections are untouched.
    pub fn reload_certificates(&self) -> Result<(), TlsError> {
        self.certificates.reload()
    }

    /// Counts a reload of the config file: read and valid (`ok`), or not.
    pub fn count_config_reload(&self, ok: bool) {
        self.reloads.count(metrics::Reload::Config, ok);
    }

    /// Counts successful certificate reloads (SIGHUP, file change or API); tests wait on it.
    pub fn certificate_reloads(&self) -> watch::Receiver<u64> {
        self.certificates.subscribe()
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
        let _ = self.shutdown.send(true);
        self.drain_tx = None;
        match tokio::time::timeout(self.grace, self.drain_rx.recv()).await {
            Ok(_) => ShutdownOutcome::Drained,
            Err(_) => ShutdownOutcome::TimedOut,
        }
    }
}
