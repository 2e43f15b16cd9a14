//! The engine under faults, end to end: `weir` processes (schedulers, workers, a standalone)
//! killed, paused, cut off from the database by a proxy, or outliving a database restart, on
//! Postgres; nothing is lost and no task runs twice at once. The engine's behaviour on a
//! manual clock is tested in its own crates (`scheduler/tests`, `worker/tests`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_model::{RunState, RunType, TaskState};
use weir_store::{RunRow, TaskInstanceRow};
use weir_testkit::TestDb;
use weir_testkit::engine::{scheduler_config, worker_config};

/// Postgres only (SQLite is one process): two `weir worker` processes share eight 6-second
/// tasks; one worker is killed with SIGKILL while its tasks run. Its task processes must die
/// with it, grandchildren included (the `end` line is written by a background subshell), the
/// scheduler must see the death from the worker's database session within 2 seconds (not a
/// lease later) and retry its tries on the other worker, and no task's tries may overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_workers_and_a_sigkill_lose_nothing_and_never_run_a_task_twice_at_once() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("tries.log");
    let mut dag = String::from(
        "id: pair\nparams:\n  log: x\ndefaults:\n  retries: 2\n  retry_delay: 1s\ntasks:\n",
    );
    for i in 0..8 {
        dag.push_str(&format!(
            "  t{i}:\n    kind: shell\n    run: |\n      echo \"start $WEIR_TASK_ID $WEIR_TRY_NUMBER $(date +%s.%N)\" >> \"{{{{ params.log }}}}\"\n      (sleep 6; echo \"end $WEIR_TASK_ID $WEIR_TRY_NUMBER $(date +%s.%N)\" >> \"{{{{ params.log }}}}\") &\n      wait\n"
        ));
    }
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/pair.yaml"), &dag).expect("dag");

    let (shutdown, scheduler) = fault_scheduler(&db, dir.path());
    let spawn_worker = || fault_worker(dir.path());
    let mut workers = [spawn_worker(), spawn_worker()];

    // Wait for the DAG, trigger, and wait until all eight tasks run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let run = fault_run(&db, "pair", &log, deadline).await;
    let victim_worker = loop {
        let tis = db.store.task_instances(&run.run_id).await.expect("tis");
        let running: Vec<&TaskInstanceRow> = tis
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .collect();
        let started = std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if running.len() == 8 && started == 8 {
            break running[0].worker_id.clone().expect("worker id");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tasks never all started: {tis:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Worker ids are `host-pid-random`.
    let victim_pid: u32 = victim_worker
        .rsplit('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("pid in worker id");
    let victim = workers
        .iter_mut()
        .find(|w| w.id() == victim_pid)
        .expect("victim is one of ours");
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reaped");
    let killed_tasks: Vec<String> = db
        .store
        .task_instances(&run.run_id)
        .await
        .expect("tis")
        .into_iter()
        .filter(|t| t.worker_id.as_deref() == Some(victim_worker.as_str()))
        .map(|t| t.task_id)
        .collect();
    assert!(!killed_tasks.is_empty());
    // The worker's death is seen from its database session at once, not when its 3-second
    // lease expires: its tries are taken back within 2 seconds of the kill.
    let taken_back = loop {
        let held = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .into_iter()
            .filter(|t| {
                t.state == TaskState::Running
                    && t.worker_id.as_deref() == Some(victim_worker.as_str())
            })
            .count();
        let waited = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
            - killed_at;
        if held == 0 {
            break waited;
        }
        assert!(waited < 10.0, "the dead worker's tries were not taken back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        taken_back <= 2.0,
        "taken back {taken_back:.2}s after the kill"
    );

    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline + Duration::from_secs(60),
            "the run did not finish after the kill"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    shutdown.cancel();
    let _ = scheduler.await;
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(done.state, RunState::Success);
    let tis = db.store.task_instances(&run.run_id).await.expect("tis");
    for t in &tis {
        let expected_try = if killed_tasks.contains(&t.task_id) {
            2
        } else {
            1
        };
        assert_eq!(
            (t.state, t.try_number),
            (TaskState::Success, expected_try),
            "{}",
            t.task_id
        );
    }
    // Each try: start and (if it lived) end. A killed try's process must not have lived on:
    // no `end` line, and no overlap with the retry.
    let text = std::fs::read_to_string(&log).expect("log");
    let mut spans: std::collections::BTreeMap<(String, String), (f64, Option<f64>)> =
        Default::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let key = (parts[1].to_owned(), parts[2].to_owned());
        let at: f64 = parts[3].parse().expect("time");
        let entry = spans.entry(key).or_insert((at, None));
        if parts[0] == "end" {
            entry.1 = Some(at);
        }
    }
    for task in &killed_tasks {
        let first = spans.get(&(task.clone(), "1".into())).expect("first try");
        assert!(
            first.1.is_none(),
            "{task}: the killed worker's task process lived on and finished"
        );
        let second = spans.get(&(task.clone(), "2".into())).expect("second try");
        assert!(
            second.0 > killed_at,
            "{task}: the retry started before the kill"
        );
    }
    for ((task, try_number), (start, end)) in &spans {
        for ((other_task, other_try), (other_start, other_end)) in &spans {
            if task == other_task && try_number < other_try {
                let end = end.unwrap_or(*start);
                assert!(
                    end <= *other_start || other_end.is_some_and(|e| e <= *start),
                    "{task}: tries {try_number} and {other_try} overlap"
                );
            }
        }
    }
}

/// The fault tests' scheduler: in this process, over `db`, the dags folder of `dir`, with a
/// 3-second lease (also written to `dir/weir.toml` for the `weir worker` processes) and scans
/// every 500 ms.
fn fault_scheduler(
    db: &TestDb,
    dir: &Path,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), weir_scheduler::SchedulerError>>,
) {
    std::fs::write(
        dir.join("weir.toml"),
        format!("database_url = \"{}\"\ndags_folder = \"dags\"\n[scheduler]\nheartbeat_timeout = \"3s\"\n", db.url),
    )
    .expect("config");
    let shutdown = CancellationToken::new();
    let mut cfg = scheduler_config(dir);
    cfg.heartbeat_timeout = Duration::from_secs(3);
    cfg.scan_interval = Duration::from_millis(500);
    let scheduler = tokio::spawn(weir_scheduler::run(
        db.store.clone(),
        cfg,
        Arc::new(weir_model::clock::SystemClock),
        shutdown.clone(),
    ));
    (shutdown, scheduler)
}

/// A `weir worker --concurrency 4` process in `dir`.
fn fault_worker(dir: &Path) -> std::process::Child {
    fault_worker_with(dir, std::process::Stdio::null())
}

/// [`fault_worker`] with its warnings (the default log level) going to `stderr`.
fn fault_worker_with(dir: &Path, stderr: impl Into<std::process::Stdio>) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["worker", "--concurrency", "4"])
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start worker")
}

