//! Process signals: SIGINT/SIGTERM stop gracefully, SIGHUP reloads certificates.

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

    /// Waits for SIGINT or SIGTERM; on SIGHUP reloads certificates and keeps waiting.
    pub async fn wait(&mut self, running: &Running) {
        let Some((term, int, hup)) = &mut self.0 else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down gracefully"); return }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down gracefully"); return }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading certificates");
                    let _ = running.reload_certificates();
                }
            }
        }
    }
}
