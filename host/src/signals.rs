//! Process signals: SIGINT/SIGTERM stop gracefully, SIGHUP reloads certificates and the
//! policy.

use crate::Running;

/// SIGINT, SIGTERM and SIGHUP handlers. Install them before announcing readiness: from then
/// on those signals are queued for [`StopSignals::wait`] instead of killing the process.
pub struct StopSignals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

impl StopSignals {
    /// Must be called inside a tokio runtime.
    pub fn install() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => StopSignals(Some((term, int, hup))),
            _ => {
                tracing::error!("cannot install signal handlers");
                StopSignals(None)
            }
        }
    }

    /// Waits for SIGINT or SIGTERM. On SIGHUP reloads certificates and the policy module, with
    /// the `[[pool]]` and `[policy]` tables re-read from `config` when given (other sections need
    /// a restart),
    /// and keeps waiting.
    pub async fn wait(&mut self, running: &Running, config: Option<&std::path::Path>) {
        let Some((term, int, hup)) = &mut self.0 else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down gracefully"); return }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down gracefully"); return }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading certificates and policy");
                    let _ = running.reload_certificates();
                    let policy = match config.map(crate::config::Config::load) {
                        None => None,
                        Some(Ok(c)) => {
                            running.count_config_reload(true);
                            match running.reload_pools(&c) {
                                Ok(()) => tracing::info!(pools = c.pools.len(), "pools reloaded"),
                                Err(e) => tracing::error!(error = %e, "pools not reloaded"),
                            }
                            if c.cache.as_ref() != running.cache().map(|k| &k.config) {
                                tracing::warn!("[cache] changed: cache settings take effect at the next restart");
                            }
                            Some(c.policy)
                        }
                        Some(Err(e)) => {
                            running.count_config_reload(false);
                            tracing::error!(error = %e, "config not reloaded; keeping pools and policy");
                            continue;
                        }
                    };
                    // Failures are logged by the runtime; the active revision keeps serving.
                    let _ = running.reload_policy(policy).await;
                }
            }
        }
    }
}
