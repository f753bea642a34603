//! Process signals: SIGINT/SIGTERM stop gracefully, SIGHUP reloads the config, the
//! certificates and the policy.

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

    /// Waits for SIGINT or SIGTERM. On SIGHUP reloads the whole `config` when given
    /// ([`Running::reload`]), re-reads the certificates and reloads the policy module, and
    /// keeps waiting. With `watch`, a change to the `config` file does what SIGHUP does.
    pub async fn wait(&mut self, running: &Running, config: Option<&std::path::Path>, watch: bool) {
        let Some((term, int, hup)) = &mut self.0 else {
            return std::future::pending().await;
        };
        // Kept for as long as we wait: dropping the watcher ends its changes.
        let watched = match (config, watch) {
            (Some(path), true) => {
                crate::filewatch::watch(&[path.to_path_buf()], true, "config file")
            }
            _ => None,
        };
        let (_watcher, mut changes) = watched.unzip();
        loop {
            let changed = async {
                match &mut changes {
                    Some(c) => c.next(CONFIG_QUIET).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down gracefully"); return }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down gracefully"); return }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    reload(running, config).await;
                }
                Some(()) = changed => {
                    tracing::info!("config file changed: reloading");
                    reload(running, config).await;
                }
            }
        }
    }
}

/// Quiet time after the config file's last change before it is read (deploy tools may write
/// it in several steps; a half-written file would only be refused).
const CONFIG_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// One SIGHUP. A config that cannot be read or applied is refused with its reason (logged and
/// counted) and nothing changes; certificates are re-read either way, since rotating them on
/// disk and sending SIGHUP is the usual way to renew them.
async fn reload(running: &Running, config: Option<&std::path::Path>) {
    let Some(path) = config else {
        let _ = running.reload_certificates();
        let _ = running.reload_policy(None).await;
        return;
    };
    match crate::config::Config::load(path) {
        Err(e) => {
            running.count_config_reload(false);
            tracing::error!(error = %e, "config not reloaded; the one in force keeps serving");
        }
        Ok(c) => {
            if let Err(e) = running.reload(c).await {
                tracing::error!(error = %e, "config not reloaded; the one in force keeps serving");
            }
        }
    }
    let _ = running.reload_certificates();
}
