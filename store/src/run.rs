//! DAG runs: created with all their task instances in one transaction, idempotently on
//! `(dag_id, logical_date)`, for cron ticks, catchup, backfill and manual triggers alike.

use chrono::{DateTime, SecondsFormat, Utc};
use weir_model::{RunState, RunType};

use crate::db::{BeginWrite, Db, with_pool, with_read_pool};
use crate::notify::{Notification, insert_notifications};
use crate::{Result, Store, StoreError};

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// DAG id.
    pub dag_id: String,
    /// The DAG version the run pins.
    pub version_id: i64,
    /// Why it exists.
    pub run_type: RunType,
    /// Its logical date (`ds`): the data interval's start for scheduled and backfill runs.
    pub logical_date: DateTime<Utc>,
    /// Data interval start.
    pub data_interval_start: DateTime<Utc>,
    /// Data interval end.
    pub data_interval_end: DateTime<Utc>,
    /// Params with overrides applied (a JSON object).
    pub params: serde_json::Value,
    /// The DAG's IANA time zone: its dates are rendered in it.
    pub timezone: String,
    /// What made it (a run from assets or files): the events or objects, a JSON list.
    pub triggered_by: Option<serde_json::Value>,
    /// The task instances to create with it.
    pub tasks: Vec<NewTaskInstance>,
}

/// A task instance created with its run.
#[derive(Debug, Clone)]
pub struct NewTaskInstance {
    /// Task id.
    pub task_id: String,
    /// `retries + 1`.
    pub max_tries: i32,
    /// Worker queue.
    pub queue: String,
    /// Pool.
    pub pool: Option<String>,
    /// Priority.
    pub priority: i32,
}

/// A stored run.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Run id: `<dag_id>__<logical date>`.
    pub run_id: String,
    /// DAG id.
    pub dag_id: String,
    /// Pinned DAG version.
    pub version_id: i64,
    /// Why it exists.
    pub run_type: RunType,
    /// State.
    pub state: RunState,
    /// Logical date.
    pub logical_date: DateTime<Utc>,
    /// Data interval start.
    pub data_interval_start: DateTime<Utc>,
    /// Data interval end.
    pub data_interval_end: DateTime<Utc>,
    /// Params (a JSON object).
    pub params: serde_json::Value,
    /// The DAG's IANA time zone when the run was created (its `ds` is a day in it).
    pub timezone: String,
    /// What made it (a run from assets or files): the events or objects, a JSON list.
    pub triggered_by: Option<serde_json::Value>,
    /// When it was found past its DAG's `deadline`, if it was.
    pub deadline_missed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Went running.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub ended_at: Option<DateTime<Utc>>,
}

impl RunRow {
    /// The run's time zone (UTC for a name this build does not know).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Tz::UTC)
    }

    /// `YYYY-MM-DD` of the logical date in the run's time zone (`ds`).
    pub fn ds(&self) -> String {
        self.logical_date
            .with_timezone(&self.tz())
            .format("%Y-%m-%d")
            .to_string()
    }
}

/// An unfinished run with what the scheduler needs to know whether to evaluate it.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    /// The run.
    pub run: RunRow,
    /// Some instance is `scheduled` (waits for a decision).
    pub any_scheduled: bool,
    /// Some instance is not finished.
    pub any_unfinished: bool,
    /// When the run's earliest `up_for_retry` instance may run again.
    pub next_retry_due: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RawActiveRun {
    #[sqlx(flatten)]
    run: RawRun,
    any_scheduled: bool,
    any_unfinished: bool,
    next_retry_due: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RawRun {
    run_id: String,
    dag_id: String,
    version_id: i64,
    run_type: String,
    state: String,
    logical_date: DateTime<Utc>,
    data_interval_start: DateTime<Utc>,
    data_interval_end: DateTime<Utc>,
    params: String,
    timezone: String,
    triggered_by: Option<String>,
    deadline_missed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
}

impl TryFrom<RawRun> for RunRow {
    type Error = StoreError;
    fn try_from(r: RawRun) -> Result<RunRow> {
        Ok(RunRow {
            run_type: RunType::parse(&r.run_type)
                .ok_or_else(|| StoreError::Corrupt(format!("run type `{}`", r.run_type)))?,
            state: RunState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("run state `{}`", r.state)))?,
            params: serde_json::from_str(&r.params)?,
            triggered_by: r
                .triggered_by
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            deadline_missed_at: r.deadline_missed_at,
            run_id: r.run_id,
            dag_id: r.dag_id,
            version_id: r.version_id,
            logical_date: r.logical_date,
            data_interval_start: r.data_interval_start,
            data_interval_end: r.data_interval_end,
            timezone: r.timezone,
            created_at: r.created_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
        })
    }
}

