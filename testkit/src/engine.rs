//! The engine in a test: the real scheduler and worker over one database and one dags folder,
//! on a manual clock. A test drives passes and claims itself ([`Engine::tick`],
//! [`Engine::drive`]) instead of waiting on timers, so retry delays are checked exactly and
//! nothing sleeps. [`Services`] runs the two loops as `weir standalone` does, for tests of
//! the loops themselves and for the benchmarks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_model::TaskState;
use weir_model::clock::{Clock, ManualClock};
use weir_scheduler::{Scheduler, SchedulerConfig, SchedulerError};
use weir_store::{RunRow, Store, TaskInstanceRow};
use weir_worker::Worker;
pub use weir_worker::WorkerConfig;

use crate::TestDb;

/// A time in RFC 3339.
///
/// # Panics
/// When `s` is not one.
#[must_use]
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

/// A scheduler and a worker over one database and one dags folder.
pub struct Engine {
    /// The database.
    pub store: Store,
    /// The time both see; a test moves it.
    pub clock: Arc<ManualClock>,
    /// The scheduler, whose passes the test drives.
    pub scheduler: Scheduler,
    /// The worker, whose claims the test drives.
    pub worker: Worker,
    /// The folder holding `dags/`.
    pub dir: tempfile::TempDir,
}

impl Engine {
    /// An engine with [`worker_config`] over `dags` (see [`Engine::with_worker`]).
    pub async fn new(db: &TestDb, dags: &[(&str, &str)]) -> Engine {
        Engine::with_worker(db, dags, worker_config()).await
    }

    /// `dags`: files of the dags folder (DAGs and the files they read), by relative path.
    pub async fn with_worker(db: &TestDb, dags: &[(&str, &str)], wcfg: WorkerConfig) -> Engine {
        let dir = dags_folder(dags);
        let clock = Arc::new(ManualClock::new(t("2024-03-01T12:00:00Z")));
        let scheduler = Scheduler::new(
            db.store.clone(),
            scheduler_config(dir.path()),
            Arc::clone(&clock) as Arc<dyn Clock>,
        );
        let worker = Worker::new(db.store.clone(), wcfg, Arc::clone(&clock) as Arc<dyn Clock>);
        let mut engine = Engine {
            store: db.store.clone(),
            clock,
            scheduler,
            worker,
            dir,
        };
        engine.scheduler.run_once().await.expect("first pass");
        engine
    }

    /// Re-reads the dags folder (files changed on disk), then triggers.
    pub async fn trigger_after_sync(&mut self, dag_id: &str) -> RunRow {
        self.scheduler.sync_folder_once().await.expect("sync");
        self.trigger(dag_id, serde_json::json!({})).await
    }

    /// One scheduler pass, then every claimable try run to its end; returns how many ran.
    pub async fn tick(&mut self) -> usize {
        self.scheduler.run_once().await.expect("pass");
        let claimed = self.worker.claim(64).await.expect("claim");
        let n = claimed.len();
        for ti in claimed {
            self.worker
                .run_try(ti, CancellationToken::new())
                .await
                .expect("try");
        }
        n
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a manual run of `dag_id` now, with `params` (a JSON object).
    pub async fn trigger(&self, dag_id: &str, params: serde_json::Value) -> RunRow {
        let params = params.as_object().cloned().unwrap_or_default();
        trigger(&self.store, dag_id, &params, self.clock.now()).await
    }

    /// Scheduler passes and worker claims until the run finishes; every claimed try runs to
    /// its end (concurrently). When nothing is runnable but retries are pending, the clock
    /// jumps to the next due time. Returns the finished run.
    pub async fn drive(&mut self, run_id: &str) -> RunRow {
        for _ in 0..500 {
            self.scheduler.run_once().await.expect("pass");
            let run = self.store.run(run_id).await.expect("run");
            if run.state.is_finished() {
                return run;
            }
            let claimed = self.worker.claim(64).await.expect("claim");
            if claimed.is_empty() {
                match self.store.next_retry_due().await.expect("due") {
                    Some(due) if due > self.clock.now() => self.clock.set(due),
                    _ => {}
                }
                continue;
            }
            let tries = claimed.into_iter().map(|ti| {
                let w = self.worker.clone();
                tokio::spawn(
                    async move { w.run_try(ti, CancellationToken::new()).await.expect("try") },
                )
            });
            for t in tries {
                t.await.expect("join");
            }
        }
        panic!("run {run_id} did not finish");
    }

    pub async fn tasks(&self, run_id: &str) -> Vec<TaskInstanceRow> {
        self.store.task_instances(run_id).await.expect("tis")
    }

    pub async fn state_of(&self, run_id: &str, task: &str) -> TaskState {
        self.tasks(run_id)
            .await
            .into_iter()
            .find(|t| t.task_id == task)
            .map(|t| t.state)
            .expect("task")
    }

    pub async fn log_of(&self, ti: &TaskInstanceRow, try_number: i32) -> Vec<String> {
        self.store
            .logs(ti.id, try_number, 0, 10_000)
            .await
            .expect("logs")
            .into_iter()
            .map(|l| l.line)
            .collect()
    }
}

/// The tests' scheduler configuration over `dir/dags`: a 30 s lease, a pool `small` of one
/// slot, `env.WEIR_TEST_ALLOWED` for templates.
#[must_use]
pub fn scheduler_config(dir: &Path) -> SchedulerConfig {
    SchedulerConfig {
        dags_folder: dir.join("dags"),
        heartbeat_timeout: Duration::from_secs(30),
        leader_lease: Duration::from_secs(5),
        pools: [("small".to_owned(), 1)].into_iter().collect(),
        known: weir_model::Known::default(),
        template_env: [("WEIR_TEST_ALLOWED".to_owned(), "yes".to_owned())]
            .into_iter()
            .collect(),
        scan_interval: Duration::from_secs(2),
        watch_folder: true,
        keep_runs: None,
        notify: weir_notify::NotifyConfig::default(),
        stores: weir_storage::Stores::default(),
        lineage: None,
    }
}

/// The tests' worker configuration: the `default` queue, eight at once, a 30 s lease.
#[must_use]
pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        keep_rejects: None,
        queues: vec!["default".into()],
        concurrency: 8,
        heartbeat_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
        template_env: [("WEIR_TEST_ALLOWED".to_owned(), "yes".to_owned())]
            .into_iter()
            .collect(),
        poll_interval: Duration::from_millis(200),
        connections: Default::default(),
        stores: Vec::new(),
        secrets: Vec::new(),
        pass_env: Vec::new(),
        lineage_namespace: None,
        python: python_setup(),
    }
}

