//! The OpenLineage outbox: events (JSON documents) written by workers, posted by the scheduler
//! process, each at least once, with retries; a row is never lost and never blocks a run.

use chrono::{DateTime, Utc};

use crate::db::{BeginWrite, Db, with_pool};
use crate::{Result, Store};

/// An outbox row claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedLineage {
    /// Row id.
    pub id: i64,
    /// The event, as JSON text.
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// Inserts lineage events in the transaction `$conn`.
macro_rules! insert_lineage {
    ($conn:expr, $payloads:expr, $now:expr) => {
        for p in $payloads {
            let p: &String = p;
            sqlx::query(
                "INSERT INTO weir_lineage_outbox (payload, created_at, next_attempt_at) VALUES ($1, $2, $2)",
            )
            .bind(p)
            .bind($now)
            .execute(&mut *$conn)
            .await?;
        }
    };
}
pub(crate) use insert_lineage;

impl Store {
    /// Queues lineage events.
    ///
    /// # Errors
    /// Database failures.
    pub async fn enqueue_lineage(&self, payloads: &[String], now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            insert_lineage!(tx, payloads, now);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Claims up to `limit` due events (in order), leasing them until `now + lease`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn claim_lineage(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedLineage>> {
        const PICK: &str = "SELECT id FROM weir_lineage_outbox
             WHERE sent_at IS NULL AND NOT gave_up AND next_attempt_at <= $1
             ORDER BY id LIMIT $3";
        let mut rows: Vec<ClaimedLineage> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE weir_lineage_outbox SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id IN ({PICK} FOR UPDATE SKIP LOCKED) RETURNING id, payload, attempts"
                )))
                .bind(now)
                .bind(now + lease)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE weir_lineage_outbox SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id IN ({PICK}) RETURNING id, payload, attempts"
                )))
                .bind(now)
                .bind(now + lease)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows
            }
        };
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Records a delivered event.
    ///
    /// # Errors
    /// Database failures.
    pub async fn lineage_sent(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE weir_lineage_outbox SET sent_at = $2, error = NULL WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a failed delivery: tried again at `retry_at`, or given up without one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn lineage_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE weir_lineage_outbox SET error = $2, gave_up = $3, next_attempt_at = COALESCE($4, next_attempt_at)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(retry_at.is_none())
            .bind(retry_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes up to `batch` settled (sent or given up) events written before `cutoff`;
    /// returns how many.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_lineage_before(&self, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        self.delete_settled("weir_lineage_outbox", cutoff, batch)
            .await
    }

    /// Every outbox row: `(id, attempts, error, gave_up, sent)` (for tests and operations).
    ///
    /// # Errors
    /// Database failures.
    pub async fn lineage_outbox(&self) -> Result<Vec<(i64, i32, Option<String>, bool, bool)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, attempts, error, gave_up, sent_at IS NOT NULL FROM weir_lineage_outbox ORDER BY id",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}