/// Unfinished runs, oldest logical date first: the scheduler's work list, read on every pass
/// (shared with `Store::explain_hot_path`). Each comes with what decides whether it needs
/// evaluating, so a pass with nothing to decide is this one statement: whether any instance
/// waits for a decision, whether any is unfinished (index probes on `weir_ti_unfinished`),
/// and its next retry's due time (an `up_for_retry` instance always belongs to an unfinished
/// run).
pub(crate) const ACTIVE_RUNS_SQL: &str = "SELECT r.run_id, r.dag_id, r.version_id, r.run_type, r.state, r.logical_date,
         r.data_interval_start, r.data_interval_end, r.params, r.timezone, r.triggered_by, r.deadline_missed_at, r.created_at, r.started_at,
         r.ended_at,
         EXISTS (SELECT 1 FROM weir_task_instances t WHERE t.run_id = r.run_id AND t.state = 'scheduled') AS any_scheduled,
         EXISTS (SELECT 1 FROM weir_task_instances t WHERE t.run_id = r.run_id
                 AND t.state IN ('scheduled', 'queued', 'running', 'up_for_retry')) AS any_unfinished,
         (SELECT MIN(t.due_at) FROM weir_task_instances t WHERE t.run_id = r.run_id AND t.state = 'up_for_retry') AS next_retry_due
     FROM weir_runs r WHERE r.state IN ('queued', 'running')
     ORDER BY r.logical_date, r.run_id";
pub(crate) const LAST_SCHEDULED_SQL: &str =
    "SELECT MAX(logical_date) FROM weir_runs WHERE dag_id = $1 AND run_type = 'scheduled'";

const RUN_COLUMNS: &str = "run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start, \
     data_interval_end, params, timezone, triggered_by, deadline_missed_at, created_at, started_at, ended_at";

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this DAG's.
    pub dag_id: Option<String>,
    /// Only in this state.
    pub state: Option<RunState>,
    /// At most this many, newest logical date first.
    pub limit: i64,
    /// After skipping this many.
    pub offset: i64,
}

/// What moving a run to another DAG version changes in it.
#[derive(Debug, Clone, Default)]
pub struct VersionMove {
    /// Instances to create for tasks the new version adds (`scheduled`).
    pub add: Vec<NewTaskInstance>,
    /// Tasks the new version no longer has: their instances become `removed` (unless running).
    pub remove: Vec<String>,
}

/// The id of a DAG's run at a logical date: readable, and unique because `(dag_id,
/// logical_date)` is.
pub fn run_id_for(dag_id: &str, logical_date: DateTime<Utc>) -> String {
    format!(
        "{dag_id}__{}",
        logical_date.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    )
}

