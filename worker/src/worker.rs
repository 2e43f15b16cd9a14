//! The worker loop: claim queued task instances up to `concurrency`, run each try with its
//! permit, heartbeat the leases, and stop cleanly. Keeping the leases and the session, and
//! fencing the tasks when they cannot be kept, is in `liveness`; writing
//! finished tries is in `record`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_model::Step;
use weir_model::clock::Clock;
use weir_model::template::Renderer;
use weir_ops::context;
use weir_ops::versions::{Version, Versions};
use weir_store::{Claim, ClaimedTask, RunRow, Store};

use crate::conn::{Connections, Masker};
use crate::error::{Result, WorkerError};
use crate::log::{LogSink, store_lines};
use crate::outcome::TaskOutcome;
use crate::step::assets::{self, Declared};
use crate::step::{execute, ledger::Attempt, shell::ShellEnv};

mod liveness;
mod record;
use liveness::{Confirmed, keep_alive};
use record::{Pending, record_batches};

/// What a worker needs from the configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to take task instances from.
    pub queues: Vec<String>,
    /// Tries run at once.
    pub concurrency: u32,
    /// Lease length: the scheduler presumes the worker dead after this long without a
    /// heartbeat. Heartbeats go every third of it.
    pub heartbeat_timeout: Duration,
    /// On shutdown, how long running tries may finish before they are stopped.
    pub shutdown_grace: Duration,
    /// Environment variables templates may read as `env.NAME`, with their values.
    pub template_env: BTreeMap<String, String>,
    /// Longest wait between claims when no notification arrives.
    pub poll_interval: Duration,
    /// Data connections by name: URL.
    pub connections: BTreeMap<String, String>,
    /// Storage connections (buckets, containers, SFTP servers), chosen for a location by
    /// prefix.
    pub stores: Vec<weir_storage::StoreConn>,
    /// Values masked as `***` in task logs and errors (passwords, tokens); the connections'
    /// passwords are added to them.
    pub secrets: Vec<String>,
    /// How long a load keeps rows in its `<table>__rejects` (older ones are deleted by the
    /// next load into the table); `None`: forever.
    pub keep_rejects: Option<Duration>,
    /// Names of the worker's environment variables its tasks see besides the base set
    /// (`[worker] pass_env`; `PREFIX*` for a prefix).
    pub pass_env: Vec<String>,
    /// With `[openlineage]`: the namespace of weir's jobs in the OpenLineage events each try
    /// writes (`None`: none are written).
    pub lineage_namespace: Option<String>,
    /// Where `python` and `dbt` steps' environments are built (`[python]`).
    pub python: crate::step::python::env::PythonSetup,
}

/// Running tries of this worker: instance id → the token that stops it.
type Running = Arc<Mutex<HashMap<i64, CancellationToken>>>;

/// A worker process's state.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    cfg: WorkerConfig,
    clock: Arc<dyn Clock>,
    /// Unique per process start: `host-pid-random`.
    pub id: String,
    versions: Versions,
    /// Runs of recent tries. Only fields fixed at a run's creation are read from it (DAG
    /// version, dates, params), so a cached copy is never stale where it is used.
    runs: Arc<Mutex<HashMap<String, Arc<RunRow>>>>,
    running: Running,
    conns: Arc<Connections>,
    masker: Masker,
    /// Where finished tries go to be written; see [`record_batches`].
    recorder: mpsc::UnboundedSender<Pending>,
    /// When the process guard stops this worker's tasks unless a beat comes first (`None`
    /// before the first beat).
    fence: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// The worker's environment variables its tasks may see (`[worker] pass_env`).
    inherited: Arc<[(String, String)]>,
    /// The last claim left queued instances behind (limits): claim again as tries end.
    held_back: Arc<std::sync::atomic::AtomicBool>,
}

/// A try ready to run.
struct Prepared {
    step: Step,
    /// The task's `produces` and `consumes`, rendered.
    declared: Declared,
    env: ShellEnv,
    timeout: Option<Duration>,
    version: Arc<Version>,
    run: Arc<RunRow>,
}

