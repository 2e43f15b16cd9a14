//! A try's log: lines go through a channel to a writer that stores them in batches, so the
//! log is visible live (within [`FLUSH_EVERY`]) without one database write per line. The last
//! batch goes with the try's completion, in its transaction.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use weir_store::{NewLogLine, Store};

use crate::conn::Masker;

/// How long a line may wait before it is stored.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most lines stored in one batch.
const BATCH: usize = 500;

/// One captured line.
pub type Line = NewLogLine;

/// Where a step writes its log lines. Every line is masked (secrets become `***`) before it
/// goes anywhere.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Line>,
    masker: Masker,
}

impl LogSink {
    /// A sink and the receiving end (for [`store_lines`] or a printer).
    pub fn channel(masker: Masker) -> (LogSink, mpsc::UnboundedReceiver<Line>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LogSink { tx, masker }, rx)
    }

    /// Records a line (a closed receiver drops it: the try is over).
    pub fn line(&self, stream: &'static str, text: impl Into<String>) {
        let text = text.into();
        let text = match self.masker.mask(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(masked) => masked,
        };
        let _ = self.tx.send(Line {
            stream,
            text,
            at: Utc::now(),
        });
    }

    /// Records one of weir's own notes about the try.
    pub fn note(&self, text: impl Into<String>) {
        self.line("weir", text);
    }
}

/// Stores lines from `rx` into a try's log in batches until every sender is gone, and returns
/// the lines not stored yet (for the completion's transaction).
pub async fn store_lines(
    store: Store,
    ti_id: i64,
    try_number: i32,
    mut rx: mpsc::UnboundedReceiver<Line>,
) -> Vec<Line> {
    let mut batch: Vec<Line> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return batch;
        };
        batch.push(first);
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        while batch.len() < BATCH {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(l) => batch.push(l),
                    None => return batch,
                },
                () = &mut deadline => break,
            }
        }
        if let Err(e) = store.append_logs(ti_id, try_number, &batch).await {
            tracing::warn!(error = %e, ti_id, lines = batch.len(), "storing log lines failed");
        }
        batch.clear();
    }
}
