//! Watching the dags folder: the active scheduler learns of a new, changed or removed file
//! from the operating system (inotify on Linux) and scans at once, so a DAG is live within
//! milliseconds instead of at the next scan. The scan every `scan_interval` stays: it is the
//! fallback where watching is unavailable (a network file system, the watch limit reached)
//! and the truth either way (an event only says "look now").

use std::path::Path;
use std::sync::Arc;

use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// A watch on the dags folder; dropping it stops watching.
pub(super) struct FolderWatch {
    _watcher: RecommendedWatcher,
    /// Woken (once per burst) when something below the folder changed.
    pub(super) changed: Arc<Notify>,
}

/// Watches `folder` and everything below it; `None` (logged) when the system cannot.
pub(super) fn watch(folder: &Path) -> Option<FolderWatch> {
    let changed = Arc::new(Notify::new());
    let wake = Arc::clone(&changed);
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(e) if is_change(&e.kind) => wake.notify_one(),
        Ok(_) => {}
        // An overflowed queue or a broken watch: scanning sorts out what happened.
        Err(_) => wake.notify_one(),
    };
    let started = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(folder, RecursiveMode::Recursive)?;
        Ok(w)
    });
    match started {
        Ok(watcher) => Some(FolderWatch {
            _watcher: watcher,
            changed,
        }),
        Err(e) => {
            tracing::warn!(folder = %folder.display(), error = %e, "cannot watch the dags folder; it is scanned every scan interval instead");
            None
        }
    }
}

/// Whether an event can change what the folder holds: not reads (the scan's own reads would
/// wake it again), nor a file's access time.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) => false,
    }
}
