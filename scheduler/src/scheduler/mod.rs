//! The scheduler: one pass ([`Scheduler::run_once`]) reads the dags folder, creates due runs,
//! advances active runs (trigger rules, `when`, `foreach`, limits), re-queues due retries,
//! reaps expired leases and finishes runs. [`run`] repeats passes, woken by the store's
//! notifications (a task finished, a run was created) and by timers, and keeps one scheduler
//! active per database.
//!
//! # Layout
//! - this module: the configuration, the pass, the dags folder's sync and scheduled runs;
//! - `runs`: advancing active runs; `reap`: lost tries; `retention`: old runs deleted;
//! - `service`: leading and looping ([`run`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_model::template::{RenderContext, Renderer, is_falsy, parse_items};
use weir_model::{Dag, Diagnostic, Known, RunState, RunType, Schedule, TaskState};
use weir_notify::{Dispatcher, NotifyConfig, run_notifications, try_notifications};
use weir_store::{ActiveRun, RunRow, Store, StoreError, TaskInstanceRow, WorkerEnd};

use crate::error::{Result, SchedulerError};
use crate::evaluate::plan_run;
use crate::folder::FolderScanner;
use crate::plan::due_intervals;
use weir_ops::runs::new_run;
use weir_ops::versions::{Version, Versions};

mod assets;
mod files;
mod lateness;
mod reap;
mod retention;
mod runs;
mod service;
mod watch;

pub use reap::MAX_LOST_TRIES;
pub use retention::{RETENTION_BATCH, delete_old_runs};
pub use runs::retry_decision;
pub use service::run;

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
    /// Watch the dags folder (inotify on Linux): a changed file is read within milliseconds
    /// instead of at the next scan; the scan stays, as the fallback.
    pub watch_folder: bool,
    /// Finished runs older than this are deleted (at start and once a day, beside the passes),
    /// with their instances and logs.
    pub keep_runs: Option<Duration>,
    /// Notifiers, the SMTP relay and the web UI's address for links.
    pub notify: NotifyConfig,
    /// The stores DAGs scheduled on `files` are listed on.
    pub stores: weir_storage::Stores,
    /// Where OpenLineage events are posted (`None`: nowhere; workers write none).
    pub lineage: Option<weir_notify::LineageEndpoint>,
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

/// The scheduler's state between passes: caches only (the folder scan and parsed DAG
/// versions); the truth is in the store.
pub struct Scheduler {
    store: Store,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    scanner: FolderScanner,
    versions: Versions,
    next_scan: Option<DateTime<Utc>>,
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
    /// When each DAG on files is listed next (a cache: a restarted scheduler lists at once).
    file_polls: HashMap<String, DateTime<Utc>>,
    /// The last listing error of each DAG on files, said once until it changes.
    file_problems: HashMap<String, String>,
    /// When declared assets' freshness is checked next.
    next_freshness: Option<DateTime<Utc>>,
    /// Whether this scheduler wrote its configuration's pools (what claims count against).
    pools_written: bool,
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
            folder_problem: None,
            db_ok_since: Some(clock.now()),
            sessions_ended: HashMap::new(),
            file_polls: HashMap::new(),
            file_problems: HashMap::new(),
            next_freshness: None,
            pools_written: false,
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
    /// `scan_interval`; runs with nothing waiting for a decision cost nothing beyond the one
    /// active-runs statement (limits are the workers' claims' business). `full` forces the
    /// second-scale concerns; [`run`]'s loop asks for it on its first pass only.
    ///
    /// # Errors
    /// Store failures (the pass can be retried).
    pub async fn pass(&mut self, full: bool) -> Result<Pass> {
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
            if !self.pools_written {
                self.store.set_pools(&self.cfg.pools).await?;
                self.pools_written = true;
            }
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
            self.create_file_runs(now, &mut pass).await?;
            self.check_freshness(now).await?;
            self.reap_expired(now, &mut pass).await?;
            // The next cron interval's end (or file check) is full-pass work: the pass that
            // wakes for it must be a full one, or a cron run would wait for the next scan.
            let next_scan = weir_model::duration::later(now, self.cfg.scan_interval);
            self.next_scan = [Some(next_scan), pass.next_due.filter(|due| *due > now)]
                .into_iter()
                .flatten()
                .min();
        }
        self.create_asset_runs(now, &mut pass).await?;
        let active = self.store.active_runs().await?;
        // Retries belong to unfinished runs, so their next due time comes with them; a full
        // pass also asks the table directly, a safety net costing one query a scan interval.
        let mut retry_due = active.iter().filter_map(|a| a.next_retry_due).min();
        if full || scan_due {
            retry_due = self.store.next_retry_due().await?;
        }
        let mut requeued = false;
        if retry_due.is_some_and(|due| due <= now) {
            requeued = self.requeue_due_retries(now, &mut pass).await? > 0;
        }
        let started = self.start_queued_runs(&active, now).await?;
        let next_deadline = self.check_deadlines(&active, now).await?;
        pass.next_due = [pass.next_due, next_deadline].into_iter().flatten().min();
        let deciding: Vec<&RunRow> = active
            .iter()
            .filter(|a| a.run.state == RunState::Running || started.contains(&a.run.run_id))
            // Everything left queued, running or waiting to retry: nothing to decide.
            .filter(|a| a.any_scheduled || !a.any_unfinished)
            .map(|a| &a.run)
            .collect();
        self.advance_runs(&deciding, now, &mut pass).await?;
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

    /// Makes the next pass read the dags folder (and do the rest of a full pass): something
    /// in it changed.
    pub fn scan_soon(&mut self) {
        self.next_scan = None;
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
            // A cron schedule with assets runs from its asset updates (`create_asset_runs`).
            if dag.asset_condition().is_some() {
                continue;
            }
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
}