/// Where the tests build Python environments: one cache for every test and run
/// (`WEIR_TEST_PYTHON_CACHE`, default `target/test-tools/python`), so uv, dbt and each
/// environment are installed once; uv is weir's pinned copy, installed there by weir itself
/// on first use, unless `WEIR_TEST_UV` names one.
#[must_use]
pub fn python_setup() -> weir_worker::step::python::env::PythonSetup {
    let cache_dir = std::env::var_os("WEIR_TEST_PYTHON_CACHE").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/python"),
        std::path::PathBuf::from,
    );
    weir_worker::step::python::env::PythonSetup {
        cache_dir,
        uv: std::env::var_os("WEIR_TEST_UV").map(std::path::PathBuf::from),
    }
}

/// Writes `files` (DAGs and the files they read, by path relative to `dags/`) into a new
/// temporary folder's `dags/`; returns the folder.
///
/// # Panics
/// When the files cannot be written.
#[must_use]
pub fn dags_folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    for (name, text) in files {
        let path = dir.path().join("dags").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write dag");
    }
    dir
}

/// Creates a manual run of the synced DAG `dag_id` at `now`, with `params`, as an operator's
/// trigger does (`weir_ops::actions::trigger`, without the audit row).
///
/// # Panics
/// When the DAG is not synced or was removed, the params do not fit it, a run exists at
/// `now`, or the store fails.
pub async fn trigger(
    store: &Store,
    dag_id: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    now: DateTime<Utc>,
) -> RunRow {
    weir_ops::actions::trigger(store, dag_id, params, Some(now), false, now)
        .await
        .unwrap_or_else(|e| panic!("triggering {dag_id}: {e}"))
        .run
}

/// The scheduler and worker loops running in this process, as `weir standalone` runs them.
pub struct Services {
    /// Stops both.
    pub shutdown: CancellationToken,
    scheduler: tokio::task::JoinHandle<Result<(), SchedulerError>>,
    worker: tokio::task::JoinHandle<Result<(), weir_worker::WorkerError>>,
}

impl Services {
    /// Starts both loops over `store`.
    #[must_use]
    pub fn start(
        store: &Store,
        scheduler: SchedulerConfig,
        worker: WorkerConfig,
        clock: &Arc<dyn Clock>,
    ) -> Services {
        let shutdown = CancellationToken::new();
        Services {
            scheduler: tokio::spawn(weir_scheduler::run(
                store.clone(),
                scheduler,
                Arc::clone(clock),
                shutdown.clone(),
            )),
            worker: tokio::spawn(weir_worker::run(
                store.clone(),
                worker,
                Arc::clone(clock),
                shutdown.clone(),
            )),
            shutdown,
        }
    }

    /// Stops both loops and waits for them; returns their results.
    ///
    /// # Panics
    /// When a loop panicked.
    pub async fn stop(
        self,
    ) -> (
        Result<(), SchedulerError>,
        Result<(), weir_worker::WorkerError>,
    ) {
        self.shutdown.cancel();
        let (s, w) = tokio::join!(self.scheduler, self.worker);
        (s.expect("scheduler task"), w.expect("worker task"))
    }
}
