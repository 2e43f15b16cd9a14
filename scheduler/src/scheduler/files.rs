//! Runs from arriving files: a DAG scheduled on `files` has its locations listed every `poll`
//! (on the scheduler's scans), and each object version it has not run for makes a run (or, with
//! `batch`, all of one listing make one run). The object is recorded in the transaction that
//! creates its run, so an arrival makes one run across restarts and schedulers; no sensor task
//! holds a run open meanwhile.

use weir_model::asset::{DEFAULT_FILE_POLL, ScheduleRule};
use weir_storage::{Location, Object};

use super::*;

/// The longest one listing of a DAG's files may take in a pass.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Scheduler {
    /// Lists the locations of the DAGs on files whose poll is due and creates their runs.
    pub(super) async fn create_file_runs(
        &mut self,
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) -> Result<()> {
        // Read once a DAG on files is due to be listed (most passes have none).
        let mut unfinished = None;
        for row in self.store.list_dags().await? {
            if row.paused || row.removed_at.is_some() {
                continue;
            }
            let version = self.dag_version(row.version_id).await?;
            let dag = &version.dag;
            let Some(rule) = dag.file_trigger() else {
                continue;
            };
            let poll = rule.poll.map_or(DEFAULT_FILE_POLL, |p| p.0);
            if self
                .file_polls
                .get(dag.id())
                .is_some_and(|next| *next > now)
            {
                continue;
            }
            let next = weir_model::duration::later(now, poll);
            self.file_polls.insert(dag.id().to_owned(), next);
            pass.next_due = [pass.next_due, Some(next)].into_iter().flatten().min();
            if unfinished.is_none() {
                unfinished = Some(self.store.unfinished_runs_by_dag().await?);
            }
            let running = unfinished
                .as_ref()
                .and_then(|u| u.get(dag.id()).copied())
                .unwrap_or(0);
            let room = i64::from(dag.spec.max_active_runs) - running;
            if room <= 0 {
                continue;
            }
            let arrived = match self.arrived(dag.id(), rule).await {
                Ok(arrived) => arrived,
                Err(problem) => {
                    if self.file_problems.get(dag.id()) != Some(&problem) {
                        tracing::warn!(dag_id = dag.id(), error = %problem, "cannot list the DAG's files; trying again at its next poll");
                        self.file_problems.insert(dag.id().to_owned(), problem);
                    }
                    continue;
                }
            };
            if self.file_problems.remove(dag.id()).is_some() {
                tracing::info!(dag_id = dag.id(), "the DAG's files can be listed again");
            }
            let batches: Vec<Vec<Object>> = if rule.batch {
                if arrived.is_empty() {
                    Vec::new()
                } else {
                    vec![arrived]
                }
            } else {
                arrived.into_iter().map(|o| vec![o]).collect()
            };
            for batch in batches
                .into_iter()
                .take(usize::try_from(room).unwrap_or(usize::MAX))
            {
                let new = self.file_run(dag, row.version_id, &batch, now).await?;
                let files: Vec<(String, String)> = batch
                    .iter()
                    .map(|o| (o.location.to_string(), o.version()))
                    .collect();
                if let Some(run) = self.store.create_run_for_files(&new, &files, now).await? {
                    tracing::info!(dag_id = dag.id(), run_id = %run.run_id, files = files.len(), "run created for arrived files");
                    pass.runs_created += 1;
                }
            }
        }
        Ok(())
    }

    /// The objects at the rule's locations that have not made a run yet, in location order.
    async fn arrived(
        &self,
        dag_id: &str,
        rule: &ScheduleRule,
    ) -> std::result::Result<Vec<Object>, String> {
        let seen = self
            .store
            .triggered_files(dag_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut out: Vec<Object> = Vec::new();
        for text in &rule.files {
            let loc = Location::parse(text).map_err(|e| e.to_string())?;
            // A store that does not answer must not hold up the scheduler's pass.
            let listed = tokio::time::timeout(LIST_TIMEOUT, self.cfg.stores.list(&loc))
                .await
                .map_err(|_| {
                    format!("listing {text} took more than {}s", LIST_TIMEOUT.as_secs())
                })?;
            for o in listed.map_err(|e| e.to_string())? {
                let key = (o.location.to_string(), o.version());
                if !seen.contains(&key) && !out.iter().any(|x| x.location.to_string() == key.0) {
                    out.push(o);
                }
            }
        }
        out.sort_by_key(|o| o.location.to_string());
        Ok(out)
    }

    async fn file_run(
        &self,
        dag: &Dag,
        version_id: i64,
        objects: &[Object],
        now: DateTime<Utc>,
    ) -> Result<weir_store::NewRun> {
        let files: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "location": o.location.to_string(),
                    "size": o.size,
                    "etag": o.etag,
                    "modified": o.modified,
                    "version": o.version(),
                })
            })
            .collect();
        let interval = weir_model::DataInterval {
            start: now,
            end: now,
        };
        let trigger = serde_json::json!({ "kind": "files", "files": files });
        let mut new = self
            .triggered_run(dag, version_id, RunType::Files, interval, trigger, now)
            .await?;
        new.data_interval_start = new.logical_date;
        new.data_interval_end = new.logical_date;
        Ok(new)
    }
}
