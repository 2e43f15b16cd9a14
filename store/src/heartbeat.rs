//! Scheduler heartbeats: which scheduler processes are alive and when each last passed.

use chrono::{DateTime, Utc};

use crate::db::with_pool;
use crate::{Result, Store};

/// A scheduler process's last heartbeat.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchedulerRow {
    /// Process id (host and pid).
    pub scheduler_id: String,
    /// Host.
    pub hostname: String,
    /// Whether it was the active scheduler at its last beat.
    pub leader: bool,
    /// Last beat.
    pub heartbeat_at: DateTime<Utc>,
    /// Its last scheduling pass, in milliseconds.
    pub loop_ms: f64,
}

impl Store {
    /// Records a scheduler's heartbeat.
    ///
    /// # Errors
    /// Database failures.
    pub async fn scheduler_heartbeat(
        &self,
        scheduler_id: &str,
        hostname: &str,
        leader: bool,
        loop_ms: f64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_schedulers (scheduler_id, hostname, leader, heartbeat_at, loop_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (scheduler_id) DO UPDATE SET leader = excluded.leader, heartbeat_at = excluded.heartbeat_at, loop_ms = excluded.loop_ms",
            )
            .bind(scheduler_id)
            .bind(hostname)
            .bind(leader)
            .bind(now)
            .bind(loop_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every scheduler that beat since `since`, newest beat first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn schedulers(&self, since: DateTime<Utc>) -> Result<Vec<SchedulerRow>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, SchedulerRow>(
                "SELECT scheduler_id, hostname, leader, heartbeat_at, loop_ms FROM weir_schedulers WHERE heartbeat_at >= $1 ORDER BY heartbeat_at DESC",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        }))
    }
}
