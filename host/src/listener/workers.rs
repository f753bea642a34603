//! Per-core mode: one thread per worker, each running a single-threaded tokio runtime with its
//! own accept socket for every listener (`SO_REUSEPORT`: the kernel spreads new connections
//! over the sockets). A connection, its requests, the policy call and the upstream connections
//! it uses are all polled by the one thread that accepted it, so nothing crosses threads on
//! the request path: no work-stealing queues, no cross-thread wake-ups.
//!
//! Everything else (admin API, health checks, reloads, idle sweeps, signals) stays on the
//! process's main runtime.

use super::{BACKLOG, Listener, Shared};
use std::io;
use std::sync::Arc;
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

/// A listener's socket for one worker: bound, not yet listening (it is registered with the
/// worker's own reactor when the worker calls listen).
pub struct Bound {
    pub stats: Arc<crate::metrics::ListenerStats>,
    pub socket: TcpSocket,
    pub tls: Option<TlsAcceptor>,
}

/// The running workers. Dropping this stops them: their runtimes end, and with them every
/// connection still open on them.
pub struct Workers {
    _stop: watch::Sender<()>,
}

/// Starts one thread per element of `per_worker` (the sockets worker `i` serves) and waits
/// until every worker listens.
pub async fn start(per_worker: Vec<Vec<Bound>>, shared: Arc<Shared>) -> io::Result<Workers> {
    let (stop, stopped) = watch::channel(());
    let mut ready = Vec::new();
    for (index, sockets) in per_worker.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let (shared, mut stopped) = (shared.clone(), stopped.clone());
        std::thread::Builder::new()
            .name(format!("sluice-worker-{index}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                crate::worker::enter(index);
                rt.block_on(async move {
                    let mut listeners = Vec::new();
                    for b in sockets {
                        match b.socket.listen(BACKLOG) {
                            Ok(tcp) => listeners.push(Listener {
                                stats: b.stats,
                                tcp,
                                tls: b.tls,
                            }),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    let _ = tx.send(Ok(()));
                    for l in listeners {
                        tokio::spawn(l.run(shared.clone()));
                    }
                    drop(shared);
                    // Resolves (with an error) when `Workers` is dropped.
                    let _ = stopped.changed().await;
                });
            })?;
    }
    drop(stopped);
    for rx in ready {
        rx.await
            .map_err(|_| io::Error::other("a worker thread ended while starting"))??;
    }
    Ok(Workers { _stop: stop })
}