impl Store {
    /// Moves a run to DAG version `version_id` (a clear on the latest version): the run pins
    /// it from now on, tasks it adds get instances, tasks it dropped are `removed`. Tries
    /// already made keep the version they ran (`TaskInstanceRow::version_id`, and their log).
    ///
    /// # Errors
    /// Database failures.
    pub async fn move_run_to_version(
        &self,
        run_id: &str,
        dag_id: &str,
        version_id: i64,
        change: &VersionMove,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE weir_runs SET version_id = $2 WHERE run_id = $1")
                .bind(run_id)
                .bind(version_id)
                .execute(&mut *tx)
                .await?;
            for t in &change.add {
                sqlx::query(
                    "INSERT INTO weir_task_instances (run_id, dag_id, task_id, map_index, state, max_tries, queue, pool, priority)
                     VALUES ($1, $2, $3, -1, 'scheduled', $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(run_id)
                .bind(dag_id)
                .bind(&t.task_id)
                .bind(t.max_tries)
                .bind(&t.queue)
                .bind(&t.pool)
                .bind(t.priority)
                .execute(&mut *tx)
                .await?;
            }
            for task_id in &change.remove {
                sqlx::query(
                    "UPDATE weir_task_instances SET state = 'removed', due_at = NULL
                     WHERE run_id = $1 AND task_id = $2 AND state <> 'running'",
                )
                .bind(run_id)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Creates a run with its task instances (all `scheduled`), unless the DAG already has a
    /// run at that logical date: then nothing changes and `None` is returned.
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_run(&self, new: &NewRun, now: DateTime<Utc>) -> Result<Option<RunRow>> {
        self.create_run_consuming(new, &[], now).await
    }

    /// Creates a run like [`Store::create_run`] and, in the same transaction, takes the asset
    /// updates `events` off the DAG's queue: if one of them is gone (another scheduler made a
    /// run of it), nothing is created and `None` is returned.
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_run_consuming(
        &self,
        new: &NewRun,
        events: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Option<RunRow>> {
        self.create_run_taking(new, events, &[], now).await
    }

    /// Creates a run like [`Store::create_run`] for the objects `files` (location, version)
    /// that arrived where the DAG watches, recording them in the same transaction: if one of
    /// them already made a run (another scheduler, an earlier pass), nothing is created and
    /// `None` is returned.
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_run_for_files(
        &self,
        new: &NewRun,
        files: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Option<RunRow>> {
        self.create_run_taking(new, &[], files, now).await
    }

    /// The objects (location, version) that made runs of `dag_id`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn triggered_files(
        &self,
        dag_id: &str,
    ) -> Result<std::collections::HashSet<(String, String)>> {
        let rows: Vec<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT location, version FROM weir_file_triggers WHERE dag_id = $1")
                .bind(dag_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().collect())
    }

    async fn create_run_taking(
        &self,
        new: &NewRun,
        events: &[i64],
        files: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<Option<RunRow>> {
        let run_id = run_id_for(&new.dag_id, new.logical_date);
        let params = serde_json::to_string(&new.params)?;
        let triggered_by = new
            .triggered_by
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let created = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let mut consumed = 0;
            for chunk in events.chunks(1000) {
                let mut delete =
                    sqlx::QueryBuilder::new("DELETE FROM weir_asset_queue WHERE dag_id = ");
                delete.push_bind(&new.dag_id).push(" AND event_id IN (");
                let mut ids = delete.separated(", ");
                for id in chunk {
                    ids.push_bind(*id);
                }
                delete.push(")");
                consumed += delete.build().execute(&mut *tx).await?.rows_affected();
            }
            if consumed != events.len() as u64 {
                tx.rollback().await?;
                return Ok(None);
            }
            for (location, version) in files {
                let taken = sqlx::query(
                    "INSERT INTO weir_file_triggers (dag_id, location, version, run_id, seen_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&new.dag_id)
                .bind(location)
                .bind(version)
                .bind(&run_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if taken == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
            let inserted = sqlx::query(
                "INSERT INTO weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                     data_interval_end, params, created_at, timezone, triggered_by)
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&run_id)
            .bind(&new.dag_id)
            .bind(new.version_id)
            .bind(new.run_type.as_str())
            .bind(new.logical_date)
            .bind(new.data_interval_start)
            .bind(new.data_interval_end)
            .bind(&params)
            .bind(now)
            .bind(&new.timezone)
            .bind(&triggered_by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 && !(events.is_empty() && files.is_empty()) {
                tx.rollback().await?;
                return Ok(None);
            }
            if inserted == 1 {
                // Batched: binds per statement stay far under SQLite's 32,766.
                for chunk in new.tasks.chunks(1000) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO weir_task_instances (run_id, dag_id, task_id, map_index, state, max_tries, queue, pool, priority) ",
                    );
                    insert.push_values(chunk, |mut row, t| {
                        row.push_bind(&run_id)
                            .push_bind(&new.dag_id)
                            .push_bind(&t.task_id)
                            .push_bind(-1_i32)
                            .push_bind("scheduled")
                            .push_bind(t.max_tries)
                            .push_bind(&t.queue)
                            .push_bind(&t.pool)
                            .push_bind(t.priority);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            inserted == 1
        });
        if !created {
            return Ok(None);
        }
        self.wake_scheduler().await;
        self.run(&run_id).await.map(Some)
    }

    /// One run.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such run.
    pub async fn run(&self, run_id: &str) -> Result<RunRow> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM weir_runs WHERE run_id = $1");
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, RawRun>(sqlx::AssertSqlSafe(sql))
                .bind(run_id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("run `{run_id}`")))?
            .try_into()
    }

    /// The latest logical date of any run of a DAG.
    ///
    /// # Errors
    /// Database failures.
    pub async fn latest_logical_date(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT MAX(logical_date) FROM weir_runs WHERE dag_id = $1",
            )
            .bind(dag_id)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The run of a DAG at a logical date, if any.
    ///
    /// # Errors
    /// Database failures.
    pub async fn run_at(
        &self,
        dag_id: &str,
        logical_date: DateTime<Utc>,
    ) -> Result<Option<RunRow>> {
        match self.run(&run_id_for(dag_id, logical_date)).await {
            Ok(r) => Ok(Some(r)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs matching `filter`, newest logical date first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM weir_runs
             WHERE ($1 IS NULL OR dag_id = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY logical_date DESC, run_id LIMIT $3 OFFSET $4"
        );
        let limit = if filter.limit > 0 { filter.limit } else { 100 };
        let rows = with_read_pool!(self, |pool| {
            sqlx::query_as::<_, RawRun>(sqlx::AssertSqlSafe(sql))
                .bind(filter.dag_id.as_deref())
                .bind(filter.state.map(RunState::as_str))
                .bind(limit)
                .bind(filter.offset.max(0))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(RunRow::try_from).collect()
    }

    /// A DAG's runs whose logical dates lie in `[from, to]`, oldest first: as many rows read as
    /// runs in the span (the `(dag_id, logical_date)` index), however long the history.
    ///
    /// # Errors
    /// Database failures.
    pub async fn runs_between(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM weir_runs
             WHERE dag_id = $1 AND logical_date >= $2 AND logical_date <= $3
             ORDER BY logical_date, run_id"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, RawRun>(sqlx::AssertSqlSafe(sql))
                .bind(dag_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(RunRow::try_from).collect()
    }

    /// Unfinished (queued or running) runs per DAG id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn unfinished_runs_by_dag(&self) -> Result<std::collections::HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT dag_id, COUNT(*) FROM weir_runs WHERE state IN ('queued', 'running') GROUP BY dag_id"
        )
        .fetch_all(pool)
        .await?
        });
        Ok(rows.into_iter().collect())
    }

    /// How many runs `filter` matches (ignoring its limit and offset).
    ///
    /// # Errors
    /// Database failures.
    pub async fn count_runs(&self, filter: &RunFilter) -> Result<i64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM weir_runs WHERE ($1 IS NULL OR dag_id = $1) AND ($2 IS NULL OR state = $2)"
        )
        .bind(filter.dag_id.as_deref())
        .bind(filter.state.map(RunState::as_str))
        .fetch_one(pool)
        .await?
        }))
    }

    /// Unfinished runs (queued or running), oldest logical date first: the scheduler's work.
    ///
    /// # Errors
    /// Database failures.
    pub async fn active_runs(&self) -> Result<Vec<ActiveRun>> {
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, RawActiveRun>(
            ACTIVE_RUNS_SQL
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|r| {
                Ok(ActiveRun {
                    run: RunRow::try_from(r.run)?,
                    any_scheduled: r.any_scheduled,
                    any_unfinished: r.any_unfinished,
                    next_retry_due: r.next_retry_due,
                })
            })
            .collect()
    }

    /// The latest logical date of a DAG's scheduled runs (where cron scheduling resumes).
    ///
    /// # Errors
    /// Database failures.
    pub async fn last_scheduled_logical_date(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar::<
            _,
            Option<DateTime<Utc>>,
        >(LAST_SCHEDULED_SQL)
        .bind(dag_id)
        .fetch_one(pool)
        .await?))
    }

    /// Moves a run from `from` to `to` (setting `started_at` or `ended_at` as fits), writing
    /// `notify` with the change. Returns false when the run was no longer in `from` (someone
    /// else moved it).
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_run_state(
        &self,
        run_id: &str,
        from: RunState,
        to: RunState,
        notify: &[Notification],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        // The same statement on either backend, in or out of a transaction.
        macro_rules! set {
            () => {
                sqlx::query(
                    "UPDATE weir_runs SET state = $3,
                         started_at = CASE WHEN $3 = 'running' AND started_at IS NULL THEN $4 ELSE started_at END,
                         ended_at = CASE WHEN $3 IN ('success', 'failed', 'cancelled') THEN $4 ELSE NULL END
                     WHERE run_id = $1 AND state = $2",
                )
                .bind(run_id)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(now)
            };
        }
        // Nothing to write beside it: one statement on Postgres, not a transaction's three
        // round trips (a scheduler starts and ends every run this way).
        if let (Db::Postgres(pool), true) = (&self.db, notify.is_empty()) {
            return Ok(set!().execute(pool).await?.rows_affected() == 1);
        }
        let changed = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let changed = set!().execute(&mut *tx).await?.rows_affected();
            if changed == 1 {
                insert_notifications!(tx, notify, now);
            }
            tx.commit().await?;
            changed
        });
        Ok(changed == 1)
    }

    /// Deletes up to `batch` finished runs that ended before `cutoff`, with their task
    /// instances and logs (cascade). Returns how many runs went; call until 0. Small batches
    /// keep each transaction short while a scheduler and workers use the database.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_runs_ended_before(&self, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        let deleted = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "DELETE FROM weir_runs WHERE run_id IN (
                     SELECT run_id FROM weir_runs
                     WHERE ended_at IS NOT NULL AND ended_at < $1 AND state IN ('success', 'failed', 'cancelled')
                     ORDER BY ended_at LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            n
        });
        Ok(deleted)
    }

    /// Number of running runs per DAG (for `max_active_runs`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn running_run_count(&self, dag_id: &str) -> Result<i64> {
        const SQL: &str = "SELECT COUNT(*) FROM weir_runs WHERE dag_id = $1 AND state = 'running'";
        Ok(with_pool!(self, |pool| sqlx::query_scalar::<_, i64>(SQL)
            .bind(dag_id)
            .fetch_one(pool)
            .await?))
    }
}
