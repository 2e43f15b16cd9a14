//! Task-instance transitions.
//!
//! Claims are leases, not long transactions: one conditional `UPDATE` marks instances
//! `running` with a worker id and a lease expiry; heartbeats extend the leases; the scheduler
//! reaps expired ones. Every later transition of a worker is guarded by
//! `state = 'running' AND worker_id = $w AND try_number = $t`, and zero rows affected means the
//! lease was lost: the worker must stop, because the instance may already run elsewhere.
//!
//! Over a thousand lines: claims and heartbeats, completions, and the scheduler's transitions
//! (queueing, reaping, clearing) are three nouns that the structural step (issue #15) splits
//! into modules, as a move of its own.

use chrono::{DateTime, Utc};
use weir_model::TaskState;

use crate::db::{BeginWrite, Db, SCHEDULER_CHANNEL, with_pool};
use crate::log::{NewLogLine, insert_log_lines};
use crate::notify::{Notification, insert_notifications};
use crate::{Result, Store, StoreError};

// Statements of the scheduler's and workers' hot paths, shared with `Store::explain_hot_path`
// so the test that they stay index-driven checks the very SQL that runs.
pub(crate) const POOL_USAGE_SQL: &str = "SELECT pool, COUNT(*) FROM weir_task_instances WHERE state IN ('queued', 'running') AND pool IS NOT NULL GROUP BY pool";
pub(crate) const DAG_USAGE_SQL: &str = "SELECT dag_id, COUNT(*) FROM weir_task_instances WHERE state IN ('queued', 'running') GROUP BY dag_id";
pub(crate) const NEXT_RETRY_DUE_SQL: &str =
    "SELECT MIN(due_at) FROM weir_task_instances WHERE state = 'up_for_retry'";
pub(crate) const EXPIRED_LEASES_WHERE: &str = "state = 'running' AND lease_expires_at < $1";
pub(crate) const DUE_RETRIES_WHERE: &str = "state = 'up_for_retry' AND due_at <= $1";
/// The Postgres claim's choice of rows (`$4` queues, `$5` limit).
pub(crate) const CLAIM_PICK_PG: &str = "SELECT id FROM weir_task_instances WHERE state = 'queued' AND queue = ANY($4) ORDER BY priority DESC, id LIMIT $5";

/// Puts a finished run back to `queued` (after a clear or a mark) so the scheduler looks at it again.
pub(crate) const REOPEN_RUN_SQL: &str = "UPDATE weir_runs SET state = 'queued', ended_at = NULL WHERE run_id = $1 AND state IN ('success', 'failed', 'cancelled')";

/// A stored task instance.
#[derive(Debug, Clone)]
pub struct TaskInstanceRow {
    /// Row id.
    pub id: i64,
    /// Run id.
    pub run_id: String,
    /// DAG id.
    pub dag_id: String,
    /// Task id.
    pub task_id: String,
    /// -1 unless it is one instance of a `foreach` task.
    pub map_index: i32,
    /// This instance's `foreach` item.
    pub map_item: Option<serde_json::Value>,
    /// State.
    pub state: TaskState,
    /// The try running or last run (0 before the first).
    pub try_number: i32,
    /// `retries + 1` (raised by a clear).
    pub max_tries: i32,
    /// Worker queue.
    pub queue: String,
    /// Pool.
    pub pool: Option<String>,
    /// Priority.
    pub priority: i32,
    /// When an `up_for_retry` instance may be queued again.
    pub due_at: Option<DateTime<Utc>>,
    /// When it was last queued.
    pub queued_at: Option<DateTime<Utc>>,
    /// When its last try started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last try ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The worker running (or that last ran) it.
    pub worker_id: Option<String>,
    /// Lease expiry while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Outputs of the last successful try (a JSON object).
    pub outputs: Option<serde_json::Value>,
    /// Why the last try failed.
    pub error: Option<String>,
    /// The try number at the instance's last clear (0 if never cleared): tries after it belong
    /// to the current series (a writing step adopts only their commits, see `weir_commits`).
    pub cleared_try: i32,
    /// The DAG version its latest try ran (set when a try is claimed; `None` before the
    /// first): a clear on the latest version moves the run, so tries of one run may differ.
    pub version_id: Option<i64>,
    /// Tries lost with their worker and given back (not counted against retries).
    pub lost_tries: i32,
}

