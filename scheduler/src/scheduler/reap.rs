//! Reaping: the tries of workers whose lease expired or whose database session ended go back
//! to be run again, within `MAX_LOST_TRIES`.

use super::*;

/// How many tries of one instance may be lost with their worker (lease expired) and run again
/// without counting against its retries; past that, a lost try is a failed try.
pub const MAX_LOST_TRIES: i32 = 3;

impl Scheduler {
    /// Fails the try of every running instance whose worker stopped heartbeating, and retries
    /// it per its task's policy.
    pub(super) async fn reap_expired(&mut self, now: DateTime<Utc>, pass: &mut Pass) -> Result<()> {
        let settled = self.db_ok_since.is_some_and(|since| {
            now - since
                >= chrono::Duration::from_std(self.cfg.heartbeat_timeout)
                    .unwrap_or(chrono::Duration::MAX)
        });
        // Workers seen dead lose their tries without waiting for their leases; the tries
        // run again without using up retries. A process seen gone (same machine) is certain:
        // at once. A session that ended (only once the database has been reachable a while:
        // a database restart ends every session) may also be a live worker whose network
        // reset its connections: such a worker stops its tasks within the session grace of
        // its last confirmed session, so its tries are taken back once the session has been
        // seen gone for half as long again.
        let dead = self.store.dead_workers(settled).await?;
        let wait = chrono::Duration::from_std(
            weir_store::session_grace(self.cfg.heartbeat_timeout) * 3 / 2,
        )
        .unwrap_or(chrono::Duration::MAX);
        self.sessions_ended.retain(|w, _| {
            dead.iter()
                .any(|(d, end)| d == w && *end == WorkerEnd::SessionEnded)
        });
        for (worker, end) in dead {
            if end == WorkerEnd::SessionEnded {
                let since = *self.sessions_ended.entry(worker.clone()).or_insert(now);
                if now - since < wait {
                    continue;
                }
            }
            for ti in self.store.running_of_worker(&worker).await? {
                let error = format!(
                    "worker {worker} died (its process or database session ended): the try was lost and runs again (not counted against retries)"
                );
                if self.store.reap_lost(&ti, &error, true, now).await? {
                    tracing::warn!(run_id = %ti.run_id, task_id = %ti.task_id, try_number = ti.try_number, worker_id = %worker, "worker dead; try lost, runs again");
                    pass.reaped += 1;
                }
            }
            self.sessions_ended.remove(&worker);
        }
        if !settled {
            return Ok(());
        }
        for ti in self.store.expired_leases(now).await? {
            let worker = ti.worker_id.as_deref().unwrap_or("?");
            // A try lost with its worker is not the task's failure: it runs again without
            // using up a retry, a few times (a task that kills its worker each time still ends).
            if ti.lost_tries < MAX_LOST_TRIES {
                let error = format!(
                    "worker {worker} stopped heartbeating (no heartbeat for {}s): the try was lost and runs again (not counted against retries)",
                    self.cfg.heartbeat_timeout.as_secs()
                );
                if self.store.reap_lost(&ti, &error, false, now).await? {
                    tracing::warn!(run_id = %ti.run_id, task_id = %ti.task_id, try_number = ti.try_number, worker_id = worker, "lease expired; try lost, runs again");
                    pass.reaped += 1;
                }
                continue;
            }
            let run = self.store.run(&ti.run_id).await?;
            let version = self.dag_version(run.version_id).await?;
            let dag = &version.dag;
            let error = format!(
                "worker {worker} stopped heartbeating (no heartbeat for {}s), and {MAX_LOST_TRIES} tries of this instance were lost that way: counted as a failed try",
                self.cfg.heartbeat_timeout.as_secs()
            );
            let (to, due) = retry_decision(dag, &ti, now);
            let notify = dag.tasks.get(&ti.task_id).map_or_else(Vec::new, |task| {
                try_notifications(task, &run, &ti, to, Some(&error), now)
            });
            if self
                .store
                .reap_expired(&ti, to, due, &error, &notify, now)
                .await?
            {
                tracing::warn!(run_id = %ti.run_id, task_id = %ti.task_id, try_number = ti.try_number, worker_id = ti.worker_id.as_deref().unwrap_or("?"), "lease expired; try failed");
                pass.reaped += 1;
            }
        }
        Ok(())
    }
}
