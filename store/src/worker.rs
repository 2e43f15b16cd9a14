//! Worker registrations: who is alive, for operators and for lease accounting.

use chrono::{DateTime, Utc};

use crate::db::with_pool;
use crate::{Result, Store};

/// A registered worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    /// Worker id (unique per process start).
    pub worker_id: String,
    /// Host it runs on.
    pub hostname: String,
    /// Queues it takes from (JSON list).
    pub queues: String,
    /// Slots.
    pub concurrency: i32,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Clean stop, if it stopped cleanly.
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Registers a starting worker.
    ///
    /// # Errors
    /// Database failures (a duplicate id among them).
    pub async fn register_worker(
        &self,
        worker_id: &str,
        hostname: &str,
        queues: &[String],
        concurrency: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let queues = serde_json::to_string(queues)?;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_workers (worker_id, hostname, queues, concurrency, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(worker_id)
            .bind(hostname)
            .bind(&queues)
            .bind(concurrency)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records a clean stop.
    ///
    /// # Errors
    /// Database failures.
    pub async fn stop_worker(&self, worker_id: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE weir_workers SET stopped_at = $2 WHERE worker_id = $1")
                .bind(worker_id)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Workers that have not stopped, newest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>> {
        const SQL: &str = "SELECT worker_id, hostname, queues, concurrency, started_at, heartbeat_at, stopped_at FROM weir_workers
             WHERE stopped_at IS NULL ORDER BY started_at DESC";
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, WorkerRow>(SQL)
            .fetch_all(pool)
            .await?))
    }
}
