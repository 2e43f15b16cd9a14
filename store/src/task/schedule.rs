//! The scheduler's transitions of task instances: queueing and failing by trigger rules,
//! `foreach` expansion, pool and DAG usage, due retries, reaping expired or lost tries, and
//! clearing.

use super::*;

/// How a try is taken back from its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reap {
    /// Its lease expired and it counts as a failed try.
    Failed,
    /// Its lease expired: lost, given back.
    Lost,
    /// Its worker is known dead: given back, without waiting for the lease.
    WorkerDead,
}

impl Store {
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
        // `from` is written into the statement (one of a few fixed words), not bound: SQLite
        // compares a bound state with its partial indexes' conditions when it prepares the
        // statement, and then prepares it again whenever the value is bound anew.
        let set = format!(
            "UPDATE weir_task_instances SET state = $2,
                 queued_at = CASE WHEN $2 = 'queued' THEN $3 ELSE queued_at END,
                 ended_at = CASE WHEN $2 IN ('skipped', 'upstream_failed', 'removed', 'success', 'failed') THEN $3 ELSE ended_at END,
                 due_at = NULL
             WHERE state = '{}' AND ",
            from.as_str()
        );
        // One statement for the whole set: a fan-out queues a thousand instances at once.
        let moved = match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(format!("{set} id = ANY($1)")))
                .bind(ids)
                .bind(to.as_str())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{set} id IN (SELECT value FROM json_each($1))"
                )))
                .bind(serde_json::to_string(ids)?)
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

    /// Writes the pools of the configuration and their sizes (what claims count against);
    /// pools no longer configured are dropped (their queued instances are then not limited).
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_pools(&self, pools: &std::collections::BTreeMap<String, u32>) -> Result<()> {
        let names: Vec<&str> = pools.keys().map(String::as_str).collect();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let existing: Vec<String> =
                sqlx::query_scalar("SELECT name FROM weir_limits WHERE kind = 'pool'")
                    .fetch_all(&mut *tx)
                    .await?;
            for name in existing.iter().filter(|n| !names.contains(&n.as_str())) {
                sqlx::query("DELETE FROM weir_limits WHERE kind = 'pool' AND name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            for (name, slots) in pools {
                sqlx::query(crate::task::SET_LIMIT_SQL)
                    .bind("pool")
                    .bind(name)
                    .bind(i64::from(*slots))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Running instances whose lease expired before `now`: their worker is presumed dead.
    ///
    /// # Errors
    /// Database failures.
    pub async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<TaskInstanceRow>> {
        self.task_rows_at(EXPIRED_LEASES_WHERE, EXPIRED_LEASES_ORDER, now)
            .await
    }

    /// Task instances matching `filter` (whose `$1` is `now`), in `order`.
    pub(super) async fn task_rows_at(
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
    pub(super) async fn reap(
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
        self.task_rows_at(DUE_RETRIES_WHERE, DUE_RETRIES_ORDER, now)
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
