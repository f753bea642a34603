//! File watching shared by the certificate, policy and config reloads: a directory-level
//! `notify` watcher (so editors' rename-over and Kubernetes-style symlink swaps are seen) and a
//! debounced wait for the next change.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// The changes a watcher sees; [`Changes::next`] ends once the watcher is dropped.
pub struct Changes(mpsc::UnboundedReceiver<()>);

/// Watches `files` (`only_these_files`: events naming other files in their directories do not
/// count) or everything in the directories holding them. Keep the watcher as long as the
/// changes matter; `what` names them in warnings.
pub fn watch(
    files: &[PathBuf],
    only_these_files: bool,
    what: &str,
) -> Option<(notify::RecommendedWatcher, Changes)> {
    use notify::Watcher;
    let names: Vec<OsString> = match only_these_files {
        true => files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_owned()))
            .collect(),
        false => Vec::new(),
    };
    let (tx, changes) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let relevant = !matches!(ev.kind, notify::EventKind::Access(_))
            && (names.is_empty()
                || ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n))));
        if relevant {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the {what}; reload with SIGHUP");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch the {what}'s directory");
            return None;
        }
    }
    Some((watcher, Changes(changes)))
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Changes {
    /// Waits for a change followed by `quiet` without another one (files are often written in
    /// several steps); `None` once the watcher has been dropped.
    pub async fn next(&mut self, quiet: Duration) -> Option<()> {
        self.0.recv().await?;
        loop {
            match tokio::time::timeout(quiet, self.0.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}
