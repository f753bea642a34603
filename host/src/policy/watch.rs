//! Reloads the policy when its module file changes.
//!
//! The parent directory is watched, not the file, so an editor's rename-over or a
//! Kubernetes-style symlink swap is seen. Events are debounced: a build tool writes a module in
//! several steps, and a half-written file would only produce a (harmless) failed load.

use super::PolicyRuntime;
use std::sync::Arc;
use std::time::Duration;

/// Quiet time after the last change before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts watching the active config's module file, if it has one and `watch` is on. The
/// returned watcher stops when dropped.
pub fn watch_module(runtime: &Arc<PolicyRuntime>) -> Option<notify::RecommendedWatcher> {
    let file = runtime.watched_file()?;
    let (watcher, mut changes) = crate::filewatch::watch(&[file], true, "policy module")?;
    let weak = Arc::downgrade(runtime);
    tokio::spawn(async move {
        while changes.next(DEBOUNCE).await.is_some() {
            let Some(runtime) = weak.upgrade() else {
                return;
            };
            // Errors are logged by `reload`; the active revision keeps serving.
            let _ = runtime.reload(None).await;
        }
    });
    Some(watcher)
}
