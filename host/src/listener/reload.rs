//! Certificate reload for every TLS listener: on demand (SIGHUP, API) and when a file in a
//! certificate directory changes. Watching directories, not files, catches editors' rename-over
//! and Kubernetes-style symlink swaps. A failing reload changes nothing and says which file.

use super::tls::{CertResolver, TlsError};
use crate::metrics::{Reload, Reloads};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Owns the resolvers of all TLS listeners and the file watcher.
pub struct CertReloader {
    resolvers: Vec<Arc<CertResolver>>,
    reloads: Arc<Tally>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Where reloads are counted: successful ones for tests to wait on, and both outcomes for
/// `/metrics`.
struct Tally {
    done: watch::Sender<u64>,
    metrics: Arc<Reloads>,
}

impl CertReloader {
    /// Starts watching the certificate directories (needs a tokio runtime).
    pub fn new(resolvers: Vec<Arc<CertResolver>>, metrics: Arc<Reloads>) -> CertReloader {
        let reloads = Arc::new(Tally {
            done: watch::Sender::new(0u64),
            metrics,
        });
        let watcher = watch_certificates(&resolvers, reloads.clone());
        CertReloader {
            resolvers,
            reloads,
            _watcher: watcher,
        }
    }

    /// Re-reads every certificate; all-or-nothing per listener.
    pub fn reload(&self) -> Result<(), TlsError> {
        reload_all(&self.resolvers, &self.reloads)
    }

    /// Takes over a new set of resolvers (after a config reload changed the listeners) and
    /// watches their directories instead; the counts go on.
    pub fn replace(&mut self, resolvers: Vec<Arc<CertResolver>>) {
        self._watcher = watch_certificates(&resolvers, self.reloads.clone());
        self.resolvers = resolvers;
    }

    /// Counts successful reloads.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.reloads.done.subscribe()
    }
}

fn reload_all(resolvers: &[Arc<CertResolver>], reloads: &Tally) -> Result<(), TlsError> {
    for r in resolvers {
        if let Err(e) = r.reload() {
            tracing::error!(error = %e, "certificate reload failed; keeping the current certificates");
            reloads.metrics.count(Reload::Certificates, false);
            return Err(e);
        }
    }
    reloads.metrics.count(Reload::Certificates, true);
    reloads.done.send_modify(|n| *n += 1);
    tracing::info!(listeners = resolvers.len(), "certificates reloaded");
    Ok(())
}

/// Watches the directories holding certificate files and reloads on any change in them
/// (directory-level so renames and Kubernetes-style symlink swaps are seen too).
fn watch_certificates(
    resolvers: &[Arc<CertResolver>],
    reloads: Arc<Tally>,
) -> Option<notify::RecommendedWatcher> {
    if resolvers.is_empty() {
        return None;
    }
    let files: Vec<PathBuf> = resolvers.iter().flat_map(|r| r.files().cloned()).collect();
    let (watcher, mut changes) = crate::filewatch::watch(&files, false, "certificate files")?;
    let resolvers = resolvers.to_vec();
    tokio::spawn(async move {
        // Debounce: a cert and key are usually written one after the other.
        while changes.next(Duration::from_millis(200)).await.is_some() {
            let _ = reload_all(&resolvers, &reloads);
        }
    });
    Some(watcher)
}
