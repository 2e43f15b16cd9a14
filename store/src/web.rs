//! What the web server reads and writes beyond runs and tasks: login sessions, the audit log,
//! scheduler heartbeats, the reads behind its pages (grid, recent runs, log tails, counts) and
//! the operator's actions that are not clears (cancel a run, mark a task).

use chrono::{DateTime, Utc};
use weir_model::TaskState;

use crate::db::{BeginWrite, with_pool};
use crate::user::UserRow;
use crate::{Result, Store, StoreError};

/// A login session found by its id.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Whose it is.
    pub user: UserRow,
    /// The token every state-changing form and cookie-authenticated API call must carry.
    pub csrf_token: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    /// Increasing id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub user_name: String,
    /// What: `trigger`, `backfill`, `clear`, `mark_success`, `mark_failed`, `cancel`, `pause`,
    /// `unpause`, `login`, `login_failed`, `logout`.
    pub action: String,
    /// On what: a DAG, run or task.
    pub target: String,
    /// The action's arguments (a JSON object, as text).
    pub detail: String,
}

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

/// A run in a short list (the DAG list's dots, the grid's columns).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunBrief {
    /// Run id.
    pub run_id: String,
    /// Run state.
    pub state: String,
    /// Logical date.
    pub logical_date: DateTime<Utc>,
    /// Run type.
    pub run_type: String,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// One task instance as the grid shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GridCell {
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// Map index (-1 when not mapped).
    pub map_index: i32,
    /// State.
    pub state: String,
    /// Try number.
    pub try_number: i32,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
}

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

/// How many rows are in each state.
pub type StateCounts = Vec<(String, i64)>;

impl Store {
    /// Stores a new session (by the SHA-256 of its id).
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_session(
        &self,
        id_sha256: &str,
        user: &str,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_sessions (id_sha256, user_name, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_sha256)
            .bind(user)
            .bind(csrf_token)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The live session with this id digest, with its user.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none or it expired; database failures.
    pub async fn session(&self, id_sha256: &str, now: DateTime<Utc>) -> Result<SessionRow> {
        let row: Option<(String, String, DateTime<Utc>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT user_name, csrf_token, expires_at FROM weir_sessions WHERE id_sha256 = $1 AND expires_at > $2",
            )
            .bind(id_sha256)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        let (name, csrf_token, expires_at) =
            row.ok_or_else(|| StoreError::NotFound("session".to_owned()))?;
        Ok(SessionRow {
            user: self.user(&name).await?,
            csrf_token,
            expires_at,
        })
    }

    /// Ends a session (logout), and drops every expired one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_session(&self, id_sha256: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM weir_sessions WHERE id_sha256 = $1 OR expires_at <= $2")
                .bind(id_sha256)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Appends to the audit log.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit(
        &self,
        user: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let detail = detail.to_string();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_audit (at, user_name, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(now)
            .bind(user)
            .bind(action)
            .bind(target)
            .bind(&detail)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The newest audit entries with an id below `before` (`i64::MAX` for the newest),
    /// `offset` skipped.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit_log(&self, before: i64, offset: i64, limit: i64) -> Result<Vec<AuditRow>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AuditRow>(
                "SELECT id, at, user_name, action, target, detail FROM weir_audit WHERE id < $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
            )
            .bind(before)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }))
    }

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

    /// A DAG's newest runs, `offset` skipped, newest logical date first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn recent_runs(
        &self,
        dag_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RunBrief>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, RunBrief>(
                "SELECT run_id, state, logical_date, run_type, started_at, ended_at FROM weir_runs WHERE dag_id = $1
                 ORDER BY logical_date DESC LIMIT $2 OFFSET $3",
            )
            .bind(dag_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The task instances of a DAG's newest `limit` runs, for the grid.
    ///
    /// # Errors
    /// Database failures.
    pub async fn grid_cells(&self, dag_id: &str, limit: i64) -> Result<Vec<GridCell>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, GridCell>(
                "SELECT t.run_id, t.task_id, t.map_index, t.state, t.try_number, t.started_at, t.ended_at
                 FROM (SELECT run_id FROM weir_runs WHERE dag_id = $1 ORDER BY logical_date DESC LIMIT $2) r
                 JOIN weir_task_instances t ON t.run_id = r.run_id",
            )
            .bind(dag_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

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
        let mut lines = with_pool!(self, |pool| {
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
            let (first, last) = with_pool!(self, |pool| {
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

impl Store {
    /// How many audit entries of `action` on `target` there are since `since` (e.g. failed
    /// logins of a name; the login rate limit itself counts `weir_login_attempts`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn count_audit(
        &self,
        action: &str,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM weir_audit WHERE action = $1 AND target = $2 AND at >= $3",
            )
            .bind(action)
            .bind(target)
            .bind(since)
            .fetch_one(pool)
            .await?
        }))
    }
}

impl Store {
    /// The DAG file's text as last read by a scheduler (None before migration 0006's first
    /// sync).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown DAG; database failures.
    pub async fn dag_source(&self, dag_id: &str) -> Result<Option<String>> {
        let row: Option<Option<String>> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT source FROM weir_dags WHERE dag_id = $1")
                .bind(dag_id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("DAG `{dag_id}`")))
    }
}