impl TaskInstanceRow {
    /// Whether lines may still come to this try's log: it is the instance's current try and
    /// the instance is running (or queued: claimed and about to start).
    #[must_use]
    pub fn still_logging(&self, try_number: i32) -> bool {
        self.try_number == try_number
            && matches!(self.state, TaskState::Running | TaskState::Queued)
    }
}

#[derive(sqlx::FromRow)]
struct RawTask {
    id: i64,
    run_id: String,
    dag_id: String,
    task_id: String,
    map_index: i32,
    map_item: Option<String>,
    state: String,
    try_number: i32,
    max_tries: i32,
    queue: String,
    pool: Option<String>,
    priority: i32,
    due_at: Option<DateTime<Utc>>,
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    worker_id: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    outputs: Option<String>,
    error: Option<String>,
    cleared_try: i32,
    version_id: Option<i64>,
    lost_tries: i32,
}

impl TryFrom<RawTask> for TaskInstanceRow {
    type Error = StoreError;
    fn try_from(r: RawTask) -> Result<TaskInstanceRow> {
        let json = |s: Option<String>| s.map(|s| serde_json::from_str(&s)).transpose();
        Ok(TaskInstanceRow {
            state: TaskState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("task state `{}`", r.state)))?,
            map_item: json(r.map_item)?,
            outputs: json(r.outputs)?,
            id: r.id,
            run_id: r.run_id,
            dag_id: r.dag_id,
            task_id: r.task_id,
            map_index: r.map_index,
            cleared_try: r.cleared_try,
            version_id: r.version_id,
            lost_tries: r.lost_tries,
            try_number: r.try_number,
            max_tries: r.max_tries,
            queue: r.queue,
            pool: r.pool,
            priority: r.priority,
            due_at: r.due_at,
            queued_at: r.queued_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            worker_id: r.worker_id,
            lease_expires_at: r.lease_expires_at,
            error: r.error,
        })
    }
}

const TASK_COLUMNS: &str = "id, run_id, dag_id, task_id, map_index, map_item, state, try_number, max_tries, queue, pool, \
     priority, due_at, queued_at, started_at, ended_at, worker_id, lease_expires_at, outputs, error, cleared_try, version_id, lost_tries";

/// A heartbeat's lease extension of the tries a worker names (`$3`: an array on Postgres, a
/// JSON list on SQLite).
const HEARTBEAT_PG: &str = "UPDATE weir_task_instances SET lease_expires_at = $2
     WHERE worker_id = $1 AND state = 'running' AND id = ANY($3) RETURNING id";
const HEARTBEAT_SQLITE: &str = "UPDATE weir_task_instances SET lease_expires_at = $2
     WHERE worker_id = $1 AND state = 'running' AND id IN (SELECT value FROM json_each($3))
     RETURNING id";

/// How a try is taken back from its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reap {
    /// Its lease expired and it counts as a failed try.
    Failed,
    /// Its lease expired: lost, given back.
    Lost,
    /// Its worker is known dead: given back, without waiting for the lease.
    WorkerDead,
}

/// A claimed task instance: the row as it is now `running` under the caller's lease.
pub type ClaimedTask = TaskInstanceRow;

/// How a worker's try ended.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Task instance.
    pub ti_id: i64,
    /// The worker that holds the lease.
    pub worker_id: String,
    /// The try that ran.
    pub try_number: i32,
    /// `success`, `failed` or `up_for_retry`.
    pub state: TaskState,
    /// Outputs (a JSON object) on success.
    pub outputs: Option<serde_json::Value>,
    /// The failure, on failure.
    pub error: Option<String>,
    /// When an `up_for_retry` instance may run again.
    pub due_at: Option<DateTime<Utc>>,
    /// The try's last log lines, stored in the same transaction (kept even when the lease
    /// was lost: they are what the try printed).
    pub log: Vec<NewLogLine>,
    /// The try does not count (a sensor's check that found nothing yet: it goes back to
    /// `up_for_retry` with its try number as before).
    pub give_back_try: bool,
    /// Notifications to write if the completion is recorded (`on_retry`, `on_failure`).
    pub notify: Vec<Notification>,
    /// The scheduler has something to decide because of this try: it did not succeed, or
    /// tasks depend on it. Otherwise the scheduler is woken only when the run has instances
    /// waiting for a decision or none left unfinished (its periodic pass covers the rest).
    pub wake: bool,
}

