//! Live views shared by everyone watching them: each view (a DAG's grid, a run page) is
//! rendered from the database once per poll however many pages watch it, by one task that
//! ends when the last watcher leaves; and open live streams are bounded per user and in all,
//! so viewers can never take the database away from the engine.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::WebError;

/// A view's latest rendering: its HTML, or the error that stopped it.
pub(crate) type Rendered = Result<String, String>;

/// Live streams one user may have open at once (a browser with many tabs).
pub(crate) const PER_USER: usize = 64;
/// Live streams open at once on this server.
pub(crate) const TOTAL: usize = 1024;

/// Shared views and the count of open streams.
#[derive(Default)]
pub(crate) struct Hub {
    views: Mutex<HashMap<String, watch::Sender<Option<Rendered>>>>,
    open: Mutex<HashMap<String, usize>>,
    /// Cancelled when the server stops: every live stream ends.
    closing: CancellationToken,
}

/// A stream's place under the bounds; given back when the stream ends.
pub(crate) struct Ticket {
    hub: Arc<Hub>,
    user: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// A place for one more stream of `user`, or 429 when the user or the server has too many.
    ///
    /// # Errors
    /// [`WebError::too_many`] past [`PER_USER`] or [`TOTAL`].
    pub(crate) fn admit(self: &Arc<Self>, user: &str) -> Result<Ticket, WebError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = open.values().sum();
        let mine = open.get(user).copied().unwrap_or(0);
        if mine >= PER_USER {
            return Err(WebError::too_many(format!(
                "{mine} live views are open for {user}: close some pages (at most {PER_USER})"
            )));
        }
        if total >= TOTAL {
            return Err(WebError::too_many(format!(
                "this server has {total} live views open, its limit: try again later"
            )));
        }
        *open.entry(user.to_owned()).or_default() += 1;
        Ok(Ticket {
            hub: Arc::clone(self),
            user: user.to_owned(),
        })
    }

    /// Ends every live stream, now and to come (the server is stopping).
    pub(crate) fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves when the server stops (see [`Hub::close`]).
    pub(crate) fn closed(&self) -> WaitForCancellationFutureOwned {
        self.closing.clone().cancelled_owned()
    }

    /// How many live streams are open (for tests and metrics).
    pub(crate) fn open_streams(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// How many views are being polled.
    pub(crate) fn views(&self) -> usize {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Watches the view `key`: the first watcher starts its poller (`render` every `every`,
    /// sent when it changed), later ones share it.
    pub(crate) fn watch<F, Fut>(
        self: &Arc<Self>,
        key: String,
        every: Duration,
        render: F,
    ) -> watch::Receiver<Option<Rendered>>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, WebError>> + Send + 'static,
    {
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = views.get(&key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        views.insert(key.clone(), tx.clone());
        drop(views);
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let rendered = render().await.map_err(|e| e.message);
                tx.send_if_modified(|current| {
                    if current.as_ref() == Some(&rendered) {
                        false
                    } else {
                        *current = Some(rendered);
                        true
                    }
                });
                tokio::time::sleep(every).await;
                // Checked under the lock a new watcher subscribes under: none is lost.
                let mut views = hub.views.lock().unwrap_or_else(PoisonError::into_inner);
                if tx.receiver_count() == 0 {
                    views.remove(&key);
                    return;
                }
            }
        });
        rx
    }
}
