//! The scheduler: one pass ([`Scheduler::run_once`]) reads the dags folder, creates due runs,
//! advances active runs (trigger rules, `when`, `foreach`, limits), re-queues due retries,
//! reaps expired leases and finishes runs. [`run`] repeats passes, woken by the store's
//! notifications (a task finished, a run was created) and by timers, and keeps one scheduler
//! active per database.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::notify::{Dispatcher, NotifyConfig};
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_model::template::{RenderContext, Renderer, is_falsy, parse_items};
use weir_model::{Dag, Diagnostic, Known, RunState, RunType, Schedule, TaskState};
use weir_store::{
    ActiveRun, Notice, NoticeEvent, Notification, RunRow, Store, StoreError, TaskInstanceRow,
    WorkerEnd, try_notifications,
};

use crate::error::{Result, SchedulerError};
use crate::evaluate::plan_run;
use crate::folder::FolderScanner;
use crate::plan::due_intervals;
use weir_ops::runs::new_run;
use weir_ops::versions::{Version, Versions};

/// What the scheduler needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Where DAG files are.
    pub dags_folder: PathBuf,
    /// A worker silent this long is presumed dead.
    pub heartbeat_timeout: Duration,
    /// The active scheduler's lease (Postgres): a standby takes over this long after the
    /// leader could last renew it.
    pub leader_lease: Duration,
    /// Pool sizes.
    pub pools: BTreeMap<String, u32>,
    /// Names the configuration defines (for validation warnings).
    pub known: Known,
    /// Environment variables templates may read as `env.NAME`, with their values.
    pub template_env: BTreeMap<String, String>,
    /// How often the folder is scanned and cron schedules are checked.
    pub scan_interval: Duration,
    /// Finished runs older than this are deleted (once a day), with their instances and logs.
    pub keep_runs: Option<Duration>,
    /// Notifiers, the SMTP relay and the web UI's address for links.
    pub notify: NotifyConfig,
}

/// Runs deleted per retention transaction.
pub const RETENTION_BATCH: i64 = 200;

/// How many tries of one instance may be lost with their worker (lease expired) and run again
/// without counting against its retries; past that, a lost try is a failed try.
pub const MAX_LOST_TRIES: i32 = 3;

