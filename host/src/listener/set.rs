//! The configured listeners of a running proxy: binding them at start, and applying a
//! reloaded `[[listener]]` list without touching the listeners it keeps.
//!
//! A reload is prepared first (new sockets bound, new TLS settings loaded) and applied only
//! when every step succeeded, so a bad list changes nothing. A listener whose name and address
//! stay keeps its sockets: nothing queued in their accept backlogs is lost, and a TLS change
//! applies to its next handshakes. A removed or moved listener stops accepting; the
//! connections it accepted go on until they close.

use super::tls::{self, CertResolver};
use super::workers::{Bound, Workers};
use super::{Listener, ListenerState, Shared};
use crate::config::{ListenerConfig, ListenerTls};
use crate::metrics::ListenerStats;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Why a listener list cannot be applied (at start or on reload).
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("cannot listen on {address} (listener \"{name}\"): {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The listeners in config order.
pub struct ListenerSet {
    /// Worker threads in per-core mode (one socket each per listener); 0 for the shared runtime.
    workers: usize,
    entries: Vec<Active>,
}

struct Active {
    config: ListenerConfig,
    /// Where it listens (the config may say port 0).
    address: SocketAddr,
    state: Arc<ListenerState>,
    resolver: Option<Arc<CertResolver>>,
}

/// A listener list ready to replace the current one: see [`ListenerSet::prepare`].
pub struct Plan {
    entries: Vec<Planned>,
}

impl Plan {
    /// Every planned listener's counters, in config order.
    pub fn stats(&self) -> Vec<Arc<ListenerStats>> {
        self.entries
            .iter()
            .map(|p| match p {
                Planned::Kept { active, .. } | Planned::New { active, .. } => {
                    active.state.stats.clone()
                }
            })
            .collect()
    }
}

enum Planned {
    /// A listener that stays, with new TLS settings when they changed.
    Kept { active: Active, tls: Option<Tls> },
    /// A new (or moved) listener: bound, not yet accepting.
    New { active: Active, sockets: Sockets },
}

struct Tls {
    resolver: Option<Arc<CertResolver>>,
    acceptor: Option<TlsAcceptor>,
}

enum Sockets {
    /// The shared runtime's one listening socket.
    Shared(TcpListener),
    /// Per-core mode: one `SO_REUSEPORT` socket per worker, listening, not yet registered
    /// with a reactor.
    PerWorker(Vec<std::net::TcpListener>),
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub tls_changed: Vec<String>,
}

impl ListenerSet {
    pub fn new(workers: usize) -> ListenerSet {
        ListenerSet {
            workers,
            entries: Vec::new(),
        }
    }

    /// Name and bound address of every listener, in config order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.entries
            .iter()
            .map(|a| (a.config.name.clone(), a.address))
            .collect()
    }

    /// Every listener's counters, in config order.
    pub fn stats(&self) -> Vec<Arc<ListenerStats>> {
        self.entries.iter().map(|a| a.state.stats.clone()).collect()
    }

    /// The certificate resolvers of the TLS listeners.
    pub fn resolvers(&self) -> Vec<Arc<CertResolver>> {
        self.entries
            .iter()
            .filter_map(|a| a.resolver.clone())
            .collect()
    }

    /// Binds what `configs` adds or moves and loads the TLS settings that changed; changes
    /// nothing that runs. A listener is kept when one of the same name listens at the same
    /// configured address; its counters carry over when only its address changed.
    pub fn prepare(&self, configs: &[ListenerConfig]) -> Result<Plan, SetError> {
        let mut entries = Vec::with_capacity(configs.len());
        for c in configs {
            let old = self.entries.iter().find(|a| a.config.name == c.name);
            if let Some(old) = old.filter(|a| a.config.address == c.address) {
                let tls = match old.config.tls == c.tls {
                    true => None,
                    false => Some(load_tls(c.tls.as_ref())?),
                };
                let active = Active {
                    config: c.clone(),
                    address: old.address,
                    state: old.state.clone(),
                    resolver: old.resolver.clone(),
                };
                entries.push(Planned::Kept { active, tls });
                continue;
            }
            let Tls { resolver, acceptor } = load_tls(c.tls.as_ref())?;
            let stats = match old {
                Some(old) => old.state.stats.clone(),
                None => Arc::new(ListenerStats::new(c.name.as_str().into(), self.workers)),
            };
            let (address, sockets) = bind(c, self.workers)?;
            let active = Active {
                config: c.clone(),
                address,
                state: ListenerState::new(stats, acceptor),
                resolver,
            };
            entries.push(Planned::New { active, sockets });
        }
        Ok(Plan { entries })
    }

    /// Replaces the listeners with `plan`'s: new ones start accepting (on `workers` in
    /// per-core mode), changed TLS settings apply to the next handshakes, and the listeners
    /// the plan does not keep stop accepting.
    pub fn apply(
        &mut self,
        plan: Plan,
        shared: &Arc<Shared>,
        workers: Option<&Workers>,
    ) -> Changes {
        let mut changes = Changes::default();
        let mut entries = Vec::with_capacity(plan.entries.len());
        for p in plan.entries {
            match p {
                Planned::Kept { mut active, tls } => {
                    if let Some(tls) = tls {
                        active.state.set_tls(tls.acceptor);
                        active.resolver = tls.resolver;
                        changes.tls_changed.push(active.config.name.clone());
                    }
                    entries.push(active);
                }
                Planned::New { active, sockets } => {
                    start(&active.state, sockets, shared, workers);
                    changes.added.push(active.config.name.clone());
                    entries.push(active);
                }
            }
        }
        for old in &self.entries {
            if !entries.iter().any(|a| Arc::ptr_eq(&a.state, &old.state)) {
                old.state.stop();
                changes.removed.push(old.config.name.clone());
            }
        }
        self.entries = entries;
        changes
    }
}

