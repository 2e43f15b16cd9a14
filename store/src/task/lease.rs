//! A worker's side of a try: claiming instances (a lease), giving a claim back, heartbeats
//! that extend leases, and completions, each guarded by the lease it holds.

use super::*;

/// A heartbeat's lease extension of the tries a worker names (`$3`: an array on Postgres, a
/// JSON list on SQLite).
pub(super) const HEARTBEAT_PG: &str = "UPDATE weir_task_instances SET lease_expires_at = $2
     WHERE worker_id = $1 AND state = 'running' AND id = ANY($3) RETURNING id";
pub(super) const HEARTBEAT_SQLITE: &str = "UPDATE weir_task_instances SET lease_expires_at = $2
     WHERE worker_id = $1 AND state = 'running' AND id IN (SELECT value FROM json_each($3))
     RETURNING id";

/// A batch of completions as the parallel arrays Postgres' `unnest` reads: the tries, their
/// log lines and their notifications, each field in the order `complete_tasks` binds it.
struct CompletionArrays<'a> {
    ids: Vec<i64>,
    worker_ids: Vec<&'a str>,
    try_numbers: Vec<i32>,
    states: Vec<&'static str>,
    outputs: &'a [Option<String>],
    errors: Vec<Option<&'a str>>,
    due_ats: Vec<Option<DateTime<Utc>>>,
    give_backs: Vec<i32>,
    wakes: Vec<bool>,
    log_ids: Vec<i64>,
    log_tries: Vec<i32>,
    log_streams: Vec<&'static str>,
    log_lines: Vec<&'a str>,
    log_ats: Vec<DateTime<Utc>>,
    note_ids: Vec<i64>,
    note_notifiers: Vec<&'a str>,
    note_runs: Vec<&'a str>,
    note_payloads: Vec<String>,
}

impl<'a> CompletionArrays<'a> {
    /// `outputs` holds each completion's outputs as JSON text, in the order of `cs`.
    fn new(cs: &'a [Completion], outputs: &'a [Option<String>]) -> Result<CompletionArrays<'a>> {
        let lines = || cs.iter().flat_map(|c| c.log.iter().map(move |l| (c, l)));
        let notes = || cs.iter().flat_map(|c| c.notify.iter().map(move |n| (c, n)));
        Ok(CompletionArrays {
            ids: cs.iter().map(|c| c.ti_id).collect(),
            worker_ids: cs.iter().map(|c| c.worker_id.as_str()).collect(),
            try_numbers: cs.iter().map(|c| c.try_number).collect(),
            states: cs.iter().map(|c| c.state.as_str()).collect(),
            outputs,
            errors: cs.iter().map(|c| c.error.as_deref()).collect(),
            due_ats: cs.iter().map(|c| c.due_at).collect(),
            give_backs: cs.iter().map(|c| i32::from(c.give_back_try)).collect(),
            wakes: cs.iter().map(|c| c.wake).collect(),
            log_ids: lines().map(|(c, _)| c.ti_id).collect(),
            log_tries: lines().map(|(c, _)| c.try_number).collect(),
            log_streams: lines().map(|(_, l)| l.stream).collect(),
            log_lines: lines().map(|(_, l)| l.text.as_str()).collect(),
            log_ats: lines().map(|(_, l)| l.at).collect(),
            note_ids: notes().map(|(c, _)| c.ti_id).collect(),
            note_notifiers: notes().map(|(_, n)| n.notifier.as_str()).collect(),
            note_runs: notes().map(|(_, n)| n.notice.run_id.as_str()).collect(),
            note_payloads: notes()
                .map(|(_, n)| serde_json::to_string(&n.notice))
                .collect::<std::result::Result<_, _>>()?,
        })
    }
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
    /// Assets the try wrote and read, recorded with its completion (a failed try has some
    /// only when it wrote part of its work: a dbt build whose other models failed).
    pub assets: Vec<crate::asset::AssetRecord>,
    /// OpenLineage events of the try's end (JSON), queued if the completion is recorded.
    pub lineage: Vec<String>,
}