/// Once the scheduler has synced DAG `dag_id`, a manual run of it with `params.log = log`.
async fn fault_run(db: &TestDb, dag_id: &str, log: &Path, deadline: std::time::Instant) -> RunRow {
    let row = loop {
        if let Ok(r) = db.store.dag(dag_id).await {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never synced the DAG"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let parsed =
        weir_model::Dag::from_spec(db.store.dag_version(row.version_id).await.expect("v").spec)
            .expect("dag");
    let now = weir_model::clock::SystemClock.now();
    let overrides = serde_json::Map::from_iter([(
        "log".to_owned(),
        serde_json::json!(log.display().to_string()),
    )]);
    let new = weir_ops::runs::new_run(
        &parsed,
        row.version_id,
        RunType::Manual,
        weir_model::DataInterval {
            start: now,
            end: now,
        },
        &overrides,
    )
    .expect("run");
    db.store
        .create_run(&new, now)
        .await
        .expect("create")
        .expect("new")
}

/// A `weir` process in `dir` (its configuration from `dir/weir.toml` alone), logging at
/// `info` to `dir/LOG`.
fn spawn_weir(dir: &Path, args: &[&str], log: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).expect("log"))
        .spawn()
        .expect("spawn")
}

/// The state of run `run_id` as `weir runs show --json` in `dir` gives it.
fn run_state(dir: &Path, run_id: &str) -> Option<String> {
    let o = crate::weir_in(dir, &["runs", "show", run_id, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|r| r["state"].as_str().map(str::to_owned))
}

/// Waits until `file` contains `text`, or fails naming what it waited for.
async fn wait_for_text(file: &Path, text: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let seen = std::fs::read_to_string(file).unwrap_or_default();
        if seen.contains(text) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{text}` never appeared in {}:\n{seen}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two `weir scheduler` processes on one Postgres: one is active, the other stands by while it
/// lives; after a SIGKILL of the active one the standby takes over and runs the DAGs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_standby_scheduler_takes_over_when_the_active_one_dies() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/after.yaml"),
        "id: after\ntasks:\n  a: {kind: shell, run: echo one}\n  b: {kind: shell, run: echo two, depends_on: [a]}\n",
    )
    .expect("dag");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!("database_url = \"{}\"\ndags_folder = \"dags\"\n", db.url),
    )
    .expect("config");
    let spawn_scheduler = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("scheduler")
            .current_dir(dir.path())
            .env_remove("WEIR_DATABASE_URL")
            .env("RUST_LOG", "weir_scheduler=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start scheduler");
        (child, log)
    };
    let (mut first, first_log) = spawn_scheduler("first");
    wait_for_text(
        &first_log,
        "this scheduler is active",
        Duration::from_secs(30),
    )
    .await;
    let (mut second, second_log) = spawn_scheduler("second");
    wait_for_text(&second_log, "standing by", Duration::from_secs(30)).await;
    // Still standing by after it asked for the lease three more times (every 2 s) and was
    // refused each time.
    let refused = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("the leader lease is held by another scheduler")
            .count()
    };
    let asked_until = std::time::Instant::now() + Duration::from_secs(30);
    while refused(&second_log) < 4 {
        assert!(
            std::time::Instant::now() < asked_until,
            "the standby stopped asking for the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !std::fs::read_to_string(&second_log)
            .expect("log")
            .contains("this scheduler is active"),
        "two schedulers were active at once"
    );

    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    wait_for_text(
        &second_log,
        "this scheduler is active",
        Duration::from_secs(15),
    )
    .await;

    // The new leader schedules: a run triggered now completes with a worker.
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(weir_worker::run(
        db.store.clone(),
        worker_config(),
        Arc::new(weir_model::clock::SystemClock),
        shutdown.clone(),
    ));
    let row = db.store.dag("after").await.expect("dag synced");
    let dag =
        weir_model::Dag::from_spec(db.store.dag_version(row.version_id).await.expect("v").spec)
            .expect("dag");
    let now = weir_model::clock::SystemClock.now();
    let new = weir_ops::runs::new_run(
        &dag,
        row.version_id,
        RunType::Manual,
        weir_model::DataInterval {
            start: now,
            end: now,
        },
        &serde_json::Map::new(),
    )
    .expect("run");
    let run = db
        .store
        .create_run(&new, now)
        .await
        .expect("create")
        .expect("new");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never ran the DAG: {:?}",
            db.store.task_instances(&run.run_id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    let _ = worker.await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(done.state, RunState::Success);
}

/// Postgres only: a `weir worker --metrics-bind` process serves `/metrics` (to an API token
/// only) with its own figures (the tries it ran, the rows it loaded) beside the database's
/// gauges, while the scheduler runs elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_separate_worker_serves_its_own_metrics() {
    use std::io::BufRead;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/m.yaml"),
        "id: m\ntasks:\n  a: {kind: shell, run: echo a}\n  b: {kind: shell, run: echo b, depends_on: a}\n",
    )
    .expect("dag");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!("database_url = \"{}\"\ndags_folder = \"dags\"\n", db.url),
    )
    .expect("config");
    let now = Utc::now();
    let hash = weir_web::auth::hash_password("a long password").expect("hash");
    db.store
        .create_user("scraper", weir_store::Role::Viewer, &hash, now)
        .await
        .expect("user");
    let token = weir_web::auth::new_api_token();
    db.store
        .add_token("scraper", &weir_web::auth::digest(&token), now)
        .await
        .expect("token");

    let shutdown = CancellationToken::new();
    let mut cfg = scheduler_config(dir.path());
    cfg.scan_interval = Duration::from_millis(500);
    let scheduler = tokio::spawn(weir_scheduler::run(
        db.store.clone(),
        cfg,
        Arc::new(weir_model::clock::SystemClock),
        shutdown.clone(),
    ));
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "worker",
            "--concurrency",
            "3",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start worker");
    let mut lines = std::io::BufReader::new(worker.stderr.take().expect("stderr")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("metrics at ").map(str::to_owned))
        .expect("the worker prints its metrics address");
    std::thread::spawn(move || lines.for_each(drop));

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db.store.dag("m").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the DAG was never synced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run =
        weir_ops::actions::trigger(&db.store, "m", &Default::default(), None, false, Utc::now())
            .await
            .expect("trigger")
            .run;
    while !db
        .store
        .run(&run.run_id)
        .await
        .expect("run")
        .state
        .is_finished()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.expect("metrics");
    let text = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    shutdown.cancel();
    let _ = scheduler.await;
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    for line in [
        "weir_task_duration_seconds_count{kind=\"shell\",outcome=\"success\"} 2",
        "weir_runs{state=\"success\"} 1",
        "weir_task_instances{state=\"success\"} 2",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("weir_worker_slots{worker=") && l.ends_with(" 3")),
        "no slots of this worker in:\n{text}"
    );
}

// Values that used to overflow date arithmetic and crash the scheduler for good: the longest
// durations a DAG may write, a huge backoff, a sensor checking again in a century. Every
// pass and try completes; the instance waits, nothing panics.

// A start date centuries ago with catchup: runs are created only as fast as they may run
// (`max_active_runs`), and only the latest `max_catchup_runs` intervals are caught up.

// A heartbeat extends only the tries the worker runs: a row left `running` under its id that
// it does not run (a claim whose answer was lost) expires and is reaped, not held forever;
// and a try claimed while a heartbeat's statement ran is never taken for lost.

/// Postgres: a worker told to stop (SIGTERM) while its tries run finishes them within its grace
/// period and records them, heartbeating all along: its tries outlive their 3-second lease, and
/// nothing is given to the other worker, so no task runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_sigtermed_worker_finishes_its_tries_and_nothing_runs_twice() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("tries.log");
    let mut dag = String::from("id: term\nparams:\n  log: x\ntasks:\n");
    for i in 0..4 {
        dag.push_str(&format!(
            "  t{i}:\n    kind: shell\n    run: |\n      echo \"start $WEIR_TASK_ID $WEIR_TRY_NUMBER\" >> \"{{{{ params.log }}}}\"\n      sleep 6\n      echo \"end $WEIR_TASK_ID $WEIR_TRY_NUMBER\" >> \"{{{{ params.log }}}}\"\n"
        ));
    }
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/term.yaml"), &dag).expect("dag");
    let (shutdown, scheduler) = fault_scheduler(&db, dir.path());
    let spawn_worker = || fault_worker(dir.path());
    let mut first = spawn_worker();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let run = fault_run(&db, "term", &log, deadline).await;
    loop {
        let started = std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if started == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tasks never all started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second worker stands ready to take anything the first one lets go of.
    let mut second = spawn_worker();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first_exit = first.wait().expect("first worker exits");
    shutdown.cancel();
    let _ = scheduler.await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(done.state, RunState::Success);
    assert!(
        first_exit.success(),
        "a graceful stop exits 0: {first_exit:?}"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    let starts = text.lines().filter(|l| l.starts_with("start")).count();
    assert_eq!(starts, 4, "every task ran once, none repeated:\n{text}");
    for t in db.store.task_instances(&run.run_id).await.expect("tis") {
        assert_eq!(
            (t.state, t.try_number),
            (TaskState::Success, 1),
            "{}",
            t.task_id
        );
    }
}

/// Postgres restarted (`fast`) while a worker's write of a finished try's outcome is in
/// flight (held behind a row lock the test takes, so the restart cuts that very statement):
/// the worker keeps the outcome and writes it again once the database is back. The task ran
/// once; without the retry the outcome would be lost and the task run again after its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_outcome_write_cut_by_a_restart_is_written_again_not_rerun() {
    let pg = weir_testkit::RestartablePostgres::start().expect("a Postgres of the test's own");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/one.yaml"),
        format!(
            "id: one\ntasks:\n  a:\n    kind: shell\n    run: |\n      echo start >> {ledger}\n      sleep 1\n      echo end >> {ledger}\n",
            ledger = ledger.display()
        ),
    )
    .expect("dag");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!(
            "database_url = \"{}\"\ndags_folder = \"dags\"\n[scheduler]\nheartbeat_timeout = \"3s\"\n",
            pg.url
        ),
    )
    .expect("config");
    let weir = |args: &[&str]| crate::weir_in(dir.path(), args);
    assert!(weir(&["db", "migrate"]).status.success());
    let spawn = |args: &[&str], log: &str| spawn_weir(dir.path(), args, log);
    let mut scheduler = spawn(&["scheduler"], "scheduler.log");
    let mut worker = spawn(&["worker"], "worker.log");
    let trigger = weir(&["trigger", "one", "--json"]);
    assert!(trigger.status.success(), "{}", crate::stderr(&trigger));
    let run: serde_json::Value = serde_json::from_slice(&trigger.stdout).expect("json");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let db = sqlx::PgPool::connect(&pg.url).await.expect("connect");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ti_id: i64 = loop {
        let row: Option<(i64, String)> = sqlx::query_as(
            "select id, state from weir_task_instances where run_id = $1 and task_id = 'a'",
        )
        .bind(&run_id)
        .fetch_optional(&db)
        .await
        .expect("ti");
        if let Some((id, state)) = row
            && state == "running"
        {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "the task never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Hold the row: the worker's write of the outcome waits behind the lock.
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("select 1 from weir_task_instances where id = $1 for no key update")
        .bind(ti_id)
        .execute(&mut *lock)
        .await
        .expect("lock");
    loop {
        let waiting: i64 = sqlx::query_scalar(
            // The completion's statement (the heartbeat waits behind the lock too).
            "select count(*) from pg_stat_activity
             where wait_event_type = 'Lock' and query ilike '%SET state = c.state, ended_at%'",
        )
        .fetch_one(&db)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never wrote the outcome"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The restart ends the worker's statement in flight, and the test's lock with it.
    pg.restart("fast").expect("restart");
    drop(lock);
    drop(db);
    let state = || run_state(dir.path(), &run_id);
    while !matches!(state().as_deref(), Some("success" | "failed")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = scheduler.kill();
    let _ = worker.kill();
    let _ = scheduler.wait();
    let _ = worker.wait();
    let logs = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    assert_eq!(state().as_deref(), Some("success"), "{logs}");
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    assert_eq!(
        text.lines().filter(|l| *l == "start").count(),
        1,
        "the task ran again:\n{text}\n{logs}"
    );
    let shown = weir(&["runs", "show", &run_id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(shown["tasks"][0]["try_number"], 1, "{shown}");
}

/// Postgres restarted (`fast`), stopped for 3 s while tasks end, and restarted (`immediate`)
/// under a running fan-out served by a
/// real `weir scheduler` and `weir worker`: both processes stay up, reconnect, record the
/// outcomes they hold once the database is back, and the run finishes with every task run
/// exactly once (its own ledger says so) and no task's executions overlapping.
#[test]
fn postgres_restarts_mid_run_cost_seconds_and_repeat_nothing() {
    let pg = weir_testkit::RestartablePostgres::start().expect("a Postgres of the test's own");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let mut dag = String::from("id: fan\nparams:\n  ledger: x\ntasks:\n");
    for i in 0..24 {
        dag.push_str(&format!(
            "  t{i:02}:\n    kind: shell\n    run: |\n      echo \"start $WEIR_TASK_ID $(date +%s.%N)\" >> \"{{{{ params.ledger }}}}\"\n      sleep 1.5\n      echo \"end $WEIR_TASK_ID $(date +%s.%N)\" >> \"{{{{ params.ledger }}}}\"\n"
        ));
    }
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/fan.yaml"), &dag).expect("dag");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!("database_url = \"{}\"\ndags_folder = \"dags\"\n", pg.url),
    )
    .expect("config");
    let weir = |args: &[&str]| crate::weir_in(dir.path(), args);
    assert!(weir(&["db", "migrate"]).status.success());
    let spawn = |args: &[&str], log: &str| spawn_weir(dir.path(), args, log);
    let mut scheduler = spawn(&["scheduler"], "scheduler.log");
    let mut worker = spawn(&["worker", "--concurrency", "4"], "worker.log");
    let trigger = weir(&[
        "trigger",
        "fan",
        "--param",
        &format!("ledger={}", ledger.display()),
        "--json",
    ]);
    assert!(trigger.status.success(), "{}", crate::stderr(&trigger));
    let run: serde_json::Value = serde_json::from_slice(&trigger.stdout).expect("json");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let starts = || {
        std::fs::read_to_string(&ledger)
            .map(|s| s.lines().filter(|l| l.starts_with("start")).count())
            .unwrap_or(0)
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_until("the fan-out never started", &|| starts() >= 4);
    pg.restart("fast").expect("restart fast");
    wait_until("nothing ran after the first restart", &|| starts() >= 10);
    // Down for longer than a task runs: the running tasks end while no outcome can be written.
    pg.outage("immediate", Duration::from_secs(3))
        .expect("outage");
    wait_until("nothing ran after the outage", &|| starts() >= 18);
    pg.restart("immediate").expect("restart immediate");
    let restarted = std::time::Instant::now();
    let state = || run_state(dir.path(), &run_id);
    wait_until("the run never finished after the restarts", &|| {
        matches!(state().as_deref(), Some("success" | "failed"))
    });
    let finished_after = restarted.elapsed();
    let alive = (
        scheduler.try_wait().expect("wait").is_none(),
        worker.try_wait().expect("wait").is_none(),
    );
    let _ = scheduler.kill();
    let _ = worker.kill();
    let _ = scheduler.wait();
    let _ = worker.wait();
    let logs = format!(
        "scheduler:\n{}\nworker:\n{}",
        std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
    );
    assert_eq!(
        alive,
        (true, true),
        "both processes survive the restarts\n{logs}"
    );
    assert_eq!(state().as_deref(), Some("success"), "{logs}");
    // Every task ran exactly once: its outcome was recorded, never lost and run again.
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let mut runs: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in text.lines().filter(|l| l.starts_with("start")) {
        *runs
            .entry(line.split_whitespace().nth(1).unwrap_or(""))
            .or_default() += 1;
    }
    let repeated: Vec<(&&str, &usize)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(runs.len(), 24, "{text}");
    assert!(
        repeated.is_empty(),
        "repeated executions: {repeated:?}\n{logs}"
    );
    eprintln!(
        "the run finished {:.1}s after the immediate restart",
        finished_after.as_secs_f64()
    );
}

/// Postgres: a worker paused with SIGSTOP past its lease cannot stop its own tasks; its
/// process guard fences them (kills their groups) before the scheduler gives them to another
/// worker, so the tasks' own records never show two executions of one task at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_paused_worker_is_fenced_and_no_task_runs_twice_at_once() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("alive.log");
    alive_dag(dir.path(), "pause");
    let (shutdown, scheduler) = fault_scheduler(&db, dir.path());
    let spawn_worker = || fault_worker(dir.path());
    let mut paused = spawn_worker();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let run = fault_run(&db, "pause", &log, deadline).await;
    let started = |text: &str| {
        text.lines()
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    while started(&std::fs::read_to_string(&log).unwrap_or_default()) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks never all started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &paused.id().to_string()])
        .status();
    let mut other = spawn_worker();
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &paused.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let _ = scheduler.await;
    for w in [&mut paused, &mut other] {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(done.state, RunState::Success);
    assert_tries_never_overlap(&log, 4);
}

/// From the tasks' own records (`alive TASK TRY TIME` lines of `t0`..`t{tasks-1}`): each
/// task ran a second try, and its first try's last sign of life came before the second's first.
fn assert_tries_never_overlap(log: &Path, tasks: usize) {
    let text = std::fs::read_to_string(log).expect("log");
    let mut spans: std::collections::BTreeMap<(String, String), (f64, f64)> = Default::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let at: f64 = parts[3].parse().expect("time");
        let span = spans
            .entry((parts[1].to_owned(), parts[2].to_owned()))
            .or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    }
    for i in 0..tasks {
        let task = format!("t{i}");
        let first = spans.get(&(task.clone(), "1".into())).expect("first try");
        let second = spans.get(&(task.clone(), "2".into())).expect("second try");
        assert!(
            first.1 < second.0,
            "{task}: try 1 was alive at {:.2} after try 2 started at {:.2}",
            first.1,
            second.0
        );
    }
}

/// A DAG `id` of four tasks that each write `alive TASK TRY TIME` to `params.log` every 0.2 s
/// for 8 s, in `dir/dags`.
fn alive_dag(dir: &Path, id: &str) {
    let mut dag = format!("id: {id}\nparams:\n  log: x\ntasks:\n");
    for i in 0..4 {
        dag.push_str(&format!(
            "  t{i}:\n    kind: shell\n    run: |\n      for n in $(seq 1 40); do echo \"alive $WEIR_TASK_ID $WEIR_TRY_NUMBER $(date +%s.%N)\" >> \"{{{{ params.log }}}}\"; sleep 0.2; done\n"
        ));
    }
    std::fs::create_dir_all(dir.join("dags")).expect("mkdir");
    std::fs::write(dir.join(format!("dags/{id}.yaml")), &dag).expect("dag");
}

/// Postgres: a worker whose network to the database is cut (a proxy the test controls; the
/// server keeps its session and its session lock) while its tasks run. It gets no heartbeat
/// through, so its process guard kills the tasks before their leases end; the scheduler then
/// gives them to another worker. The tasks' own records never show one task running twice at
/// once, and once the network is back the cut-off worker records nothing over the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cut_off_worker_is_fenced_and_no_task_runs_twice_at_once() {
    cut_off_worker(false).await;
}

/// The same when the network resets the worker's connections instead: the server ends its
/// sessions at once (its session lock goes, as when it dies) and new connections are refused.
/// The worker cannot confirm its session, so its guard stops the tasks within the session
/// grace; the scheduler, which sees the session gone, waits half as long again before giving
/// the tries to another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_worker_whose_connections_reset_is_fenced_and_no_task_runs_twice_at_once() {
    cut_off_worker(true).await;
}

async fn cut_off_worker(reset: bool) {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("alive.log");
    alive_dag(dir.path(), "cut");
    let (shutdown, scheduler) = fault_scheduler(&db, dir.path());
    // A scheduler judges sessions only once it has reached the database for a whole lease
    // (3 s here): the fault comes after that, so that a session end is seen for what it is.
    let sessions_judged = std::time::Instant::now() + Duration::from_millis(3500);
    let (proxy, through) = weir_testkit::CutProxy::for_url(&db.url).expect("proxy");
    let cut_dir = dir.path().join("cut");
    std::fs::create_dir(&cut_dir).expect("mkdir");
    std::fs::write(
        cut_dir.join("weir.toml"),
        format!("database_url = \"{through}\"\ndags_folder = \"../dags\"\n[scheduler]\nheartbeat_timeout = \"3s\"\n"),
    )
    .expect("config");
    let cut_off_log = cut_dir.join("worker.log");
    let mut cut_off = fault_worker_with(
        &cut_dir,
        std::fs::File::create(&cut_off_log).expect("log file"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let run = fault_run(&db, "cut", &log, deadline).await;
    let started = |text: &str| {
        text.lines()
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    while started(&std::fs::read_to_string(&log).unwrap_or_default()) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks never all started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The other worker is up and idle before the fault: it claims the tries the moment the
    // scheduler gives them back.
    let mut other = fault_worker(dir.path());
    while db.store.live_workers().await.expect("workers").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep_until(sessions_judged.into()).await;
    if reset {
        proxy.reset();
    } else {
        proxy.cut();
    }
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    proxy.heal();
    // Back on the network, the cut-off worker's late outcomes are refused (lease lost): it
    // says so for each of its four tries.
    let refused = |text: &str| {
        text.lines()
            .filter(|l| {
                l.contains("lease lost before the try ended")
                    || l.contains("the try is no longer this worker's")
            })
            .count()
    };
    while refused(&std::fs::read_to_string(&cut_off_log).unwrap_or_default()) < 4 {
        assert!(
            std::time::Instant::now() < deadline + Duration::from_secs(30),
            "the cut-off worker never tried to record its tries:\n{}",
            std::fs::read_to_string(&cut_off_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tis = db.store.task_instances(&run.run_id).await.expect("tis");
    shutdown.cancel();
    let _ = scheduler.await;
    for w in [&mut cut_off, &mut other] {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(done.state, RunState::Success);
    for t in &tis {
        assert_eq!(
            (t.state, t.try_number),
            (TaskState::Success, 2),
            "{}",
            t.task_id
        );
    }
    assert_tries_never_overlap(&log, 4);
}

/// Postgres: two `weir scheduler` processes; the active one reaches the database through a
/// proxy the test cuts, so the server keeps its session and its advisory lock. The standby
/// takes over once the lease (5 s) has expired, within seconds, and schedules; the old leader
/// stopped acting before that, and once its network is back it finds the lease taken and
/// stands by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cut_off_scheduler_steps_down_and_a_standby_takes_over() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/after.yaml"),
        "id: after\nparams:\n  log: x\ntasks:\n  a: {kind: shell, run: echo one}\n  b: {kind: shell, run: echo two, depends_on: [a]}\n",
    )
    .expect("dag");
    let (proxy, through) = weir_testkit::CutProxy::for_url(&db.url).expect("proxy");
    let spawn_scheduler = |name: &str, url: &str| {
        let home = dir.path().join(name);
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::write(
            home.join("weir.toml"),
            format!("database_url = \"{url}\"\ndags_folder = \"../dags\"\n"),
        )
        .expect("config");
        let log = dir.path().join(format!("{name}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("scheduler")
            .current_dir(&home)
            .env_remove("WEIR_DATABASE_URL")
            .env("RUST_LOG", "weir_scheduler=info,weir_store=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start scheduler");
        (child, log)
    };
    let (mut first, first_log) = spawn_scheduler("first", &through);
    wait_for_text(
        &first_log,
        "this scheduler is active",
        Duration::from_secs(30),
    )
    .await;
    let (mut second, second_log) = spawn_scheduler("second", &db.url);
    wait_for_text(&second_log, "standing by", Duration::from_secs(30)).await;

    proxy.cut();
    let cut_at = std::time::Instant::now();
    wait_for_text(
        &second_log,
        "this scheduler is active",
        Duration::from_secs(30),
    )
    .await;
    let took_over = cut_at.elapsed();
    eprintln!(
        "the standby took over {:.2}s after the cut",
        took_over.as_secs_f64()
    );
    // The lease (5 s) plus a standby's retry (2 s), with room for a loaded machine.
    assert!(
        took_over <= Duration::from_secs(10),
        "the standby took over {:.1}s after the cut",
        took_over.as_secs_f64()
    );
    // The old leader stopped on its own, before the standby took over.
    let stopped = log_time(&first_log, "lost the scheduler's lease");
    let took = log_time(&second_log, "this scheduler is active");
    assert!(
        stopped < took,
        "the old leader stopped at {stopped}, after the standby took over at {took}"
    );

    // The new leader schedules: a run triggered now completes with a worker.
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(weir_worker::run(
        db.store.clone(),
        worker_config(),
        Arc::new(weir_model::clock::SystemClock),
        shutdown.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let run = fault_run(&db, "after", Path::new("unused"), deadline).await;
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new leader never ran the DAG: {:?}",
            db.store.task_instances(&run.run_id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.state, RunState::Success);

    // Back on the network, the old leader finds the lease taken and stands by.
    proxy.heal();
    wait_for_text(
        &first_log,
        "another scheduler is active; standing by",
        Duration::from_secs(30),
    )
    .await;
    shutdown.cancel();
    let _ = worker.await;
    for s in [&mut first, &mut second] {
        let _ = s.kill();
        let _ = s.wait();
    }
    let first_text = std::fs::read_to_string(&first_log).expect("log");
    assert_eq!(
        first_text.matches("this scheduler is active").count(),
        1,
        "the old leader led again:\n{first_text}"
    );
}

/// The time of the first line of a `weir` log that contains `text`.
fn log_time(log: &Path, text: &str) -> DateTime<Utc> {
    let content = std::fs::read_to_string(log).expect("log");
    let line = content
        .lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("`{text}` is not in {}:\n{content}", log.display()));
    let stamp = line.split_whitespace().next().unwrap_or("");
    DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("no time at the start of `{line}`: {e}"))
        .with_timezone(&Utc)
}

/// A task runs as its worker's user, so without more it could read the worker's whole
/// environment (database URL, tokens) from `/proc/$PPID/environ`. The worker makes itself
/// non-dumpable, which gives its /proc files to root: the task is refused. Root reads anything,
/// so when the tests run as root the worker runs as `nobody` (uid 65534).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_task_cannot_read_its_workers_environment_through_proc() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let seen = dir.path().join("environ.txt");
    let refused = dir.path().join("refused.txt");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/peek.yaml"),
        format!(
            "id: peek\nparams:\n  log: x\ntasks:\n  a:\n    kind: shell\n    run: |\n      if tr '\\0' '\\n' < /proc/$PPID/environ > {seen}; then :; else echo refused > {refused}; fi\n",
            seen = seen.display(),
            refused = refused.display()
        ),
    )
    .expect("dag");
    let (shutdown, scheduler) = fault_scheduler(&db, dir.path());
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut cmd = if as_root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_weir"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
    };
    let mut worker = cmd
        .args(["worker", "--concurrency", "1"])
        .current_dir(dir.path())
        .env("WEIR_DATABASE_URL", &db.url)
        .env("WORKER_ONLY_TOKEN", "hunter2-not-for-tasks")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start worker");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let run = fault_run(&db, "peek", Path::new("unused"), deadline).await;
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    let _ = scheduler.await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(done.state, RunState::Success);
    let read = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(
        !read.contains("WEIR_DATABASE_URL") && !read.contains("hunter2"),
        "the task read its worker's environment:\n{read}"
    );
    assert!(refused.exists(), "the read was not refused");
}

// The attack's folder trial as a test: every broken DAG fixture (and a file of random bytes)
// dropped into a running scheduler's folder is refused with an import error naming it, while
// the scheduler goes on and the good DAG beside them still runs.

// A param, an upstream output and `foreach` items carrying shell injections (`$(…)`,
// backticks, `;`, `&&`, a newline, both quotes and a `{{ }}`) reach a shell script as data:
// no injected command runs, and the script sees each value exactly (issue #14).