/// The resolver and acceptor for a listener's `tls` table (`None`: cleartext).
fn load_tls(config: Option<&ListenerTls>) -> Result<Tls, SetError> {
    let Some(t) = config else {
        return Ok(Tls {
            resolver: None,
            acceptor: None,
        });
    };
    let resolver = Arc::new(CertResolver::new(t.clone())?);
    let acceptor = TlsAcceptor::from(tls::server_config(resolver.clone())?);
    Ok(Tls {
        resolver: Some(resolver),
        acceptor: Some(acceptor),
    })
}

/// Binds and listens on a listener's address: one socket, or one per worker. The sockets
/// listen from here on (the kernel queues connections until a loop accepts them), so a
/// listener is reachable as soon as a start or reload returns.
fn bind(c: &ListenerConfig, workers: usize) -> Result<(SocketAddr, Sockets), SetError> {
    let bind_err = |source| SetError::Bind {
        name: c.name.clone(),
        address: c.address,
        source,
    };
    if workers == 0 {
        let tcp = super::bind(c.address).map_err(bind_err)?;
        return Ok((tcp.local_addr().map_err(bind_err)?, Sockets::Shared(tcp)));
    }
    // SO_REUSEPORT would let us share the port with another process of this user (a second
    // sluice started by mistake) and split its traffic silently: a plain bind first fails
    // with "address in use" when anything listens there.
    if c.address.port() != 0 {
        drop(super::bind_socket(c.address, false).map_err(bind_err)?);
    }
    // The first socket settles the port (the config may say 0); the others share it.
    let mut address = c.address;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = super::bind_socket(address, true).map_err(bind_err)?;
        address = socket.local_addr().map_err(bind_err)?;
        // Listen here, then hand the socket over unregistered: the worker registers it
        // with its own reactor.
        let tcp = socket.listen(super::BACKLOG).map_err(bind_err)?;
        sockets.push(tcp.into_std().map_err(bind_err)?);
    }
    Ok((address, Sockets::PerWorker(sockets)))
}

/// Starts the accept loops of a new listener.
fn start(
    state: &Arc<ListenerState>,
    sockets: Sockets,
    shared: &Arc<Shared>,
    workers: Option<&Workers>,
) {
    match (sockets, workers) {
        (Sockets::Shared(tcp), _) => {
            tokio::spawn(Listener::new(state.clone(), tcp).run(shared.clone()));
        }
        (Sockets::PerWorker(sockets), Some(w)) => w.add(
            sockets
                .into_iter()
                .map(|listener| Bound {
                    state: state.clone(),
                    listener,
                })
                .collect(),
        ),
        (Sockets::PerWorker(_), None) => {
            unreachable!("per-core listeners are bound only when workers run")
        }
    }
}
