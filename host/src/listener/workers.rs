//! Per-core mode: one thread per worker, each running a single-threaded tokio runtime with its
//! own accept socket for every listener (`SO_REUSEPORT`: the kernel spreads new connections
//! over the sockets). A connection, its requests, the policy call and the upstream connections
//! it uses are all polled by the one thread that accepted it, so nothing crosses threads on
//! the request path: no work-stealing queues, no cross-thread wake-ups.
//!
//! Everything else (admin API, health checks, reloads, idle sweeps, signals) stays on the
//! process's main runtime.

use super::{Listener, ListenerState, Shared};
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// A listener's socket for one worker: listening, not yet registered with a reactor (the
/// worker registers it with its own).
pub struct Bound {
    pub state: Arc<ListenerState>,
    pub listener: std::net::TcpListener,
}

/// The running workers. Dropping this stops them: their runtimes end, and with them every
/// connection still open on them.
pub struct Workers {
    _stop: watch::Sender<()>,
    /// Each worker's queue of listeners to accept on.
    add: Vec<mpsc::UnboundedSender<Bound>>,
}

impl Workers {
    /// Hands worker `i` the `i`-th socket of a listener (one per worker).
    pub fn add(&self, sockets: Vec<Bound>) {
        for (tx, b) in self.add.iter().zip(sockets) {
            // A worker that ended is gone with its runtime; nothing to hand over.
            let _ = tx.send(b);
        }
    }
}

/// Starts `count` worker threads and waits until each runs; listeners reach them through
/// [`Workers::add`].
pub async fn start(count: usize, shared: Arc<Shared>) -> io::Result<Workers> {
    let (stop, stopped) = watch::channel(());
    let mut ready = Vec::new();
    let mut add = Vec::new();
    for index in 0..count {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let (add_tx, mut added) = mpsc::unbounded_channel::<Bound>();
        add.push(add_tx);
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
                    let _ = tx.send(Ok(()));
                    // Holding `shared` holds a drain sender: let go of it at shutdown, or a
                    // graceful shutdown would wait for this loop.
                    let mut shutdown = shared.shutdown.clone();
                    loop {
                        tokio::select! {
                            // Resolves (with an error) when `Workers` is dropped.
                            _ = stopped.changed() => return,
                            _ = shutdown.changed() => break,
                            Some(b) = added.recv() => match TcpListener::from_std(b.listener) {
                                Ok(tcp) => {
                                    tokio::spawn(Listener::new(b.state, tcp).run(shared.clone()));
                                }
                                Err(e) => tracing::error!(
                                    listener = %b.state.stats.name, worker = index, error = %e,
                                    "cannot accept on a listener's socket"
                                ),
                            },
                        }
                    }
                    drop((shared, added));
                    let _ = stopped.changed().await;
                });
            })?;
    }
    drop(stopped);
    for rx in ready {
        rx.await
            .map_err(|_| io::Error::other("a worker thread ended while starting"))??;
    }
    Ok(Workers { _stop: stop, add })
}
