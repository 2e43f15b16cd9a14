//! State changes an operator makes by hand, apart from clearing: cancelling a run, marking
//! task instances success or failed.

use chrono::{DateTime, Utc};
use weir_model::TaskState;

use crate::db::{BeginWrite, with_pool};
use crate::{Result, Store, StoreError};

impl Store {
    /// Cancels an unfinished run: the run becomes `cancelled`; its running instances fail
    /// (their workers lose the lease and stop them at the next heartbeat) and the ones not
    /// started yet are skipped, all with `reason` as their error. Whether the run changed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn cancel_run(&self, run_id: &str, reason: &str, now: DateTime<Utc>) -> Result<bool> {
        let changed = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE weir_runs SET state = 'cancelled', ended_at = $2 WHERE run_id = $1 AND state IN ('queued', 'running')",
            )
            .bind(run_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                sqlx::query(
                    "UPDATE weir_task_instances SET
                         state = CASE WHEN state = 'running' THEN 'failed' ELSE 'skipped' END,
                         ended_at = $2, lease_expires_at = NULL, due_at = NULL, error = $3
                     WHERE run_id = $1 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')",
                )
                .bind(run_id)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            changed == 1
        });
        if changed {
            self.wake_scheduler().await;
        }
        Ok(changed)
    }

    /// Marks task instances of a run `success` or `failed` by hand (a running one loses its
    /// lease: its worker stops it). A finished run goes back to `queued` so the scheduler
    /// re-evaluates it and its downstream tasks. How many instances changed.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a state other than success or failed; database failures.
    pub async fn mark_tasks(
        &self,
        run_id: &str,
        ti_ids: &[i64],
        state: TaskState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        if !matches!(state, TaskState::Success | TaskState::Failed) {
            return Err(StoreError::Corrupt(format!(
                "a task can be marked success or failed, not {state}"
            )));
        }
        let error = (state == TaskState::Failed).then_some(reason);
        let mut changed = 0;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for id in ti_ids {
                changed += sqlx::query(
                    "UPDATE weir_task_instances SET state = $3, ended_at = $4, lease_expires_at = NULL, due_at = NULL, error = $5
                     WHERE id = $1 AND run_id = $2 AND state <> $3",
                )
                .bind(id)
                .bind(run_id)
                .bind(state.as_str())
                .bind(now)
                .bind(error)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            if changed > 0 {
                sqlx::query(crate::task::REOPEN_RUN_SQL)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        if changed > 0 {
            self.wake_scheduler().await;
        }
        Ok(changed)
    }
}
