//! Task log lines: written by workers as they come, read by any CLI or web server, live.

use chrono::{DateTime, Utc};

use crate::db::{BeginWrite, with_pool, with_read_pool};
use crate::{Result, Store};

/// One line of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LogLine {
    /// Increasing id: read "after id N" to follow a log.
    pub id: i64,
    /// `stdout`, `stderr` or `weir` (weir's own notes: start, exit code, timeout).
    pub stream: String,
    /// The text, without its line break.
    pub line: String,
    /// When it was read.
    pub at: DateTime<Utc>,
}

/// A captured line on its way into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogLine {
    /// `stdout`, `stderr` or `weir`.
    pub stream: &'static str,
    /// The text, without its line break.
    pub text: String,
    /// When it was read.
    pub at: DateTime<Utc>,
}

/// Rows per `INSERT`: 5 binds a row keeps a statement under SQLite's 32,766 bind limit.
pub(crate) const LOG_ROWS_PER_INSERT: usize = 1000;

/// Inserts a try's lines on `$conn` with one multi-row `INSERT` per [`LOG_ROWS_PER_INSERT`].
macro_rules! insert_log_lines {
    ($conn:expr, $ti_id:expr, $try_number:expr, $lines:expr) => {
        for chunk in $lines.chunks($crate::log::LOG_ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO weir_task_logs (ti_id, try_number, stream, line, at) ",
            );
            insert.push_values(chunk, |mut row, l: &$crate::log::NewLogLine| {
                row.push_bind($ti_id)
                    .push_bind($try_number)
                    .push_bind(l.stream)
                    .push_bind(l.text.as_str())
                    .push_bind(l.at);
            });
            insert.build().execute(&mut *$conn).await?;
        }
    };
}
pub(crate) use insert_log_lines;

/// When one try of a task instance logged first and last (from its log lines).
#[derive(Debug, Clone)]
pub struct TrySpan {
    /// Try number.
    pub try_number: i32,
    /// First log line's time.
    pub first: Option<DateTime<Utc>>,
    /// Last log line's time, and the line (weir writes the outcome last).
    pub last: Option<(DateTime<Utc>, String)>,
}

impl Store {
    /// Appends lines to a try's log, in order, in one transaction.
    ///
    /// # Errors
    /// Database failures.
    pub async fn append_logs(
        &self,
        ti_id: i64,
        try_number: i32,
        lines: &[NewLogLine],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            insert_log_lines!(tx, ti_id, try_number, lines);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Up to `limit` lines of a try after line id `after` (0 for the start).
    ///
    /// # Errors
    /// Database failures.
    pub async fn logs(
        &self,
        ti_id: i64,
        try_number: i32,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>> {
        const SQL: &str = "SELECT id, stream, line, at FROM weir_task_logs WHERE ti_id = $1 AND try_number = $2 AND id > $3 ORDER BY id LIMIT $4";
        Ok(with_read_pool!(self, |pool| {
            sqlx::query_as::<_, LogLine>(SQL)
                .bind(ti_id)
                .bind(try_number)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }
}

impl Store {
    /// The last `limit` lines of a try, in order: read from the end through the index, so
    /// the size of the whole log does not matter.
    ///
    /// # Errors
    /// Database failures.
    pub async fn log_tail(
        &self,
        ti_id: i64,
        try_number: i32,
        limit: i64,
    ) -> Result<Vec<crate::LogLine>> {
        let mut lines = with_read_pool!(self, |pool| {
            sqlx::query_as::<_, crate::LogLine>(
                "SELECT id, stream, line, at FROM weir_task_logs WHERE ti_id = $1 AND try_number = $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(ti_id)
            .bind(try_number)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        lines.reverse();
        Ok(lines)
    }

    /// When each try of a task instance logged first and last, tries 1 to `tries`: two
    /// index lookups a try, whatever the log's size.
    ///
    /// # Errors
    /// Database failures.
    pub async fn try_spans(&self, ti_id: i64, tries: i32) -> Result<Vec<TrySpan>> {
        let mut spans = Vec::new();
        for try_number in 1..=tries {
            let (first, last) = with_read_pool!(self, |pool| {
                let first: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT at FROM weir_task_logs WHERE ti_id = $1 AND try_number = $2 ORDER BY id LIMIT 1",
                )
                .bind(ti_id)
                .bind(try_number)
                .fetch_optional(pool)
                .await?;
                let last: Option<(DateTime<Utc>, String)> = sqlx::query_as(
                    "SELECT at, line FROM weir_task_logs WHERE ti_id = $1 AND try_number = $2 ORDER BY id DESC LIMIT 1",
                )
                .bind(ti_id)
                .bind(try_number)
                .fetch_optional(pool)
                .await?;
                (first, last)
            });
            spans.push(TrySpan {
                try_number,
                first,
                last,
            });
        }
        Ok(spans)
    }
}