/// Runs kept in [`Worker::runs`]; past it the cache starts over (a run is one read away).
const RUNS_CACHED: usize = 1000;

impl Worker {
    /// A worker with a fresh id. Call it inside a Tokio runtime: it starts the task that
    /// writes finished tries.
    pub fn new(store: Store, cfg: WorkerConfig, clock: Arc<dyn Clock>) -> Worker {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "host".into());
        let short = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("{host}-{}-{}", std::process::id(), &short[..8]);
        let secrets: Vec<String> = cfg
            .secrets
            .iter()
            .cloned()
            .chain(cfg.stores.iter().flat_map(weir_storage::StoreConn::secrets))
            .collect();
        let masker = Masker::for_config(&secrets, &cfg.connections);
        let conns = Arc::new(Connections::with_stores(
            cfg.connections.clone(),
            cfg.stores.clone(),
        ));
        let inherited = crate::step::shell::inherited_env(&cfg.pass_env).into();
        let (recorder, pending) = mpsc::unbounded_channel();
        tokio::spawn(record_batches(store.clone(), Arc::clone(&clock), pending));
        Worker {
            store,
            cfg,
            clock,
            id,
            versions: Versions::default(),
            runs: Arc::default(),
            running: Arc::default(),
            conns,
            masker,
            recorder,
            fence: Arc::default(),
            inherited,
            held_back: Arc::default(),
        }
    }

    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        weir_model::duration::later(now, self.cfg.heartbeat_timeout)
    }

    async fn dag_version(&self, version_id: i64) -> Result<Arc<Version>> {
        Ok(self.versions.get(&self.store, version_id).await?)
    }

    async fn run_row(&self, run_id: &str) -> Result<Arc<RunRow>> {
        if let Some(r) = self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(run_id)
        {
            return Ok(Arc::clone(r));
        }
        let run = Arc::new(self.store.run(run_id).await?);
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if runs.len() >= RUNS_CACHED {
            runs.clear();
        }
        runs.insert(run_id.to_owned(), Arc::clone(&run));
        Ok(run)
    }

    /// Claims what fits in `free` slots and returns the claimed instances (tests drive this).
    ///
    /// # Errors
    /// Store failures.
    pub async fn claim(&self, free: usize) -> Result<Vec<ClaimedTask>> {
        Ok(self.claim_saying_more(free).await?.tasks)
    }

    /// [`Worker::claim`], saying whether to claim again at once ([`Claim::more`]).
    async fn claim_saying_more(&self, free: usize) -> Result<Claim> {
        let now = self.clock.now();
        let claim = self
            .store
            .claim_tasks_within_limits(
                &self.id,
                &self.cfg.queues,
                i64::try_from(free).unwrap_or(i64::MAX),
                now,
                self.lease_until(now),
            )
            .await?;
        // Said only by a claim that took nothing; kept until the next such claim, so every
        // try recorded meanwhile makes its room count.
        if claim.tasks.is_empty() {
            self.held_back
                .store(claim.held_back, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(claim)
    }

    /// Whether the last claim left queued instances behind for want of room under a limit.
    pub fn held_back(&self) -> bool {
        self.held_back.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one claimed try to its end and records the outcome (unless the lease was lost).
    ///
    /// # Errors
    /// Store failures, or a version/task that cannot be read (the try is then failed).
    pub async fn run_try(&self, ti: ClaimedTask, cancel: CancellationToken) -> Result<TaskOutcome> {
        self.run_try_then(ti, cancel, || {}).await
    }

    /// [`Worker::run_try`], calling `step_done` as soon as the step is over (its processes
    /// gone, its log read), before the outcome is recorded: the worker's slot is free then,
    /// and the next claim need not wait for the write.
    ///
    /// # Errors
    /// As [`Worker::run_try`].
    #[tracing::instrument(name = "try", skip_all, fields(dag_id = %ti.dag_id, run_id = %ti.run_id, task_id = %ti.task_id, map_index = ti.map_index, try_number = ti.try_number, worker_id = %self.id))]
    pub async fn run_try_then(
        &self,
        ti: ClaimedTask,
        cancel: CancellationToken,
        step_done: impl FnOnce(),
    ) -> Result<TaskOutcome> {
        let (sink, rx) = LogSink::channel(self.masker.clone());
        // The log writer runs beside the step in this task; it ends when the sink is dropped.
        let running = async {
            let sink = sink;
            let (outcome, owner, wait_limit, assets) = match self.prepare(&ti).await {
                Ok(Prepared {
                    step,
                    declared,
                    env,
                    timeout,
                    version,
                    run,
                }) => {
                    tracing::debug!("try started");
                    self.lineage_start(&ti, &run, &step).await;
                    sink.note(format!(
                        "DAG version {}",
                        ti.version_id.unwrap_or(run.version_id)
                    ));
                    let outcome = execute(
                        &step,
                        &env,
                        &self.conns,
                        &version.files,
                        timeout,
                        &sink,
                        &cancel,
                    )
                    .await;
                    let outcome = match outcome {
                        TaskOutcome::Failed { .. } if self.fenced() => TaskOutcome::Cancelled {
                            reason: "fenced: this worker could not confirm its leases in time, so its process guard stopped the task".into(),
                        },
                        outcome => outcome,
                    };
                    let outcome = self.keep_cursor(&ti, &step, outcome).await;
                    // A sensor's timeout bounds its whole wait.
                    let wait_limit = matches!(step, Step::WaitFor(_))
                        .then_some(timeout)
                        .flatten();
                    // What the try wrote: a success's events, and those of the models a
                    // dbt build that failed part way did build (not what the task declares:
                    // it did not finish).
                    let none = Declared::default();
                    let wrote = match (&outcome, &step) {
                        (TaskOutcome::Succeeded { outputs }, _) => Some((outputs, &declared)),
                        (TaskOutcome::FailedWithOutputs { outputs, .. }, Step::Dbt(_)) => {
                            Some((outputs, &none))
                        }
                        _ => None,
                    };
                    let assets = match (wrote, version.dag.tasks.get(&ti.task_id)) {
                        (Some((outputs, declared)), Some(task)) => {
                            assets::records(&step, &task.step, declared, outputs, &self.conns)
                        }
                        _ => Vec::new(),
                    };
                    (outcome, Some((version, run)), wait_limit, assets)
                }
                Err(e) => {
                    sink.note(format!("could not prepare the try: {e}"));
                    let outcome = TaskOutcome::Failed {
                        error: e,
                        retryable: false,
                    };
                    (outcome, None, None, Vec::new())
                }
            };
            drop(sink);
            (outcome, owner, wait_limit, assets)
        };
        let started = std::time::Instant::now();
        let ((outcome, owner, wait_limit, assets), log) = tokio::join!(
            running,
            store_lines(self.store.clone(), ti.id, ti.try_number, rx)
        );
        step_done();
        let owner = owner.as_ref().and_then(|(version, run)| {
            let task = version.dag.tasks.get(&ti.task_id)?;
            Some((&version.dag, task, run.as_ref()))
        });
        record_metrics(
            owner.map(|(_, t, _)| t.step.kind()),
            &outcome,
            started.elapsed(),
        );
        self.record(&ti, &outcome, owner, wait_limit, log, assets)
            .await?;
        Ok(outcome)
    }

    /// Queues the try's OpenLineage `START` (with `[openlineage]`; sensors have none). A
    /// failure to queue it is logged: lineage never stops a try.
    async fn lineage_start(&self, ti: &ClaimedTask, run: &RunRow, step: &Step) {
        let Some(ns) = &self.cfg.lineage_namespace else {
            return;
        };
        if matches!(step, Step::WaitFor(_)) {
            return;
        }
        let now = self.clock.now();
        let event = crate::lineage::event(ns, "START", now, run, ti, None, &[], &self.conns);
        if let Err(e) = self.store.enqueue_lineage(&[event], now).await {
            tracing::warn!(error = %e, "could not queue the try's OpenLineage START");
        }
    }

    /// After a successful incremental load, stores the cursor it reached (before the try is
    /// recorded: a crash in between makes the retry read those rows again, which `upsert`
    /// absorbs and `append` would duplicate; see docs/dag-format.md).
    async fn keep_cursor(
        &self,
        ti: &ClaimedTask,
        step: &Step,
        outcome: TaskOutcome,
    ) -> TaskOutcome {
        let (Step::Load(l), TaskOutcome::Succeeded { outputs }) = (step, &outcome) else {
            return outcome;
        };
        let (Some(_), Some(cursor)) = (
            &l.incremental,
            outputs.get("cursor").and_then(|c| c.as_str()),
        ) else {
            return outcome;
        };
        match self
            .store
            .set_incremental_cursor(&ti.dag_id, &ti.task_id, cursor, self.clock.now())
            .await
        {
            Ok(()) => outcome,
            Err(e) => TaskOutcome::Failed {
                error: format!("the load committed but its cursor could not be stored: {e}"),
                retryable: true,
            },
        }
    }

    /// Renders the task's step for this try.
    async fn prepare(&self, ti: &ClaimedTask) -> std::result::Result<Prepared, String> {
        let run = self.run_row(&ti.run_id).await.map_err(|e| e.to_string())?;
        // The version the claim read from the run (a clear may have moved the run to a newer
        // one since this process cached the run's row).
        let version_id = ti.version_id.unwrap_or(run.version_id);
        let version = self
            .dag_version(version_id)
            .await
            .map_err(|e| e.to_string())?;
        let task =
            version.dag.tasks.get(&ti.task_id).ok_or_else(|| {
                WorkerError::UnknownTask(ti.task_id.clone(), version_id).to_string()
            })?;
        let ctx = context::try_context(&self.store, &run, ti, &version.dag, &self.cfg.template_env)
            .await
            .map_err(|e| e.to_string())?;
        let dialect_of = |conn: &str| self.conns.dialect(conn).map_err(|e| e.to_string());
        let step = context::render_with_files(
            &Renderer::new(&ctx)?,
            &task.step,
            &version.files,
            context::Rendering::Try(&dialect_of),
        )?;
        // An incremental load reads only past the cursor its earlier runs reached.
        let incremental_cursor = match &step {
            Step::Load(l) if l.incremental.is_some() => self
                .store
                .incremental_cursor(&run.dag_id, &ti.task_id)
                .await
                .map_err(|e| e.to_string())?,
            _ => None,
        };
        let env = ShellEnv {
            inherited: Arc::clone(&self.inherited),
            incremental_cursor,
            keep_rejects: self.cfg.keep_rejects,
            claims: Some(self.store.clone()),
            // Only the kinds that read it pay for it.
            context: if matches!(step, Step::Python(_) | Step::Dbt(_)) {
                serde_json::to_value(&ctx).map_err(|e| e.to_string())?
            } else {
                serde_json::Value::Null
            },
            python: self.cfg.python.clone(),
            attempt: Some(Attempt {
                dag_id: run.dag_id.clone(),
                run_id: run.run_id.clone(),
                task_id: ti.task_id.clone(),
                map_index: ti.map_index,
                ti_id: ti.id,
                try_number: ti.try_number,
                cleared_try: ti.cleared_try,
            }),
            vars: vec![
                ("WEIR_DAG_ID".into(), run.dag_id.clone()),
                ("WEIR_RUN_ID".into(), run.run_id.clone()),
                ("WEIR_TASK_ID".into(), ti.task_id.clone()),
                ("WEIR_MAP_INDEX".into(), ti.map_index.to_string()),
                ("WEIR_TRY_NUMBER".into(), ti.try_number.to_string()),
                ("WEIR_DS".into(), ctx.ds.clone()),
            ],
        };
        let renderer = Renderer::new(&ctx)?;
        let render_all = |keys: &[String]| -> std::result::Result<Vec<String>, String> {
            keys.iter()
                .map(|k| {
                    renderer
                        .render(k)
                        .map_err(|e| format!("`produces`/`consumes` `{k}`: {e}"))
                })
                .collect()
        };
        let declared = Declared {
            produces: render_all(&task.produces)?,
            consumes: render_all(&task.consumes)?,
        };
        Ok(Prepared {
            step,
            declared,
            env,
            timeout: task.timeout.map(|t| t.0),
            version: Arc::clone(&version),
            run,
        })
    }

    /// Extends the leases of the tries this worker runs; stops those taken away.
    ///
    /// # Errors
    /// Store failures.
    pub async fn heartbeat(&self) -> Result<()> {
        self.heartbeat_then(std::future::ready(())).await
    }

    /// [`Worker::heartbeat`], awaiting `meanwhile` between the database's answer and acting
    /// on it (tests put a concurrent claim there). The tries judged are those named in the
    /// statement: a try claimed while it ran is not in its answer and must not be taken for
    /// lost (it was, 3 times in 3,400 tries, before the heartbeat named its tries).
    ///
    /// # Errors
    /// Store failures.
    pub async fn heartbeat_then(
        &self,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let now = self.clock.now();
        let named: Vec<i64> = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        let held = self
            .store
            .heartbeat(&self.id, &named, now, self.lease_until(now))
            .await?;
        meanwhile.await;
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in named.iter().filter(|id| !held.contains(id)) {
            if let Some(token) = running.get(id) {
                tracing::warn!(
                    ti_id = id,
                    "lease lost (cleared or reaped): stopping the try"
                );
                token.cancel();
            }
        }
        Ok(())
    }

    /// Registers a claimed try as running here: heartbeats extend its lease, and `token` is
    /// cancelled should the try be taken away.
    pub fn track(&self, ti_id: i64, token: CancellationToken) {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ti_id, token);
    }

    /// Forgets a try (its outcome is recorded, or given up on).
    pub fn untrack(&self, ti_id: i64) {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&ti_id);
    }
}

