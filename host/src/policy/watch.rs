//! Reloads the policy when its module file changes.
//!
//! The parent directory is watched, not the file, so an editor's rename-over or a
//! Kubernetes-style symlink swap is seen. Events are debounced: a build tool writes a module in
//! several steps, and a half-written file would only produce a (harmless) failed load.

use super::PolicyRuntime;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last change before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts watching the active config's module file, if it has one and `watch` is on. The
/// returned watcher stops when dropped.
pub fn watch_module(runtime: &Arc<PolicyRuntime>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let file = runtime.watched_file()?;
    let name = file.file_name()?.to_owned();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let relevant = !matches!(ev.kind, notify::EventKind::Access(_))
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()));
        if relevant {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the policy module; reload with SIGHUP or the admin API");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy module's directory");
        return None;
    }
    let weak = Arc::downgrade(runtime);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let Some(runtime) = weak.upgrade() else {
                return;
            };
            // Errors are logged by `reload`; the active revision keeps serving.
            let _ = runtime.reload(None).await;
        }
    });
    Some(watcher)
}
