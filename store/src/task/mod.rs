//! Task-instance transitions.
//!
//! Claims are leases, not long transactions: one conditional `UPDATE` marks instances
//! `running` with a worker id and a lease expiry; heartbeats extend the leases; the scheduler
//! reaps expired ones. Every later transition of a worker is guarded by
//! `state = 'running' AND worker_id = $w AND try_number = $t`, and zero rows affected means the
//! lease was lost: the worker must stop, because the instance may already run elsewhere.
//!
//! # Layout
//! - this module: the row ([`TaskInstanceRow`]) and the reads every process makes;
//! - `lease`: the worker's side (claims, heartbeats, completions);
//! - `schedule`: the scheduler's side (queueing, expansion, retries, reaping, clearing).

use chrono::{DateTime, Utc};
use weir_model::TaskState;

use crate::db::{BeginWrite, Db, SCHEDULER_CHANNEL, with_pool};
use crate::log::{NewLogLine, insert_log_lines};
use crate::notify::{Notification, insert_notifications};
use crate::{Result, Store, StoreError};

// Statements of the scheduler's and workers' hot paths, shared with `Store::explain_hot_path`
// so the test that they stay index-driven checks the very SQL that runs.
pub(crate) const NEXT_RETRY_DUE_SQL: &str =
    "SELECT MIN(due_at) FROM weir_task_instances WHERE state = 'up_for_retry'";
pub(crate) const EXPIRED_LEASES_WHERE: &str = "state = 'running' AND lease_expires_at < $1";
/// In the order of the partial index the filter reads (ordered by `id` alone, SQLite walks the
/// whole table in row order instead: 1.6 s a pass over 10 M finished instances).
pub(crate) const EXPIRED_LEASES_ORDER: &str = "lease_expires_at, id";
pub(crate) const DUE_RETRIES_WHERE: &str = "state = 'up_for_retry' AND due_at <= $1";
pub(crate) const DUE_RETRIES_ORDER: &str = "due_at, id";

/// Writes one limit (`$1` kind, `$2` name, `$3` slots); an unchanged row is not rewritten.
pub(crate) const SET_LIMIT_SQL: &str =
    "INSERT INTO weir_limits (kind, name, slots) VALUES ($1, $2, $3)
     ON CONFLICT (kind, name) DO UPDATE SET slots = $3 WHERE weir_limits.slots <> $3";

/// How many rows a claim for `limit` instances reads at most, in priority order: `limit` times
/// this. Reading only the first rows keeps a claim's cost independent of the backlog (a fan-out
/// of thousands queued); it can only take fewer than it could (when the rows it read belong to
/// DAGs or pools with less room than `limit`), never more, and then says so ([`Claim::more`]).
pub(crate) const CLAIM_WINDOW: i64 = 8;

/// A SQLite claim's choice of rows (Postgres: `weir_claim_candidates`, the same choice in
/// migrations/postgres/0017_claim_function.sql): queued instances of the queues in `$1` (a JSON
/// list of `queue_count` names), best priority first, at most `$2`, and no more of a DAG or a
/// pool than its limit leaves room for: `slots` in `weir_limits` less its running instances (a
/// DAG's `max_active_tasks`, a pool's size; no row, no limit). Only the first `$2` ×
/// [`CLAIM_WINDOW`] rows in priority order are read: their ranks within their DAG and pool are
/// the same as among all rows, so the limits hold. One queue, the usual case, is an equality,
/// read through that queue's index in priority order. Returns `id` and `window_full`: whether
/// the claim read as many rows as it may (rows past them may fit).
pub(crate) fn claim_pick_sqlite(queue_count: usize) -> String {
    let queues = if queue_count == 1 {
        "t.queue = json_extract($1, '$[0]')"
    } else {
        "t.queue IN (SELECT value FROM json_each($1))"
    };
    format!(
        "WITH busy AS (SELECT dag_id, pool FROM weir_task_instances WHERE state = 'running'),
         dag_busy AS (SELECT dag_id, COUNT(*) AS n FROM busy GROUP BY dag_id),
         pool_busy AS (SELECT pool, COUNT(*) AS n FROM busy WHERE pool IS NOT NULL GROUP BY pool),
         eligible AS (
             SELECT t.id, t.priority, t.dag_id, t.pool,
                 d.slots - COALESCE(db.n, 0) AS dag_room, p.slots - COALESCE(pb.n, 0) AS pool_room
             FROM weir_task_instances t
             LEFT JOIN weir_limits d ON d.kind = 'dag' AND d.name = t.dag_id
             LEFT JOIN dag_busy db ON db.dag_id = t.dag_id
             LEFT JOIN weir_limits p ON p.kind = 'pool' AND p.name = t.pool
             LEFT JOIN pool_busy pb ON pb.pool = t.pool
             WHERE t.state = 'queued' AND {queues}
                 AND (d.slots IS NULL OR d.slots > COALESCE(db.n, 0))
                 AND (p.slots IS NULL OR p.slots > COALESCE(pb.n, 0))
             ORDER BY t.priority DESC, t.id
             LIMIT $2 * {CLAIM_WINDOW}),
         ranked AS (
             SELECT id, priority, dag_id, pool, dag_room, pool_room,
                 row_number() OVER (PARTITION BY dag_id ORDER BY priority DESC, id) AS dag_rank,
                 row_number() OVER (PARTITION BY pool ORDER BY priority DESC, id) AS pool_rank,
                 COUNT(*) OVER () AS seen
             FROM eligible)
         SELECT id, seen >= $2 * {CLAIM_WINDOW} AS window_full FROM ranked
         WHERE (dag_room IS NULL OR dag_rank <= dag_room) AND (pool_room IS NULL OR pool_rank <= pool_room)
         ORDER BY priority DESC, id LIMIT $2"
    )
}

/// Puts a finished run back to `queued` (after a clear or a mark) so the scheduler looks at it again.
pub(crate) const REOPEN_RUN_SQL: &str = "UPDATE weir_runs SET state = 'queued', ended_at = NULL WHERE run_id = $1 AND state IN ('success', 'failed', 'cancelled')";

mod lease;
mod schedule;

pub use lease::{Claim, ClaimedTask, Completion};

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

    /// The task instances of several runs in one statement (the scheduler's pass reads every
    /// run it decides for at once), ordered by run, task id and map index.
    ///
    /// # Errors
    /// Store failures.
    pub async fn task_instances_of_runs(&self, run_ids: &[&str]) -> Result<Vec<TaskInstanceRow>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let select = format!("SELECT {TASK_COLUMNS} FROM weir_task_instances WHERE run_id ");
        let order = " ORDER BY run_id, task_id, map_index";
        let rows = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(format!(
                    "{select}= ANY($1){order}"
                )))
                .bind(run_ids)
                .fetch_all(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(format!(
                    "{select}IN (SELECT value FROM json_each($1)){order}"
                )))
                .bind(serde_json::to_string(run_ids)?)
                .fetch_all(pool)
                .await?
            }
        };
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
}