/// Deletes finished runs that ended before `cutoff`, in batches, and the settled
/// notifications written before it; returns how many runs went.
///
/// # Errors
/// Store failures (what was deleted before stays deleted).
pub async fn delete_old_runs(store: &Store, cutoff: DateTime<Utc>) -> Result<u64> {
    while store
        .delete_notifications_before(cutoff, RETENTION_BATCH)
        .await?
        > 0
    {}
    let mut total = 0;
    loop {
        let n = store
            .delete_runs_ended_before(cutoff, RETENTION_BATCH)
            .await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Runs created from cron schedules.
    pub runs_created: usize,
    /// Task instances queued.
    pub queued: usize,
    /// Runs finished.
    pub runs_finished: usize,
    /// Leases reaped.
    pub reaped: usize,
    /// When the next pass is needed at the latest (a retry or cron interval coming due).
    pub next_due: Option<DateTime<Utc>>,
}

/// Current `queued + running` counts, kept during a pass so limits hold within it.
#[derive(Debug, Default)]
struct Usage {
    by_dag: HashMap<String, i64>,
    by_pool: HashMap<String, i64>,
}

/// The scheduler's state between passes: caches only (the folder scan and parsed DAG
/// versions); the truth is in the store.
pub struct Scheduler {
    store: Store,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    scanner: FolderScanner,
    versions: Versions,
    next_scan: Option<DateTime<Utc>>,
    /// When retention last ran (a hint: a restarted scheduler runs it again, harmlessly).
    last_retention: Option<DateTime<Utc>>,
    /// The dags folder's last read error, said once until it changes.
    folder_problem: Option<String>,
    /// Since when this scheduler has reached the database without a failure (`None` right
    /// after a failed pass). Leases are reaped only after a whole heartbeat timeout of it: a
    /// lease that expired while the database was unreachable says nothing about its worker,
    /// which could not heartbeat either and is recording its outcome now.
    db_ok_since: Option<DateTime<Utc>>,
    /// Workers whose database session was seen ended, and since when (a cache: a restarted
    /// scheduler starts the wait again, which only delays).
    sessions_ended: HashMap<String, DateTime<Utc>>,
}

impl Scheduler {
    /// A scheduler over `store`.
    pub fn new(store: Store, cfg: SchedulerConfig, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            store,
            cfg,
            scanner: FolderScanner::default(),
            versions: Versions::default(),
            next_scan: None,
            last_retention: None,
            folder_problem: None,
            db_ok_since: Some(clock.now()),
            sessions_ended: HashMap::new(),
            clock,
        }
    }

    /// One full pass: folder, cron, runs, retries, leases.
    ///
    /// # Errors
    /// Store failures (the pass can be retried).
    pub async fn run_once(&mut self) -> Result<Pass> {
        self.pass(true).await
    }

    /// A pass. Woken by every finished try, it must stay cheap: the folder, cron schedules and
    /// expired leases (second-scale concerns) are looked at on full passes, at most every
    /// `scan_interval`; limits are counted only when something is ready to queue; runs with
    /// nothing waiting for a decision cost nothing beyond the one active-runs statement.
    async fn pass(&mut self, full: bool) -> Result<Pass> {
        let result = self.pass_inner(full).await;
        match &result {
            Err(SchedulerError::Store(_)) => self.db_ok_since = None,
            _ => {
                if self.db_ok_since.is_none() {
                    self.db_ok_since = Some(self.clock.now());
                }
            }
        }
        result
    }

    async fn pass_inner(&mut self, full: bool) -> Result<Pass> {
        let now = self.clock.now();
        let mut pass = Pass::default();
        let scan_due = self.next_scan.is_none_or(|t| now >= t);
        if full || scan_due {
            match self.sync_folder(now).await {
                // A folder gone or unreadable (renamed, an unmounted volume) stops nothing: the
                // DAGs keep their last versions and nothing is marked removed until it is back.
                Err(SchedulerError::Folder(e)) => {
                    if self.folder_problem.as_ref() != Some(&e) {
                        tracing::error!(error = %e, "cannot read the dags folder; scheduling the DAGs as last read");
                        self.folder_problem = Some(e);
                    }
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    if self.folder_problem.take().is_some() {
                        tracing::info!("the dags folder is readable again");
                    }
                }
            }
            self.create_scheduled_runs(now, &mut pass).await?;
            self.reap_expired(now, &mut pass).await?;
            self.apply_retention(now).await?;
            self.next_scan = Some(weir_model::duration::later(now, self.cfg.scan_interval));
        }
        let mut usage = None;
        let active = self.store.active_runs().await?;
        // Retries belong to unfinished runs, so their next due time comes with them; a full
        // pass also asks the table directly, a safety net costing one query a scan interval.
        let mut retry_due = active.iter().filter_map(|a| a.next_retry_due).min();
        if full || scan_due {
            retry_due = self.store.next_retry_due().await?;
        }
        let mut requeued = false;
        if retry_due.is_some_and(|due| due <= now) {
            requeued = self.requeue_due_retries(now, &mut usage, &mut pass).await? > 0;
        }
        let started = self.start_queued_runs(&active, now).await?;
        for a in active
            .iter()
            .filter(|a| a.run.state == RunState::Running || started.contains(&a.run.run_id))
        {
            // Everything left queued, running or waiting to retry: nothing to decide.
            if !a.any_scheduled && a.any_unfinished {
                continue;
            }
            self.advance_run(&a.run, now, &mut usage, &mut pass).await?;
        }
        let retry_due = if requeued {
            self.store.next_retry_due().await?
        } else {
            retry_due.filter(|d| *d > now)
        };
        pass.next_due = [pass.next_due, retry_due, self.next_scan]
            .into_iter()
            .flatten()
            .min();
        Ok(pass)
    }

    /// Once a day, deletes finished runs older than `keep_runs`.
    async fn apply_retention(&mut self, now: DateTime<Utc>) -> Result<()> {
        let Some(keep) = self.cfg.keep_runs else {
            return Ok(());
        };
        if self
            .last_retention
            .is_some_and(|t| now - t < chrono::Duration::days(1))
        {
            return Ok(());
        }
        self.last_retention = Some(now);
        let cutoff = weir_model::duration::earlier(now, keep);
        let deleted = delete_old_runs(&self.store, cutoff).await?;
        if deleted > 0 {
            tracing::info!(deleted, cutoff = %cutoff, "retention: old runs deleted");
        }
        Ok(())
    }

    /// Reads the dags folder once into the store (new versions, import errors): what the CLI
    /// does before commands that name DAGs, so they work before a scheduler has run.
    ///
    /// # Errors
    /// An unreadable folder or store failures.
    pub async fn sync_folder_once(&mut self) -> Result<()> {
        let now = self.clock.now();
        self.sync_folder(now).await
    }

    async fn sync_folder(&mut self, now: DateTime<Utc>) -> Result<()> {
        let scan = self
            .scanner
            .scan(&self.cfg.dags_folder, Some(&self.cfg.known))?;
        for file in &scan.changed {
            let name = file.display();
            // One DAG id, one file: the file the store has for it keeps it while it still
            // claims it (valid or not); another file with the same id is an import error.
            let owner = match &file.parsed.dag_id {
                Some(id) => match self.store.dag(id).await {
                    Ok(existing)
                        if existing.file != name
                            && scan.claim_of(Path::new(&existing.file)) == Some(id.as_str()) =>
                    {
                        Some(existing.file)
                    }
                    Ok(_) | Err(StoreError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            match (&file.parsed.dag, owner) {
                (Some(dag), None) => {
                    let version = self
                        .store
                        .sync_dag(&name, &dag.spec, &file.source, &file.files, now)
                        .await?;
                    tracing::debug!(dag_id = dag.id(), version, file = %name, "DAG synced");
                }
                (dag, owner) => {
                    let mut message: Vec<String> = file
                        .parsed
                        .diagnostics
                        .iter()
                        .filter(|d| d.severity == weir_model::Severity::Error)
                        .map(|d| d.display(&name).to_string())
                        .collect();
                    if let (Some(owner), Some(id)) = (owner, &file.parsed.dag_id) {
                        let place = Diagnostic::error(
                            file.parsed.id_loc,
                            format!("DAG id `{id}` is already used by {owner}"),
                        );
                        message.insert(0, place.display(&name).to_string());
                    }
                    if dag.is_none() {
                        tracing::warn!(file = %name, problems = message.len(), "DAG file does not import; its last good version stays scheduled");
                    }
                    self.store
                        .record_import_error(
                            &name,
                            file.parsed.dag_id.as_deref(),
                            &message.join("\n"),
                            now,
                        )
                        .await?;
                }
            }
        }
        for gone in &scan.removed {
            self.store
                .clear_import_error(&gone.display().to_string())
                .await?;
        }
        let claimed: BTreeSet<&str> = scan.claims.values().flatten().map(String::as_str).collect();
        let unreadable: BTreeSet<String> = scan
            .claims
            .iter()
            .filter(|(_, id)| id.is_none())
            .map(|(path, _)| path.display().to_string())
            .collect();
        for (dag_id, removed) in self
            .store
            .mark_removed_dags(&claimed, &unreadable, now)
            .await?
        {
            if removed {
                tracing::warn!(
                    dag_id,
                    "no file defines the DAG any more: removed (no new runs)"
                );
            } else {
                tracing::info!(dag_id, "a file defines the DAG again: active");
            }
        }
        Ok(())
    }

    /// The DAG of a stored version (parsed once, then cached: versions never change).
    async fn dag_version(&self, version_id: i64) -> Result<Arc<Version>> {
        Ok(self.versions.get(&self.store, version_id).await?)
    }

    async fn create_scheduled_runs(&mut self, now: DateTime<Utc>, pass: &mut Pass) -> Result<()> {
        let unfinished = self.store.unfinished_runs_by_dag().await?;
        for row in self.store.list_dags().await? {
            if row.paused || row.schedule.is_none() || row.removed_at.is_some() {
                continue;
            }
            let version = self.dag_version(row.version_id).await?;
            let dag = &version.dag;
            // No more scheduled runs than may be active: a long catch-up creates runs as
            // earlier ones finish, instead of filling the database ahead of them.
            let room = i64::from(dag.spec.max_active_runs)
                - unfinished.get(dag.id()).copied().unwrap_or(0);
            if room <= 0 {
                continue;
            }
            let last = self.store.last_scheduled_logical_date(dag.id()).await?;
            let mut due = due_intervals(dag, last, now);
            due.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            for interval in &due {
                let new = new_run(
                    dag,
                    row.version_id,
                    RunType::Scheduled,
                    *interval,
                    &serde_json::Map::new(),
                )?;
                if let Some(run) = self.store.create_run(&new, now).await? {
                    tracing::info!(dag_id = dag.id(), run_id = %run.run_id, logical_date = %run.logical_date, "scheduled run created");
                    pass.runs_created += 1;
                }
            }
            // Wake up when the next interval ends.
            let latest = due.last().map(|i| i.start).or(last);
            if let (Some(Schedule::Cron(cron)), Some(latest)) = (dag.schedule(), latest) {
                let next_end = cron
                    .next_after(dag.timezone, latest)
                    .and_then(|s| cron.next_after(dag.timezone, s));
                pass.next_due = [pass.next_due, next_end].into_iter().flatten().min();
            }
        }
        Ok(())
    }

    /// Starts queued runs within `max_active_runs`; returns the ids of those started.
    async fn start_queued_runs(
        &mut self,
        active: &[ActiveRun],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let mut started = Vec::new();
        let mut running: HashMap<&str, u32> = HashMap::new();
        for a in active.iter().filter(|a| a.run.state == RunState::Running) {
            *running.entry(a.run.dag_id.as_str()).or_default() += 1;
        }
        for run in active
            .iter()
            .map(|a| &a.run)
            .filter(|r| r.state == RunState::Queued)
        {
            let version = self.dag_version(run.version_id).await?;
            let dag = &version.dag;
            let count = running.entry(run.dag_id.as_str()).or_default();
            if *count < dag.spec.max_active_runs
                && self
                    .store
                    .set_run_state(&run.run_id, RunState::Queued, RunState::Running, &[], now)
                    .await?
            {
                *count += 1;
                started.push(run.run_id.clone());
                tracing::info!(dag_id = %run.dag_id, run_id = %run.run_id, "run started");
            }
        }
        Ok(started)
    }

    async fn usage(&self) -> Result<Usage> {
        Ok(Usage {
            by_dag: self.store.dag_task_usage().await?.into_iter().collect(),
            by_pool: self.store.pool_usage().await?.into_iter().collect(),
        })
    }

    /// Whether one more instance of `dag_id` in `pool` fits the limits; counts it if so. The
    /// counts are read from the store the first time a pass needs them.
    async fn take_slot(
        &self,
        usage: &mut Option<Usage>,
        dag: &Dag,
        pool: Option<&str>,
    ) -> Result<bool> {
        if usage.is_none() {
            *usage = Some(self.usage().await?);
        }
        let Some(usage) = usage.as_mut() else {
            return Ok(false);
        };
        Ok(Self::fits(&self.cfg, usage, dag, pool))
    }

    fn fits(cfg: &SchedulerConfig, usage: &mut Usage, dag: &Dag, pool: Option<&str>) -> bool {
        let dag_count = usage.by_dag.get(dag.id()).copied().unwrap_or(0);
        if dag_count >= i64::from(dag.spec.max_active_tasks) {
            return false;
        }
        if let Some(pool) = pool {
            let slots = cfg.pools.get(pool).copied().map_or(i64::MAX, i64::from);
            if usage.by_pool.get(pool).copied().unwrap_or(0) >= slots {
                return false;
            }
            *usage.by_pool.entry(pool.to_owned()).or_default() += 1;
        }
        *usage.by_dag.entry(dag.id().to_owned()).or_default() += 1;
        true
    }

    /// Evaluates a run until nothing more changes in this pass (so skips and upstream
    /// failures propagate through the whole graph at once), then finishes it if it is done.
    #[tracing::instrument(name = "run", skip_all, fields(dag_id = %run.dag_id, run_id = %run.run_id))]
    async fn advance_run(
        &mut self,
        run: &RunRow,
        now: DateTime<Utc>,
        usage: &mut Option<Usage>,
        pass: &mut Pass,
    ) -> Result<()> {
        let version = self.dag_version(run.version_id).await?;
        let dag = &version.dag;
        for _ in 0..dag.tasks.len() + 2 {
            let tis = self.store.task_instances(&run.run_id).await?;
            let plan = plan_run(dag, &tis);
            let mut changed = 0;
            changed += self
                .store
                .transition_tasks(&plan.skip, TaskState::Scheduled, TaskState::Skipped, now)
                .await?;
            changed += self
                .store
                .transition_tasks(
                    &plan.upstream_failed,
                    TaskState::Scheduled,
                    TaskState::UpstreamFailed,
                    now,
                )
                .await?;
            if !plan.expand.is_empty() || !plan.ready.is_empty() {
                let renderer = self.renderer(run, &tis)?;
                let by_id: HashMap<i64, &TaskInstanceRow> = tis.iter().map(|t| (t.id, t)).collect();
                for id in &plan.expand {
                    let Some(ti) = by_id.get(id) else { continue };
                    changed += u64::from(self.expand(run, ti, dag, &renderer, now).await?);
                }
                let mut to_queue = Vec::new();
                for id in &plan.ready {
                    let Some(ti) = by_id.get(id) else { continue };
                    let Some(task) = dag.tasks.get(&ti.task_id) else {
                        continue;
                    };
                    if let Some(when) = &task.when {
                        let mut ctx_renderer = renderer.with_item(ti.map_item.clone());
                        match ctx_renderer.render(when) {
                            Ok(text) if is_falsy(&text) => {
                                changed += self
                                    .store
                                    .transition_tasks(
                                        &[ti.id],
                                        TaskState::Scheduled,
                                        TaskState::Skipped,
                                        now,
                                    )
                                    .await?;
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let message = format!("`when` does not render: {e}");
                                changed += self.fail_unrun(run, dag, ti, &message, now).await?;
                                continue;
                            }
                        }
                    }
                    if let Some(pool) = ti
                        .pool
                        .as_deref()
                        .filter(|p| !self.cfg.pools.contains_key(*p))
                    {
                        let message = format!(
                            "pool `{pool}` is not in the configuration (add it under [pools])"
                        );
                        changed += self.fail_unrun(run, dag, ti, &message, now).await?;
                        continue;
                    }
                    if self.take_slot(usage, dag, ti.pool.as_deref()).await? {
                        to_queue.push(ti.id);
                    }
                }
                let queued = self
                    .store
                    .transition_tasks(&to_queue, TaskState::Scheduled, TaskState::Queued, now)
                    .await?;
                if queued > 0 {
                    tracing::debug!(queued, "tasks queued");
                }
                pass.queued += usize::try_from(queued).unwrap_or(usize::MAX);
                changed += queued;
            }
            if let Some(outcome) = plan.finished {
                let notify = run_notifications(dag, run, &tis, outcome, now);
                if self
                    .store
                    .set_run_state(&run.run_id, RunState::Running, outcome, &notify, now)
                    .await?
                {
                    pass.runs_finished += 1;
                    tracing::info!(state = %outcome, "run finished");
                }
                return Ok(());
            }
            if changed == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    fn renderer(&self, run: &RunRow, tis: &[TaskInstanceRow]) -> Result<RunRenderer> {
        let ctx = weir_ops::context::run_context_with_outputs(run, tis, &self.cfg.template_env);
        Ok(RunRenderer { ctx })
    }

    async fn expand(
        &self,
        run: &RunRow,
        ti: &TaskInstanceRow,
        dag: &Dag,
        renderer: &RunRenderer,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(foreach) = dag.tasks.get(&ti.task_id).and_then(|t| t.foreach.as_ref()) else {
            return Ok(false);
        };
        let items = match foreach {
            weir_model::spec::Foreach::Items(items) => Ok(items.clone()),
            weir_model::spec::Foreach::Template(t) => renderer
                .clone()
                .render(t)
                .and_then(|text| parse_items(&text)),
        };
        match items {
            Ok(items) => {
                tracing::info!(run_id = %ti.run_id, task_id = %ti.task_id, items = items.len(), "foreach expanded");
                Ok(self.store.expand_mapped(ti, &items, now).await?)
            }
            Err(e) => {
                let message = format!("`foreach` does not render a list: {e}");
                Ok(self.fail_unrun(run, dag, ti, &message, now).await? > 0)
            }
        }
    }

    /// Fails a `scheduled` instance that cannot run, with its `on_failure` notifications;
    /// returns 1 if it changed, else 0.
    async fn fail_unrun(
        &self,
        run: &RunRow,
        dag: &Dag,
        ti: &TaskInstanceRow,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let notify = dag.tasks.get(&ti.task_id).map_or_else(Vec::new, |task| {
            try_notifications(task, run, ti, TaskState::Failed, Some(error), now)
        });
        Ok(u64::from(
            self.store
                .fail_scheduled(ti.id, error, &notify, now)
                .await?,
        ))
    }

    /// Queues the retries that are due (within limits); returns how many.
    async fn requeue_due_retries(
        &mut self,
        now: DateTime<Utc>,
        usage: &mut Option<Usage>,
        pass: &mut Pass,
    ) -> Result<u64> {
        let mut ids = Vec::new();
        for ti in self.store.due_retries(now).await? {
            let run = self.store.run(&ti.run_id).await?;
            let version = self.dag_version(run.version_id).await?;
            let dag = &version.dag;
            if self.take_slot(usage, dag, ti.pool.as_deref()).await? {
                ids.push(ti.id);
            }
        }
        let queued = self
            .store
            .transition_tasks(&ids, TaskState::UpForRetry, TaskState::Queued, now)
            .await?;
        pass.queued += usize::try_from(queued).unwrap_or(usize::MAX);
        Ok(queued)
    }

    /// Fails the try of every running instance whose worker stopped heartbeating, and retries
    /// it per its task's policy.
    async fn reap_expired(&mut self, now: DateTime<Utc>, pass: &mut Pass) -> Result<()> {
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

/// The notifications of a run's end: the DAG's `on_failure` with its failed tasks and their
/// errors, or its `on_success`.
fn run_notifications(
    dag: &Dag,
    run: &RunRow,
    tis: &[TaskInstanceRow],
    outcome: RunState,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    /// Failed tasks named in a run's failure notice; the rest are counted.
    const LISTED: usize = 5;
    let (event, names) = match outcome {
        RunState::Failed => (NoticeEvent::RunFailed, &dag.spec.on_failure),
        RunState::Success => (NoticeEvent::RunSucceeded, &dag.spec.on_success),
        _ => return Vec::new(),
    };
    if names.is_empty() {
        return Vec::new();
    }
    let failed: Vec<&TaskInstanceRow> = tis
        .iter()
        .filter(|t| t.state == TaskState::Failed)
        .collect();
    let error = (outcome == RunState::Failed).then(|| {
        let mut lines: Vec<String> = failed
            .iter()
            .take(LISTED)
            .map(|t| {
                let name = if t.map_index >= 0 {
                    format!("{}[{}]", t.task_id, t.map_index)
                } else {
                    t.task_id.clone()
                };
                format!("{name}: {}", t.error.as_deref().unwrap_or("failed"))
            })
            .collect();
        if failed.len() > LISTED {
            lines.push(format!("and {} more failed task(s)", failed.len() - LISTED));
        }
        if lines.is_empty() {
            lines.push("no task failed itself (the run failed on upstream failures)".to_owned());
        }
        lines.join("\n")
    });
    Notice::for_run(run, event, error, now).to(names)
}

/// What a failed try leads to: another try after the task's retry delay, or failure.
pub fn retry_decision(
    dag: &Dag,
    ti: &TaskInstanceRow,
    now: DateTime<Utc>,
) -> (TaskState, Option<DateTime<Utc>>) {
    match dag.tasks.get(&ti.task_id) {
        Some(task) => task.retry.after_failure(ti.try_number, ti.max_tries, now),
        None => (TaskState::Failed, None),
    }
}

/// A run's template context, with the `item` slot for mapped instances.
#[derive(Clone)]
struct RunRenderer {
    ctx: RenderContext,
}

impl RunRenderer {
    fn with_item(&self, item: Option<serde_json::Value>) -> RunRenderer {
        let mut ctx = self.ctx.clone();
        ctx.item = item.unwrap_or(serde_json::Value::Null);
        RunRenderer { ctx }
    }

    fn render(&mut self, template: &str) -> std::result::Result<String, String> {
        Renderer::new(&self.ctx)?.render(template)
    }
}

/// Runs the scheduler until `shutdown`: waits to become the active scheduler (Postgres: one
/// per database; a second one stands by and takes over when the first dies), then repeats
/// passes, woken by notifications, by the next due time, or at least every `scan_interval`.
///
/// # Errors
/// Never for database hiccups (logged and retried); only for a misconfigured dags folder.
pub async fn run(
    store: Store,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = store.listen();
    // Notifications go out from every scheduler process, active or standing by: claims keep
    // them from sending a row twice, and a standby keeps sending while the active one is down.
    let dispatcher = Dispatcher::new(store.clone(), Arc::clone(&clock), cfg.notify.clone());
    let notify = dispatcher.waker();
    let sending = tokio::spawn(dispatcher.run(shutdown.child_token()));
    let result = lead_and_schedule(&store, cfg, clock, &shutdown, &notify).await;
    if let Some(l) = listener {
        l.abort();
    }
    sending.abort();
    result
}

async fn lead_and_schedule(
    store: &Store,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    shutdown: &CancellationToken,
    notify: &Notify,
) -> Result<()> {
    let mut announced_standby = false;
    let mut beat = Heartbeat::new();
    // A standby asks this often; a leader that died is replaced within it.
    let standby_retry = (cfg.leader_lease / 2).min(Duration::from_secs(2));
    loop {
        // A cut-off database never answers: the attempt is bounded like a renewal.
        let leadership = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            l = tokio::time::timeout(cfg.leader_lease, store.try_lead(&beat.id, cfg.leader_lease)) => l,
        };
        let mut leadership = match leadership {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => {
                beat.maybe(store, false, 0.0, clock.now()).await;
                if !announced_standby {
                    tracing::info!("another scheduler is active; standing by");
                    announced_standby = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(standby_retry) => continue,
                }
            }
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the database; retrying"),
                    _ => tracing::warn!("the database did not answer; retrying"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(standby_retry) => continue,
                }
            }
        };
        tracing::info!(
            generation = leadership.generation(),
            "this scheduler is active"
        );
        announced_standby = false;
        let mut scheduler = Scheduler::new(store.clone(), cfg.clone(), Arc::clone(&clock));
        let mut full = true;
        loop {
            // Everything a leader does happens while its lease holds: losing it abandons a
            // pass in the middle (its transaction rolls back; a new leader ended its sessions).
            let started = std::time::Instant::now();
            let pass = tokio::select! {
                () = leadership.lost() => break,
                pass = scheduler.pass(full) => pass,
            };
            let loop_ms = started.elapsed().as_secs_f64() * 1000.0;
            beat.maybe(store, true, loop_ms, clock.now()).await;
            let next_due = match pass {
                Ok(pass) => {
                    // Run ends and reaped tries write notifications; workers' failed tries
                    // are picked up by the dispatcher's own poll.
                    if pass.runs_finished > 0 || pass.reaped > 0 {
                        notify.notify_one();
                    }
                    pass.next_due
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    Some(clock.now() + chrono::Duration::seconds(1))
                }
            };
            full = false;
            let now = clock.now();
            let wait = next_due
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(cfg.scan_interval)
                .min(cfg.scan_interval);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = leadership.lost() => break,
                () = store.scheduler_woken() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::warn!("lost the scheduler's lease: stopped acting; standing by");
    }
}

/// A scheduler process's heartbeat row (for `/health` and the loop-latency gauge), written at
/// most every [`Heartbeat::EVERY`]: a failed write is logged, never fatal.
struct Heartbeat {
    id: String,
    host: String,
    last: Option<std::time::Instant>,
}

impl Heartbeat {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Heartbeat {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "host".into());
        Heartbeat {
            id: format!("{host}-{}", std::process::id()),
            host,
            last: None,
        }
    }

    async fn maybe(&mut self, store: &Store, leader: bool, loop_ms: f64, now: DateTime<Utc>) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        // Bounded: a database that went silent must not hold up the loop.
        let write = store.scheduler_heartbeat(&self.id, &self.host, leader, loop_ms, now);
        match tokio::time::timeout(Duration::from_secs(2), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the scheduler heartbeat"),
            Err(_) => tracing::warn!("the scheduler heartbeat got no answer"),
        }
    }
}