/// This process's figures of a finished try (exported by the web server's `/metrics` when it
/// runs in the same process): its duration by step kind and outcome, and rows loaded.
fn record_metrics(kind: Option<&'static str>, outcome: &TaskOutcome, took: Duration) {
    let kind = kind.unwrap_or("unknown");
    let result = match outcome {
        TaskOutcome::Succeeded { outputs } => {
            if let Some(rows) = outputs
                .get("rows_loaded")
                .and_then(serde_json::Value::as_u64)
            {
                metrics::counter!("weir_load_rows_total").increment(rows);
            }
            "success"
        }
        TaskOutcome::Failed { .. } | TaskOutcome::FailedWithOutputs { .. } => "failed",
        TaskOutcome::NotYet { .. } => "not_yet",
        TaskOutcome::TimedOut { .. } => "timed_out",
        TaskOutcome::Cancelled { .. } => "cancelled",
    };
    metrics::histogram!("weir_task_duration_seconds", "kind" => kind, "outcome" => result)
        .record(took.as_secs_f64());
}

/// Runs a worker until `shutdown`: then stops claiming, lets running tries finish for up to
/// `shutdown_grace`, stops the rest (they go back to `up_for_retry`) and deregisters.
///
/// # Errors
/// Registration failing (the database is unreachable at start).
pub async fn run(
    store: Store,
    cfg: WorkerConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    // Tasks run as this process's user: without this, a task could read the worker's whole
    // environment (its database URL, tokens) from /proc/PPID/environ. A process that is not
    // dumpable has its /proc files owned by root; its children (reset at exec) are unaffected.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot hide the worker's /proc files from its tasks");
    }
    let worker = Worker::new(store.clone(), cfg.clone(), Arc::clone(&clock));
    let concurrency = usize::try_from(cfg.concurrency.max(1)).unwrap_or(1);
    store
        .register_worker(
            &worker.id,
            &worker.id,
            &cfg.queues,
            i32::try_from(concurrency).unwrap_or(i32::MAX),
            clock.now(),
        )
        .await?;
    store
        .record_worker_process(&worker.id, std::process::id())
        .await?;
    // Postgres: a session lock that ends with this process, so the scheduler notices a death
    // at once; kept (and re-taken after a database restart) by the heartbeat loop.
    let session = store.worker_session(&worker.id).await?;
    tracing::info!(worker_id = %worker.id, queues = ?cfg.queues, concurrency, "worker started");
    let listener = store.listen();
    let slots = Arc::new(Semaphore::new(concurrency));
    let tracker = TaskTracker::new();
    let stop_tries = CancellationToken::new();
    let slot_freed = Arc::new(tokio::sync::Notify::new());

    // Heartbeats go on through the shutdown's grace period: a try finishing then must keep its
    // lease, or the scheduler would give it to another worker while it still runs.
    let stop_beating = CancellationToken::new();
    let beat = {
        // Registering (and on Postgres taking the session) has just been confirmed, and every
        // lease starts later, at its claim: fencing starts before the first claim.
        let confirmed = Confirmed::new(&worker.cfg, session.is_some());
        worker.fence_at(confirmed.deadline());
        tokio::spawn(keep_alive(
            worker.clone(),
            session,
            confirmed,
            stop_beating.clone(),
        ))
    };

    // Whether the last claim filled every free slot (or may have left claimable instances
    // behind): only then can a freed slot find work no wake-up will announce. After a claim
    // that took less, every instance queued later comes with a wake-up of its own, so a
    // try's end need not cost a claim that finds nothing.
    let saturated = Arc::new(std::sync::atomic::AtomicBool::new(true));
    while !shutdown.is_cancelled() {
        let free = slots.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            let claim = worker.claim_saying_more(free).await;
            // All it asked for, or fewer with more maybe there (a failed claim may have left
            // anything behind).
            let full = claim
                .as_ref()
                .map_or(true, |c| c.tasks.len() >= free || c.more);
            saturated.store(full, std::sync::atomic::Ordering::Relaxed);
            match claim {
                Ok(claim) => {
                    // Full and not empty: claim again at once.
                    claimed_all = full && !claim.tasks.is_empty();
                    for ti in claim.tasks {
                        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                            break;
                        };
                        let token = stop_tries.child_token();
                        worker.track(ti.id, token.clone());
                        let w = worker.clone();
                        let freed = Arc::clone(&slot_freed);
                        let saturated = Arc::clone(&saturated);
                        tracker.spawn(async move {
                            let id = ti.id;
                            // The slot frees when the step ends; the try stays in `running`
                            // (heartbeats keep its lease) until its outcome is recorded.
                            let release = || {
                                drop(permit);
                                if saturated.load(std::sync::atomic::Ordering::Relaxed) {
                                    freed.notify_one();
                                }
                            };
                            if let Err(e) = w.run_try_then(ti, token, release).await {
                                tracing::error!(ti_id = id, error = %e, "recording a try failed");
                            }
                            w.untrack(id);
                            // Recorded, the try no longer counts against its DAG's and pool's
                            // limits: an instance a claim left for want of room may fit now.
                            if w.held_back() {
                                freed.notify_one();
                            }
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming failed; retrying"),
            }
        }
        if claimed_all {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = store.workers_woken(), if slots.available_permits() > 0 => {}
            () = slot_freed.notified() => {
                // Tries ending together free their slots together: one claim for all.
                tokio::task::yield_now().await;
            }
            () = tokio::time::sleep(cfg.poll_interval) => {}
        }
    }

    tracker.close();
    let running = worker
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    if running > 0 {
        tracing::info!(
            running,
            grace_secs = cfg.shutdown_grace.as_secs(),
            "shutting down: letting running tries finish"
        );
    }
    if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: stopping running tries (they will be retried)");
        stop_tries.cancel();
        tracker.wait().await;
    }
    stop_beating.cancel();
    beat.abort();
    if let Some(l) = listener {
        l.abort();
    }
    worker.conns.close().await;
    if let Err(e) = store.stop_worker(&worker.id, clock.now()).await {
        tracing::warn!(error = %e, "could not record the worker's stop");
    }
    tracing::info!(worker_id = %worker.id, "worker stopped");
    Ok(())
}
