//! Certificate reload for every TLS listener: on demand (SIGHUP, API) and when a file in a
//! certificate directory changes. Watching directories, not files, catches editors' rename-over
//! and Kubernetes-style symlink swaps. A failing reload changes nothing and says which file.

use super::tls::{CertResolver, TlsError};
use crate::metrics::{Reload, Reloads};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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
    use notify::Watcher;
    if resolvers.is_empty() {
        return None;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch certificate files; reload with SIGHUP");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = resolvers
        .iter()
        .flat_map(|r| {
            r.files()
                .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
                .collect::<Vec<_>>()
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        let d = if d.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            d.clone()
        };
        if let Err(e) = watcher.watch(&d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch certificate directory");
        }
    }
    let resolvers = resolvers.to_vec();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: a cert and key are usually written one after the other.
            loop {
                match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let _ = reload_all(&resolvers, &reloads);
        }
    });
    Some(watcher)
}
