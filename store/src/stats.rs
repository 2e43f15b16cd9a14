//! Counts across the database for metrics: runs and task instances by state, queue depths,
//! running tries by worker.

use crate::db::with_pool;
use crate::{Result, Store};

/// How many rows are in each state.
pub type StateCounts = Vec<(String, i64)>;

impl Store {
    /// Runs by state.
    ///
    /// # Errors
    /// Database failures.
    pub async fn run_counts(&self) -> Result<StateCounts> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as("SELECT state, COUNT(*) FROM weir_runs GROUP BY state")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Task instances by state.
    ///
    /// # Errors
    /// Database failures.
    pub async fn task_counts(&self) -> Result<StateCounts> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as("SELECT state, COUNT(*) FROM weir_task_instances GROUP BY state")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Queued task instances by queue (the claim index answers it).
    ///
    /// # Errors
    /// Database failures.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT queue, COUNT(*) FROM weir_task_instances WHERE state = 'queued' GROUP BY queue",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Running task instances by worker.
    ///
    /// # Errors
    /// Database failures.
    pub async fn running_by_worker(&self) -> Result<Vec<(String, i64)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT worker_id, COUNT(*) FROM weir_task_instances WHERE state = 'running' AND worker_id IS NOT NULL GROUP BY worker_id",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}