/// What a SQLite claim sets on each row it takes (`$1` worker, `$2` now, `$3` lease expiry):
/// the instance's next try starts, on the version its run is on (Postgres: `weir_claim`).
const CLAIM_SET: &str = "state = 'running', worker_id = $1, try_number = try_number + 1,
     started_at = $2, ended_at = NULL, lease_expires_at = $3, error = NULL,
     version_id = (SELECT r.version_id FROM weir_runs r WHERE r.run_id = weir_task_instances.run_id)";

/// What [`Store::claim_tasks_within_limits`] took, and whether to claim again before the
/// next wake-up.
#[derive(Debug, Default)]
pub struct Claim {
    /// The instances claimed, each try started.
    pub tasks: Vec<ClaimedTask>,
    /// It took fewer than asked after reading as many rows as a claim may: instances past
    /// those rows may fit now (in DAGs or pools other than the ones it read).
    pub more: bool,
    /// It took nothing while instances of its queues are queued: limits held them back, and a
    /// try's recorded end may make room for them.
    pub held_back: bool,
}

impl Store {
    /// Claims up to `limit` queued instances of `queues` for `worker_id`, best priority first,
    /// within their DAGs' `max_active_tasks` and their pools' slots (counted in running
    /// instances), starting their next try under a lease that expires at `lease_until`.
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
        Ok(self
            .claim_tasks_within_limits(worker_id, queues, limit, now, lease_until)
            .await?
            .tasks)
    }

    /// [`Store::claim_tasks`], also saying whether to claim again: see [`Claim`].
    ///
    /// # Errors
    /// Database failures.
    pub async fn claim_tasks_within_limits(
        &self,
        worker_id: &str,
        queues: &[String],
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim> {
        if limit <= 0 || queues.is_empty() {
            return Ok(Claim::default());
        }
        let (rows, more, held_back) = match &self.db {
            // One call of `weir_claim` (migrations/postgres/0017_claim_function.sql): the
            // candidates, their DAGs' and pools' limit rows locked, the candidates again under
            // the locks, the claim; then, on the same connection (so after its commit), the
            // rows it took, unless something took them away since.
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let (ids, more, held_back): (Vec<i64>, bool, bool) = sqlx::query_as(
                    "SELECT ids, more, held_back FROM weir_claim($1, $2, $3, $4, $5, $6)",
                )
                .bind(worker_id)
                .bind(queues)
                .bind(limit)
                .bind(limit.saturating_mul(CLAIM_WINDOW))
                .bind(now)
                .bind(lease_until)
                .fetch_one(&mut *conn)
                .await?;
                let rows = if ids.is_empty() {
                    Vec::new()
                } else {
                    sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(format!(
                        "SELECT {TASK_COLUMNS} FROM weir_task_instances
                         WHERE id = ANY($1) AND state = 'running' AND worker_id = $2
                         ORDER BY priority DESC, id"
                    )))
                    .bind(&ids)
                    .bind(worker_id)
                    .fetch_all(&mut *conn)
                    .await?
                };
                (rows, more, held_back)
            }
            // SQLite has one writer at a time (BEGIN IMMEDIATE): the pick, its counts included,
            // and the update that follows it in the transaction are atomic.
            Db::Sqlite(pool) => {
                let queue_count = queues.len();
                let queues = serde_json::to_string(queues)?;
                let mut tx = pool.begin_write().await?;
                let picked: Vec<(i64, bool)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(claim_pick_sqlite(queue_count)))
                        .bind(&queues)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                let rows = if picked.is_empty() {
                    Vec::new()
                } else {
                    let ids =
                        serde_json::to_string(&picked.iter().map(|p| p.0).collect::<Vec<_>>())?;
                    sqlx::query_as::<_, RawTask>(sqlx::AssertSqlSafe(format!(
                        "UPDATE weir_task_instances SET {CLAIM_SET}
                         WHERE state = 'queued' AND id IN (SELECT value FROM json_each($4))
                         RETURNING {TASK_COLUMNS}"
                    )))
                    .bind(worker_id)
                    .bind(now)
                    .bind(lease_until)
                    .bind(&ids)
                    .fetch_all(&mut *tx)
                    .await?
                };
                let waiting = rows.is_empty()
                    && sqlx::query_scalar::<_, bool>(
                        "SELECT EXISTS (SELECT 1 FROM weir_task_instances WHERE state = 'queued' AND queue IN (SELECT value FROM json_each($1)))",
                    )
                    .bind(&queues)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                (rows, picked.iter().any(|p| p.1), waiting)
            }
        };
        let tasks = rows
            .into_iter()
            .map(TaskInstanceRow::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Claim {
            more: more && i64::try_from(tasks.len()).unwrap_or(i64::MAX) < limit,
            held_back,
            tasks,
        })
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
                let c = CompletionArrays::new(cs, &outputs)?;
                // Tries with asset or lineage events: the same statement and their events in
                // one transaction (the common batch, without events, stays one statement).
                let with_events = cs
                    .iter()
                    .any(|c| !c.assets.is_empty() || !c.lineage.is_empty());
                let query = sqlx::query_as::<_, (i64, bool)>(
                    "WITH c AS (
                         SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::int[], $9::bool[])
                             AS c(id, worker_id, try_number, state, outputs, error, due_at, give_back, wake)),
                     done AS (
                         UPDATE weir_task_instances t SET state = c.state, ended_at = $10,
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
                         FROM unnest($11::bigint[], $12::int[], $13::text[], $14::text[], $15::timestamptz[])
                             WITH ORDINALITY AS l(ti_id, try_number, stream, line, at, n)
                         WHERE l.ti_id IN (SELECT id FROM done)
                         ORDER BY l.n),
                     noted AS (
                         INSERT INTO weir_notifications (notifier, run_id, payload, created_at, next_attempt_at)
                         SELECT n.notifier, n.run_id, n.payload, $10, $10
                         FROM unnest($16::bigint[], $17::text[], $18::text[], $19::text[])
                             WITH ORDINALITY AS n(ti_id, notifier, run_id, payload, k)
                         WHERE n.ti_id IN (SELECT id FROM done)
                         ORDER BY n.k),
                     woken AS (SELECT pg_notify($20, $21) WHERE EXISTS (SELECT 1 FROM needs WHERE wake))
                     SELECT id, wake FROM needs, (SELECT count(*) FROM woken) AS w",
                )
                // $1 to $9, one element per try, in the order of the `unnest` above.
                .bind(c.ids)
                .bind(c.worker_ids)
                .bind(c.try_numbers)
                .bind(c.states)
                .bind(c.outputs)
                .bind(c.errors)
                .bind(c.due_ats)
                .bind(c.give_backs)
                .bind(c.wakes)
                .bind(now) // $10
                // $11 to $15: one element per log line.
                .bind(c.log_ids)
                .bind(c.log_tries)
                .bind(c.log_streams)
                .bind(c.log_lines)
                .bind(c.log_ats)
                // $16 to $19: one element per notification.
                .bind(c.note_ids)
                .bind(c.note_notifiers)
                .bind(c.note_runs)
                .bind(c.note_payloads)
                .bind(SCHEDULER_CHANNEL) // $20
                .bind(self.notify_origin()); // $21
                if with_events {
                    let mut tx = pool.begin_write().await?;
                    let mut recorded = query.fetch_all(&mut *tx).await?;
                    let mut queued = 0;
                    for c in cs {
                        if recorded.iter().any(|(id, _)| *id == c.ti_id) {
                            queued += crate::asset::insert_try_events!(
                                tx,
                                c.ti_id,
                                c.try_number,
                                &c.assets,
                                now
                            );
                            crate::lineage::insert_lineage!(tx, &c.lineage, now);
                        }
                    }
                    if queued > 0 {
                        sqlx::query("SELECT pg_notify($1, $2)")
                            .bind(SCHEDULER_CHANNEL)
                            .bind(self.notify_origin())
                            .execute(&mut *tx)
                            .await?;
                        for r in &mut recorded {
                            r.1 = true;
                        }
                    }
                    tx.commit().await?;
                    recorded
                } else {
                    query.fetch_all(pool).await?
                }
            }
            // One transaction, one commit for all.
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let mut recorded = Vec::new();
                let mut runs = Vec::new();
                let mut asset_queued = false;
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
                        if crate::asset::insert_try_events!(
                            tx,
                            c.ti_id,
                            c.try_number,
                            &c.assets,
                            now
                        ) > 0
                        {
                            asset_queued = true;
                        }
                        crate::lineage::insert_lineage!(tx, &c.lineage, now);
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
                if run_needs || asset_queued {
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
            self.wake_scheduler_but_notify();
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
}