impl Store {
    /// The task instances of a run, by task id and map index.
    ///
    /// # Errors
    /// Database failures.
    pub async fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstanceRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM weir_task_instances WHERE run_id = $1 ORDER BY task_id, map_index"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(sql))
                .bind(run_id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(TaskInstanceRow::try_from).collect()
    }

    /// One task instance.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such instance.
    pub async fn task_instance(&self, ti_id: i64) -> Result<TaskInstanceRow> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM weir_task_instances WHERE id = $1");
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(sql))
                .bind(ti_id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("task instance {ti_id}")))?
            .try_into()
    }

    /// Moves instances from one state to another, each only if it is still in `from`
    /// (scheduler decisions: scheduled → queued / skipped / upstream_failed, up_for_retry →
    /// queued). Returns how many moved. Wakes the workers when some were queued.
    ///
    /// # Errors
    /// Database failures.
    pub async fn transition_tasks(
        &self,
        ids: &[i64],
        from: TaskState,
        to: TaskState,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        const SET: &str = "UPDATE weir_task_instances SET state = $3,
                 queued_at = CASE WHEN $3 = 'queued' THEN $4 ELSE queued_at END,
                 ended_at = CASE WHEN $3 IN ('skipped', 'upstream_failed', 'removed', 'success', 'failed') THEN $4 ELSE ended_at END,
                 due_at = NULL";
        // One statement for the whole set: a fan-out queues a thousand instances at once.
        let moved = match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SET} WHERE id = ANY($1) AND state = $2"
            )))
            .bind(ids)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{SET} WHERE id IN (SELECT value FROM json_each($1)) AND state = $2"
                )))
                .bind(serde_json::to_string(ids)?)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                n
            }
        };
        if to == TaskState::Queued && moved > 0 {
            self.wake_workers().await;
        }
        Ok(moved)
    }

    /// `(task_id, map_index, outputs)` of the succeeded instances of `task_ids` in a run: the
    /// upstream outputs a try's templates may read.
    ///
    /// # Errors
    /// Database failures.
    pub async fn succeeded_outputs(
        &self,
        run_id: &str,
        task_ids: &[String],
    ) -> Result<Vec<(String, i32, Option<serde_json::Value>)>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, i32, Option<String>)> = match &self.db {
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT task_id, map_index, outputs FROM weir_task_instances WHERE run_id = $1 AND state = 'success' AND task_id = ANY($2)",
            )
            .bind(run_id)
            .bind(task_ids)
            .fetch_all(pool)
            .await?,
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT task_id, map_index, outputs FROM weir_task_instances
                 WHERE run_id = $1 AND state = 'success' AND task_id IN (SELECT value FROM json_each($2))",
            )
            .bind(run_id)
            .bind(serde_json::to_string(task_ids)?)
            .fetch_all(pool)
            .await?,
        };
        rows.into_iter()
            .map(|(t, m, o)| Ok((t, m, o.map(|o| serde_json::from_str(&o)).transpose()?)))
            .collect()
    }

    /// Fails a `scheduled` instance before it ran (a `when` or `foreach` template that does not
    /// render, a pool the configuration lacks), writing `notify` with the change. Returns whether
    /// it changed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn fail_scheduled(
        &self,
        id: i64,
        error: &str,
        notify: &[Notification],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let changed = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let changed = sqlx::query("UPDATE weir_task_instances SET state = 'failed', error = $2, ended_at = $3 WHERE id = $1 AND state = 'scheduled'")
                .bind(id)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 1 {
                insert_notifications!(tx, notify, now);
            }
            tx.commit().await?;
            changed
        });
        Ok(changed == 1)
    }

    /// Replaces the unexpanded instance (map index -1) of a `foreach` task by one `scheduled`
    /// instance per item. With no items, the task is `skipped` instead. Returns false if the
    /// task was expanded already.
    ///
    /// # Errors
    /// Database failures.
    pub async fn expand_mapped(
        &self,
        placeholder: &TaskInstanceRow,
        items: &[serde_json::Value],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let items_json: Vec<String> = items
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let gone = if items_json.is_empty() {
                sqlx::query(
                    "UPDATE weir_task_instances SET state = 'skipped', ended_at = $2 WHERE id = $1 AND state = 'scheduled' AND map_index = -1",
                )
                .bind(placeholder.id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                sqlx::query("DELETE FROM weir_task_instances WHERE id = $1 AND state = 'scheduled' AND map_index = -1")
                    .bind(placeholder.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            };
            if gone == 0 {
                return Ok(false);
            }
            let rows: Vec<(i32, &String)> = items_json
                .iter()
                .enumerate()
                .map(|(index, item)| (i32::try_from(index).unwrap_or(i32::MAX), item))
                .collect();
            // Batched: binds per statement stay far under SQLite's 32,766.
            for chunk in rows.chunks(1000) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO weir_task_instances (run_id, dag_id, task_id, map_index, map_item, state, max_tries, queue, pool, priority) ",
                );
                insert.push_values(chunk, |mut row, (index, item)| {
                    row.push_bind(&placeholder.run_id)
                        .push_bind(&placeholder.dag_id)
                        .push_bind(&placeholder.task_id)
                        .push_bind(*index)
                        .push_bind(*item)
                        .push_bind("scheduled")
                        .push_bind(placeholder.max_tries)
                        .push_bind(&placeholder.queue)
                        .push_bind(&placeholder.pool)
                        .push_bind(placeholder.priority);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Counts of `queued` and `running` instances per pool (pool usage is derived from states,
    /// never kept in a counter that could leak).
    ///
    /// # Errors
    /// Database failures.
    pub async fn pool_usage(&self) -> Result<Vec<(String, i64)>> {
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, (String, i64)>(
            POOL_USAGE_SQL
        )
        .fetch_all(pool)
        .await?))
    }

    /// Counts of `queued` and `running` instances per DAG (for `max_active_tasks`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn dag_task_usage(&self) -> Result<Vec<(String, i64)>> {
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, (String, i64)>(
            DAG_USAGE_SQL
        )
        .fetch_all(pool)
        .await?))
    }

    /// Claims up to `limit` queued instances of `queues` for `worker_id`, best priority first,
    /// starting their next try under a lease that expires at `lease_until`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn claim_tasks(
        &self,
        worker_id: &str,
        queues: &[String],
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedTask>> {
        if limit <= 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match &self.db {
            // One statement. The MATERIALIZED CTE picks at most `limit` queued rows exactly once,
            // locking them and skipping rows another worker's claim holds, so two workers never
            // take the same instance nor wait on each other. (A plain `id IN (SELECT … LIMIT …
            // FOR UPDATE SKIP LOCKED)` may be re-scanned by the planner and return more rows than
            // the limit: seen here as a worker claiming 8 instances with 4 slots.) The outer
            // `state = 'queued'` re-check keeps the claim safe under READ COMMITTED.
            Db::Postgres(pool) => {
                let sql = format!(
                    "WITH picked AS MATERIALIZED ({CLAIM_PICK_PG} FOR UPDATE SKIP LOCKED)
                     UPDATE weir_task_instances SET state = 'running', worker_id = $1, try_number = try_number + 1,
                         started_at = $2, ended_at = NULL, lease_expires_at = $3, error = NULL,
                         version_id = (SELECT r.version_id FROM weir_runs r WHERE r.run_id = weir_task_instances.run_id)
                     FROM picked
                     WHERE weir_task_instances.id = picked.id AND weir_task_instances.state = 'queued'
                     RETURNING {}",
                    TASK_COLUMNS.split(", ").map(|c| format!("weir_task_instances.{c}")).collect::<Vec<_>>().join(", ")
                );
                sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(sql))
                    .bind(worker_id)
                    .bind(now)
                    .bind(lease_until)
                    .bind(queues)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            // SQLite has one writer at a time (BEGIN IMMEDIATE), so the statement alone is atomic.
            Db::Sqlite(pool) => {
                let sql = format!(
                    "UPDATE weir_task_instances SET state = 'running', worker_id = $1, try_number = try_number + 1,
                         started_at = $2, ended_at = NULL, lease_expires_at = $3, error = NULL,
                         version_id = (SELECT r.version_id FROM weir_runs r WHERE r.run_id = weir_task_instances.run_id)
                     WHERE state = 'queued' AND id IN (
                         SELECT id FROM weir_task_instances
                         WHERE state = 'queued' AND queue IN (SELECT value FROM json_each($4))
                         ORDER BY priority DESC, id
                         LIMIT $5)
                     RETURNING {TASK_COLUMNS}"
                );
                let mut tx = pool.begin_write().await?;
                let rows = sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(sql))
                    .bind(worker_id)
                    .bind(now)
                    .bind(lease_until)
                    .bind(serde_json::to_string(queues)?)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
        };
        rows.into_iter().map(TaskInstanceRow::try_from).collect()
    }

    /// Gives back a claimed instance that the worker cannot run (it has no free slot): back to
    /// `queued`, its try not counted. Returns whether it changed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn release_claim(&self, ti: &ClaimedTask, worker_id: &str) -> Result<bool> {
        let changed = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE weir_task_instances SET state = 'queued', try_number = try_number - 1, lease_expires_at = NULL, started_at = NULL
                 WHERE id = $1 AND state = 'running' AND worker_id = $2 AND try_number = $3",
            )
            .bind(ti.id)
            .bind(worker_id)
            .bind(ti.try_number)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed > 0 {
            self.wake_workers().await;
        }
        Ok(changed == 1)
    }

    /// Ends a try, if the worker still holds the lease.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the instance is no longer running under this worker and
    /// try (it was reaped, cleared or cancelled); database failures.
    pub async fn complete_task(&self, c: &Completion, now: DateTime<Utc>) -> Result<()> {
        let recorded = self.complete_tasks(std::slice::from_ref(c), now).await?;
        if recorded.first() == Some(&true) {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(c.ti_id))
        }
    }

    /// Ends several tries at once (tries that finished together: one commit for all). Returns,
    /// per completion, whether it was recorded; `false`: the lease was lost (reaped, cleared,
    /// cancelled) and only its log lines were kept.
    ///
    /// # Errors
    /// Database failures (then nothing was recorded).
    pub async fn complete_tasks(&self, cs: &[Completion], now: DateTime<Utc>) -> Result<Vec<bool>> {
        if cs.is_empty() {
            return Ok(Vec::new());
        }
        let outputs: Vec<Option<String>> = cs
            .iter()
            .map(|c| c.outputs.as_ref().map(serde_json::to_string).transpose())
            .collect::<std::result::Result<_, _>>()?;
        // Per recorded try: its id, and whether the scheduler must look.
        let recorded: Vec<(i64, bool)> = match &self.db {
            // One statement: the new states, the tries' last log lines (of those still
            // leased) and the schedulers' wake-up, which `NOTIFY` delivers at commit.
            Db::Postgres(pool) => {
                // The log lines of all tries, as parallel arrays for `unnest`.
                let (mut log_ids, mut log_tries, mut streams, mut lines, mut ats) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                // The notifications likewise.
                let (mut note_ids, mut notifiers, mut note_runs, mut payloads) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for c in cs {
                    for n in &c.notify {
                        note_ids.push(c.ti_id);
                        notifiers.push(n.notifier.as_str());
                        note_runs.push(n.notice.run_id.as_str());
                        payloads.push(serde_json::to_string(&n.notice)?);
                    }
                }
                for c in cs {
                    for l in &c.log {
                        log_ids.push(c.ti_id);
                        log_tries.push(c.try_number);
                        streams.push(l.stream);
                        lines.push(l.text.as_str());
                        ats.push(l.at);
                    }
                }
                sqlx::query_as::<_, (i64, bool)>(
                    "WITH c AS (
                         SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $16::int[], $21::bool[])
                             AS c(id, worker_id, try_number, state, outputs, error, due_at, give_back, wake)),
                     done AS (
                         UPDATE weir_task_instances t SET state = c.state, ended_at = $8,
                             outputs = COALESCE(c.outputs, t.outputs), error = c.error, due_at = c.due_at,
                             lease_expires_at = NULL, try_number = t.try_number - c.give_back
                         FROM c
                         WHERE t.id = c.id AND t.state = 'running' AND t.worker_id = c.worker_id
                             AND t.try_number = c.try_number
                         RETURNING t.id, t.run_id, c.wake),
                     -- The statement sees the table as before it: the tries it ends are
                     -- left out of the unfinished ones by id.
                     needs AS (
                         SELECT d.id, d.wake
                             OR EXISTS (SELECT 1 FROM weir_task_instances s
                                        WHERE s.run_id = d.run_id AND s.state = 'scheduled')
                             OR NOT EXISTS (SELECT 1 FROM weir_task_instances u
                                            WHERE u.run_id = d.run_id
                                              AND u.state IN ('scheduled', 'queued', 'running', 'up_for_retry')
                                              AND u.id NOT IN (SELECT id FROM done)) AS wake
                         FROM done d),
                     logged AS (
                         INSERT INTO weir_task_logs (ti_id, try_number, stream, line, at)
                         SELECT l.ti_id, l.try_number, l.stream, l.line, l.at
                         FROM unnest($9::bigint[], $10::int[], $11::text[], $12::text[], $13::timestamptz[])
                             WITH ORDINALITY AS l(ti_id, try_number, stream, line, at, n)
                         WHERE l.ti_id IN (SELECT id FROM done)
                         ORDER BY l.n),
                     noted AS (
                         INSERT INTO weir_notifications (notifier, run_id, payload, created_at, next_attempt_at)
                         SELECT n.notifier, n.run_id, n.payload, $8, $8
                         FROM unnest($17::bigint[], $18::text[], $19::text[], $20::text[])
                             WITH ORDINALITY AS n(ti_id, notifier, run_id, payload, k)
                         WHERE n.ti_id IN (SELECT id FROM done)
                         ORDER BY n.k),
                     woken AS (SELECT pg_notify($14, $15) WHERE EXISTS (SELECT 1 FROM needs WHERE wake))
                     SELECT id, wake FROM needs, (SELECT count(*) FROM woken) AS w",
                )
                .bind(cs.iter().map(|c| c.ti_id).collect::<Vec<_>>())
                .bind(cs.iter().map(|c| c.worker_id.as_str()).collect::<Vec<_>>())
                .bind(cs.iter().map(|c| c.try_number).collect::<Vec<_>>())
                .bind(cs.iter().map(|c| c.state.as_str()).collect::<Vec<_>>())
                .bind(&outputs)
                .bind(cs.iter().map(|c| c.error.as_deref()).collect::<Vec<_>>())
                .bind(cs.iter().map(|c| c.due_at).collect::<Vec<_>>())
                .bind(now)
                .bind(log_ids)
                .bind(log_tries)
                .bind(streams)
                .bind(lines)
                .bind(ats)
                .bind(SCHEDULER_CHANNEL)
                .bind(self.notify_origin())
                .bind(cs.iter().map(|c| i32::from(c.give_back_try)).collect::<Vec<_>>())
                .bind(note_ids)
                .bind(notifiers)
                .bind(note_runs)
                .bind(payloads)
                .bind(cs.iter().map(|c| c.wake).collect::<Vec<_>>())
                .fetch_all(pool)
                .await?
            }
            // One transaction, one commit for all.
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let mut recorded = Vec::new();
                let mut runs = Vec::new();
                for (c, outputs) in cs.iter().zip(&outputs) {
                    let run_id = sqlx::query_scalar::<_, String>(
                        "UPDATE weir_task_instances SET state = $4, ended_at = $5, outputs = COALESCE($6, outputs), error = $7,
                             due_at = $8, lease_expires_at = NULL, try_number = try_number - $9
                         WHERE id = $1 AND state = 'running' AND worker_id = $2 AND try_number = $3
                         RETURNING run_id",
                    )
                    .bind(c.ti_id)
                    .bind(&c.worker_id)
                    .bind(c.try_number)
                    .bind(c.state.as_str())
                    .bind(now)
                    .bind(outputs)
                    .bind(&c.error)
                    .bind(c.due_at)
                    .bind(i32::from(c.give_back_try))
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(run_id) = run_id {
                        insert_log_lines!(tx, c.ti_id, c.try_number, c.log);
                        insert_notifications!(tx, c.notify, now);
                        recorded.push((c.ti_id, c.wake));
                        if !c.wake && !runs.contains(&run_id) {
                            runs.push(run_id);
                        }
                    }
                }
                // This transaction sees its own changes.
                let mut run_needs = false;
                for run_id in runs {
                    run_needs |= sqlx::query_scalar::<_, bool>(
                        "SELECT EXISTS (SELECT 1 FROM weir_task_instances WHERE run_id = $1 AND state = 'scheduled')
                             OR NOT EXISTS (SELECT 1 FROM weir_task_instances WHERE run_id = $1
                                            AND state IN ('scheduled', 'queued', 'running', 'up_for_retry'))",
                    )
                    .bind(&run_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if run_needs {
                        break;
                    }
                }
                tx.commit().await?;
                if run_needs {
                    for r in &mut recorded {
                        r.1 = true;
                    }
                }
                recorded
            }
        };
        let mut out = Vec::with_capacity(cs.len());
        for c in cs {
            let ok = recorded.iter().any(|(id, _)| *id == c.ti_id);
            if !ok {
                // The outcome is dropped, but what the try printed is kept.
                self.append_logs(c.ti_id, c.try_number, &c.log).await?;
            }
            out.push(ok);
        }
        if recorded.iter().any(|(_, wake)| *wake) {
            self.wake_scheduler_here();
        }
        Ok(out)
    }

    /// Extends the leases of the tries `running` (those the worker is running now) to
    /// `lease_until` and returns the ones it still holds: a try missing from the answer was
    /// taken away (reaped, cleared) and must be stopped. Only the tries named are extended: a
    /// row left `running` under this worker's id that it does not run (a claim whose answer
    /// was lost, an outcome it gave up recording) keeps its lease ending, so the scheduler
    /// reaps it instead of it being held forever.
    ///
    /// # Errors
    /// Database failures.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        running: &[i64],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        const BEAT: &str = "UPDATE weir_workers SET heartbeat_at = $2 WHERE worker_id = $1";
        let held = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                sqlx::query(BEAT)
                    .bind(worker_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let held: Vec<i64> = sqlx::query_scalar(HEARTBEAT_PG)
                    .bind(worker_id)
                    .bind(lease_until)
                    .bind(running)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                held
            }
            Db::Sqlite(pool) => {
                let ids = serde_json::to_string(running)?;
                let mut tx = pool.begin_write().await?;
                sqlx::query(BEAT)
                    .bind(worker_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let held: Vec<i64> = sqlx::query_scalar(HEARTBEAT_SQLITE)
                    .bind(worker_id)
                    .bind(lease_until)
                    .bind(&ids)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                held
            }
        };
        Ok(held)
    }

    /// Running instances whose lease expired before `now`: their worker is presumed dead.
    ///
    /// # Errors
    /// Database failures.
    pub async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<TaskInstanceRow>> {
        self.task_rows_at(EXPIRED_LEASES_WHERE, "id", now).await
    }

    /// Task instances matching `filter` (whose `$1` is `now`), in `order`.
    async fn task_rows_at(
        &self,
        filter: &str,
        order: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskInstanceRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM weir_task_instances WHERE {filter} ORDER BY {order}"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(TaskInstanceRow::try_from).collect()
    }

    /// Fails the try of an instance whose lease expired (`to` is `up_for_retry` with `due_at`,
    /// or `failed`), only if it is still that try, running, with an expired lease, writing
    /// `notify` with the change. Returns whether it changed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn reap_expired(
        &self,
        ti: &TaskInstanceRow,
        to: TaskState,
        due_at: Option<DateTime<Utc>>,
        error: &str,
        notify: &[Notification],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.reap(ti, to, due_at, error, notify, Reap::Failed, now)
            .await
    }

    /// Takes back a try whose worker is gone and gives it back: the instance is retried at
    /// once and one more try is allowed, so the lost try does not use up the task's retries.
    /// The try's lease must have expired, unless `worker_dead` (its process or session is
    /// known gone).
    ///
    /// # Errors
    /// Database failures.
    pub async fn reap_lost(
        &self,
        ti: &TaskInstanceRow,
        error: &str,
        worker_dead: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let how = if worker_dead {
            Reap::WorkerDead
        } else {
            Reap::Lost
        };
        self.reap(ti, TaskState::UpForRetry, Some(now), error, &[], how, now)
            .await
    }

    /// The running tries of a worker.
    ///
    /// # Errors
    /// Database failures.
    pub async fn running_of_worker(&self, worker_id: &str) -> Result<Vec<TaskInstanceRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM weir_task_instances WHERE worker_id = $1 AND state = 'running' ORDER BY id"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(sql))
                .bind(worker_id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(TaskInstanceRow::try_from).collect()
    }

    #[allow(clippy::too_many_arguments)]
    async fn reap(
        &self,
        ti: &TaskInstanceRow,
        to: TaskState,
        due_at: Option<DateTime<Utc>>,
        error: &str,
        notify: &[Notification],
        how: Reap,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let give_back = how != Reap::Failed;
        let changed = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE weir_task_instances SET state = $3, due_at = $4, error = $5, ended_at = $6, lease_expires_at = NULL,
                     max_tries = max_tries + $7, lost_tries = lost_tries + $7
                 WHERE id = $1 AND try_number = $2 AND state = 'running' AND (lease_expires_at < $6 OR $8)",
            )
            .bind(ti.id)
            .bind(ti.try_number)
            .bind(to.as_str())
            .bind(due_at)
            .bind(error)
            .bind(now)
            .bind(i32::from(give_back))
            .bind(how == Reap::WorkerDead)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                insert_notifications!(tx, notify, now);
            }
            tx.commit().await?;
            changed
        });
        Ok(changed == 1)
    }

    /// `up_for_retry` instances whose due time has come.
    ///
    /// # Errors
    /// Database failures.
    pub async fn due_retries(&self, now: DateTime<Utc>) -> Result<Vec<TaskInstanceRow>> {
        self.task_rows_at(DUE_RETRIES_WHERE, "due_at, id", now)
            .await
    }

    /// The earliest due time of `up_for_retry` instances (when the scheduler must look again).
    ///
    /// # Errors
    /// Database failures.
    pub async fn next_retry_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar::<
            _,
            Option<DateTime<Utc>>,
        >(NEXT_RETRY_DUE_SQL)
        .fetch_one(pool)
        .await?))
    }

    /// Resets instances so the scheduler runs them again: each goes back to `scheduled` with
    /// `max_tries` raised to allow a full set of tries (`extra_tries` each); a finished run
    /// goes back to `queued`. Running instances are reset too: their worker loses its lease
    /// and stops them at its next heartbeat. Returns how many instances were reset.
    ///
    /// # Errors
    /// Database failures.
    pub async fn clear_tasks(&self, run_id: &str, items: &[(i64, i32)]) -> Result<u64> {
        let mut cleared = 0;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for (id, extra_tries) in items {
                cleared += sqlx::query(
                    "UPDATE weir_task_instances SET state = 'scheduled', max_tries = try_number + $3, cleared_try = try_number, due_at = NULL,
                         queued_at = NULL, started_at = NULL, ended_at = NULL, lease_expires_at = NULL, error = NULL, outputs = NULL
                     WHERE id = $1 AND run_id = $2",
                )
                .bind(id)
                .bind(run_id)
                .bind(extra_tries)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            if cleared > 0 {
                sqlx::query(REOPEN_RUN_SQL)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        if cleared > 0 {
            self.wake_scheduler().await;
        }
        Ok(cleared)
    }
}
