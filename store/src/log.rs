//! Task log lines: written by workers as they come, read by any CLI or web server, live.

use chrono::{DateTime, Utc};

use crate::db::{BeginWrite, with_pool};
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

impl Store {
    /// Appends lines to a try's log, in order, in one transaction.
    ///
    /// # Errors
    /// Database failures.
    pub async fn append_logs(
        &self,
        ti_id: i64,
        try_number: i32,
        lines: &[(&str, String, DateTime<Utc>)],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for (stream, line, at) in lines {
                sqlx::query("INSERT INTO weir_task_logs (ti_id, try_number, stream, line, at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(ti_id)
                    .bind(try_number)
                    .bind(*stream)
                    .bind(line)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
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
        Ok(with_pool!(self, |pool| {
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
