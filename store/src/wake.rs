//! Wake-ups between processes sharing a SQLite file, what Postgres's `NOTIFY` does for
//! Postgres: a `weir trigger` from the CLI, or a `weir worker` beside a `weir standalone`,
//! wakes the other processes at once instead of at their next poll.
//!
//! Each listening process binds a Unix datagram socket in a folder beside the database
//! (`weir.db.wake/<id>.sock`); a process with news sends one byte to every socket there but its
//! own (`s`: the scheduler, `w`: workers). A socket nobody reads any more (its process died) is
//! removed by the first sender that finds it refused. Like `NOTIFY`, a wake-up is only a hint:
//! one lost (a full socket buffer, a folder that cannot be written) delays work until the
//! next poll, never loses it.

use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::db::Wakeups;

/// The byte that wakes schedulers.
pub(crate) const SCHEDULER: u8 = b's';
/// The byte that wakes workers.
pub(crate) const WORKERS: u8 = b'w';

/// How long a sender keeps its list of the other processes' sockets.
const PEERS_FOR: Duration = Duration::from_millis(250);

/// The wake-up folder of one SQLite database, seen from one store.
#[derive(Debug)]
pub(crate) struct LocalPeers {
    dir: PathBuf,
    /// This store's socket (skipped when sending).
    own: PathBuf,
    listening: AtomicBool,
    /// The other sockets, and when they were listed.
    peers: Mutex<Option<(Instant, Vec<PathBuf>)>>,
}

impl LocalPeers {
    /// For the SQLite file of `url`, this store's socket named after `origin`.
    pub(crate) fn for_sqlite(file: &Path, origin: &str) -> LocalPeers {
        let mut dir = file.as_os_str().to_owned();
        dir.push(".wake");
        let dir = PathBuf::from(dir);
        // Socket paths are short (108 bytes on Linux): 12 characters of the origin suffice.
        let own = dir.join(format!("{}.sock", &origin[..origin.len().min(12)]));
        LocalPeers {
            dir,
            own,
            listening: AtomicBool::new(false),
            peers: Mutex::new(None),
        }
    }

    /// Sends `what` to every other listening process.
    pub(crate) fn send(&self, what: u8) {
        let peers = self.peers();
        if peers.is_empty() {
            return;
        }
        let Ok(socket) = StdDatagram::unbound() else {
            return;
        };
        let _ = socket.set_nonblocking(true);
        let mut gone = false;
        for peer in &peers {
            if let Err(e) = socket.send_to(&[what], peer) {
                use std::io::ErrorKind::{ConnectionRefused, NotFound};
                if matches!(e.kind(), ConnectionRefused | NotFound) {
                    // Its process is gone: nobody will read it again.
                    let _ = std::fs::remove_file(peer);
                    gone = true;
                }
            }
        }
        if gone {
            *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// The other processes' sockets, listed at most every [`PEERS_FOR`].
    fn peers(&self) -> Vec<PathBuf> {
        let mut cached = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, list)) = cached.as_ref()
            && at.elapsed() < PEERS_FOR
        {
            return list.clone();
        }
        let list: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "sock") && *p != self.own)
                    .collect()
            })
            .unwrap_or_default();
        *cached = Some((Instant::now(), list.clone()));
        list
    }

    /// Binds this store's socket and forwards what arrives to `wakeups` until the returned
    /// task is aborted; `None` when this store already listens, or the socket cannot be made
    /// (logged: the process polls instead).
    pub(crate) fn listen(
        self: &Arc<Self>,
        wakeups: Arc<Wakeups>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.listening.swap(true, Ordering::SeqCst) {
            return None;
        }
        let bound = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let _ = std::fs::remove_file(&self.own);
            tokio::net::UnixDatagram::bind(&self.own)
        });
        let socket = match bound {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %self.own.display(), error = %e, "cannot listen for other processes' wake-ups; polling instead");
                return None;
            }
        };
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            let _owner = RemoveOnDrop(me.own.clone());
            let mut buf = [0u8; 16];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) => {
                        for byte in &buf[..n] {
                            wakeups.wake(*byte);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "wake-up socket");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }))
    }
}

/// Removes the socket when the listening task ends (aborted at shutdown).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
