//! The engine end to end: the real scheduler and worker, real bash processes, on SQLite and
//! Postgres. Time is a manual clock (retry delays are checked exactly, without sleeping); the
//! tests drive passes and claims directly instead of waiting on timers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_model::clock::{Clock, ManualClock};
use weir_model::{RunState, RunType, TaskState};
use weir_scheduler::{Scheduler, SchedulerConfig};
use weir_store::{RunRow, Store, TaskInstanceRow};
use weir_testkit::{TestDb, both_backends};
use weir_worker::{Worker, WorkerConfig};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

/// A scheduler and a worker over one database and one dags folder.
pub(crate) struct Engine {
    store: Store,
    pub(crate) clock: Arc<ManualClock>,
    scheduler: Scheduler,
    worker: Worker,
    dir: tempfile::TempDir,
}

impl Engine {
    async fn new(db: &TestDb, dags: &[(&str, &str)]) -> Engine {
        Engine::with_worker(db, dags, worker_config()).await
    }

    /// `dags`: files of the dags folder (DAGs and the files they read), by relative path.
    pub(crate) async fn with_worker(
        db: &TestDb,
        dags: &[(&str, &str)],
        wcfg: WorkerConfig,
    ) -> Engine {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
        for (name, text) in dags {
            let path = dir.path().join("dags").join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write dag");
        }
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
    pub(crate) async fn trigger_after_sync(&mut self, dag_id: &str) -> RunRow {
        self.scheduler.sync_folder_once().await.expect("sync");
        self.trigger(dag_id, serde_json::json!({})).await
    }

    /// One scheduler pass, then every claimable try run to its end; returns how many ran.
    pub(crate) async fn tick(&mut self) -> usize {
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

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) async fn trigger(&self, dag_id: &str, params: serde_json::Value) -> RunRow {
        let row = self.store.dag(dag_id).await.expect("dag synced");
        let version = self
            .store
            .dag_version(row.version_id)
            .await
            .expect("version");
        let dag = weir_model::Dag::from_spec(version.spec).expect("valid");
        let now = self.clock.now();
        let overrides = params.as_object().cloned().unwrap_or_default();
        let interval = weir_model::DataInterval {
            start: now,
            end: now,
        };
        let new =
            weir_ops::runs::new_run(&dag, row.version_id, RunType::Manual, interval, &overrides)
                .expect("params");
        self.store
            .create_run(&new, now)
            .await
            .expect("create")
            .expect("new run")
    }

    /// Scheduler passes and worker claims until the run finishes; every claimed try runs to
    /// its end (concurrently). When nothing is runnable but retries are pending, the clock
    /// jumps to the next due time. Returns the finished run.
    pub(crate) async fn drive(&mut self, run_id: &str) -> RunRow {
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

    pub(crate) async fn tasks(&self, run_id: &str) -> Vec<TaskInstanceRow> {
        self.store.task_instances(run_id).await.expect("tis")
    }

    pub(crate) async fn state_of(&self, run_id: &str, task: &str) -> TaskState {
        self.tasks(run_id)
            .await
            .into_iter()
            .find(|t| t.task_id == task)
            .map(|t| t.state)
            .expect("task")
    }

    pub(crate) async fn log_of(&self, ti: &TaskInstanceRow, try_number: i32) -> Vec<String> {
        self.store
            .logs(ti.id, try_number, 0, 10_000)
            .await
            .expect("logs")
            .into_iter()
            .map(|l| l.line)
            .collect()
    }
}

fn scheduler_config(dir: &Path) -> SchedulerConfig {
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
        keep_runs: None,
        notify: weir_notify::NotifyConfig::default(),
    }
}

pub(crate) fn worker_config() -> WorkerConfig {
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
        secrets: Vec::new(),
        pass_env: Vec::new(),
    }
}

both_backends!(a_chain_of_twenty_tasks_runs_in_order, |db| {
    let mut dag = String::from("id: chain\ntasks:\n");
    for i in 0..20 {
        dag.push_str(&format!("  t{i:02}:\n    kind: shell\n    run: echo {i} >> \"$ORDER_FILE\"\n    env: {{ORDER_FILE: \"{{{{ params.file }}}}\"}}\n"));
        if i > 0 {
            dag.push_str(&format!("    depends_on: [t{:02}]\n", i - 1));
        }
    }
    dag.push_str("params:\n  file: none\n");
    let mut e = Engine::new(&db, &[("chain.yaml", &dag)]).await;
    let file = e.path("order.txt");
    let run = e
        .trigger(
            "chain",
            serde_json::json!({"file": file.display().to_string()}),
        )
        .await;
    let done = e.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Success);
    let order = std::fs::read_to_string(&file).expect("order file");
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(order.lines().collect::<Vec<_>>(), expected);
    let tis = e.tasks(&run.run_id).await;
    assert!(
        tis.iter()
            .all(|t| t.state == TaskState::Success && t.try_number == 1)
    );
    let mut by_id: Vec<&TaskInstanceRow> = tis.iter().collect();
    by_id.sort_by_key(|t| t.task_id.clone());
    for pair in by_id.windows(2) {
        assert!(
            pair[0].ended_at <= pair[1].started_at,
            "{} started before {} ended",
            pair[1].task_id,
            pair[0].task_id
        );
    }
});

both_backends!(
    a_flaky_task_succeeds_on_its_third_try_after_the_configured_delays,
    |db| {
        let dag = "id: flaky\ntasks:\n  flaky:\n    kind: shell\n    retries: 3\n    retry_delay: 10s\n    retry_backoff: 3\n    run: |\n      n=$(cat \"{{ params.counter }}\" 2>/dev/null || echo 0)\n      echo $((n + 1)) > \"{{ params.counter }}\"\n      echo \"try {{ try_number }}\"\n      [ \"$n\" -ge 2 ]\nparams:\n  counter: x\n";
        let mut e = Engine::new(&db, &[("flaky.yaml", dag)]).await;
        let counter = e.path("counter");
        let run = e
            .trigger(
                "flaky",
                serde_json::json!({"counter": counter.display().to_string()}),
            )
            .await;
        let start = e.clock.now();
        // Try 1 fails; it is due again after retry_delay (10s).
        e.scheduler.run_once().await.expect("pass");
        let ti = e.worker.claim(1).await.expect("claim").remove(0);
        e.worker
            .run_try(ti.clone(), CancellationToken::new())
            .await
            .expect("try 1");
        let row = e.store.task_instance(ti.id).await.expect("row");
        assert_eq!((row.state, row.try_number), (TaskState::UpForRetry, 1));
        assert_eq!(row.due_at, Some(start + chrono::Duration::seconds(10)));
        assert_eq!(row.error.as_deref(), Some("exit code 1"));
        // Not due yet: nothing to claim.
        e.clock.advance(chrono::Duration::seconds(9));
        e.scheduler.run_once().await.expect("pass");
        assert!(
            e.worker.claim(1).await.expect("claim").is_empty(),
            "claimed before the retry delay"
        );
        e.clock.advance(chrono::Duration::seconds(1));
        e.scheduler.run_once().await.expect("pass");
        let ti = e.worker.claim(1).await.expect("claim").remove(0);
        assert_eq!(ti.try_number, 2);
        e.worker
            .run_try(ti.clone(), CancellationToken::new())
            .await
            .expect("try 2");
        // Second retry: delay * backoff = 30s.
        let row = e.store.task_instance(ti.id).await.expect("row");
        assert_eq!(
            row.due_at,
            Some(e.clock.now() + chrono::Duration::seconds(30))
        );
        let done = e.drive(&run.run_id).await;
        assert_eq!(done.state, RunState::Success);
        let row = e.store.task_instance(ti.id).await.expect("row");
        assert_eq!((row.state, row.try_number), (TaskState::Success, 3));
        assert!(
            e.log_of(&row, 3).await.contains(&"try 3".to_owned()),
            "each try has its own log"
        );
        assert!(e.log_of(&row, 1).await.contains(&"try 1".to_owned()));
    }
);

both_backends!(
    exhausted_retries_resolve_every_trigger_rule_like_airflow,
    |db| {
        // `ok` succeeds, `bad` fails (after its one retry), `off` is skipped by `when`.
        // Each rule's task depends on the pair in its name; expectations from Airflow's docs.
        let cases = [
            ("all_success", "ok, bad", TaskState::UpstreamFailed),
            ("all_failed", "bad", TaskState::Success),
            ("all_done", "ok, bad", TaskState::Success),
            ("all_skipped", "off", TaskState::Success),
            ("one_success", "ok, bad", TaskState::Success),
            ("one_failed", "ok, bad", TaskState::Success),
            ("one_done", "bad, off", TaskState::Success),
            ("none_failed", "ok, off", TaskState::Success),
            (
                "none_failed_min_one_success",
                "bad, ok",
                TaskState::UpstreamFailed,
            ),
            ("none_skipped", "ok, off", TaskState::Skipped),
            ("always", "bad", TaskState::Success),
        ];
        let mut dag = String::from(
            "id: rules\nparams:\n  on: false\ndefaults:\n  retry_delay: 1s\ntasks:\n  ok: {kind: shell, run: \"true\"}\n  bad: {kind: shell, run: \"exit 3\", retries: 1}\n  off: {kind: shell, run: \"true\", when: \"{{ params.on }}\"}\n  after_skip: {kind: noop, depends_on: [off]}\n",
        );
        for (rule, deps, _) in cases {
            dag.push_str(&format!(
                "  r_{rule}: {{kind: noop, trigger_rule: {rule}, depends_on: [{deps}]}}\n"
            ));
        }
        let mut e = Engine::new(&db, &[("rules.yaml", &dag)]).await;
        let run = e.trigger("rules", serde_json::json!({})).await;
        let done = e.drive(&run.run_id).await;
        assert_eq!(e.state_of(&run.run_id, "ok").await, TaskState::Success);
        let bad = e
            .tasks(&run.run_id)
            .await
            .into_iter()
            .find(|t| t.task_id == "bad")
            .expect("bad");
        assert_eq!(
            (bad.state, bad.try_number),
            (TaskState::Failed, 2),
            "one retry, then failed"
        );
        assert_eq!(e.state_of(&run.run_id, "off").await, TaskState::Skipped);
        assert_eq!(
            e.state_of(&run.run_id, "after_skip").await,
            TaskState::Skipped,
            "skips propagate under all_success"
        );
        for (rule, deps, expected) in cases {
            assert_eq!(
                e.state_of(&run.run_id, &format!("r_{rule}")).await,
                expected,
                "{rule} over [{deps}]"
            );
        }
        // Leaves include r_all_success (upstream_failed): Airflow's leaf rule fails the run.
        assert_eq!(done.state, RunState::Failed);
    }
);

both_backends!(a_timeout_kills_the_whole_process_group, |db| {
    let dag = "id: slow\ntasks:\n  slow:\n    kind: shell\n    timeout: 1s\n    run: |\n      sleep 300 &\n      echo $! > \"{{ params.pidfile }}\"\n      sleep 300\nparams:\n  pidfile: x\n";
    let mut e = Engine::new(&db, &[("slow.yaml", dag)]).await;
    let pidfile = e.path("pid");
    let run = e
        .trigger(
            "slow",
            serde_json::json!({"pidfile": pidfile.display().to_string()}),
        )
        .await;
    let started = std::time::Instant::now();
    let done = e.drive(&run.run_id).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the try was not stopped"
    );
    assert_eq!(done.state, RunState::Failed);
    let ti = e.tasks(&run.run_id).await.remove(0);
    assert_eq!(ti.error.as_deref(), Some("timed out after 1s"));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    // The background `sleep` was in the group: it must be gone (or a zombie being reaped).
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "grandchild {pid} survived the timeout");
});

both_backends!(templates_params_and_outputs_flow_downstream, |db| {
    let dag = "id: flow\nparams:\n  greeting: hello\n  n: 2\ntasks:\n  produce:\n    kind: shell\n    run: |\n      echo \"rows=$(( {{ params.n }} * 21 ))\" >> \"$WEIR_OUTPUT\"\n      echo \"day={{ ds }}\" >> \"$WEIR_OUTPUT\"\n  consume:\n    kind: shell\n    depends_on: [produce]\n    run: |\n      echo \"{{ params.greeting }} {{ tasks.produce.outputs.rows }} {{ tasks.produce.outputs.day }} {{ ds_add(ds=ds, days=1) }} $WEIR_DS {{ env.WEIR_TEST_ALLOWED }}\"\n      echo \"echo={{ params.greeting }}\" >> \"$WEIR_OUTPUT\"\n";
    let mut e = Engine::new(&db, &[("flow.yaml", dag)]).await;
    let run = e
        .trigger("flow", serde_json::json!({"greeting": "bonjour"}))
        .await;
    let done = e.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Success);
    let tis = e.tasks(&run.run_id).await;
    let produce = tis
        .iter()
        .find(|t| t.task_id == "produce")
        .expect("produce");
    assert_eq!(
        produce.outputs,
        Some(serde_json::json!({"rows": "42", "day": "2024-03-01"}))
    );
    let consume = tis
        .iter()
        .find(|t| t.task_id == "consume")
        .expect("consume");
    assert!(
        e.log_of(consume, 1)
            .await
            .contains(&"bonjour 42 2024-03-01 2024-03-02 2024-03-01 yes".to_owned()),
        "{:?}",
        e.log_of(consume, 1).await
    );
    assert_eq!(
        consume.outputs,
        Some(serde_json::json!({"echo": "bonjour"}))
    );
});

both_backends!(a_template_reads_the_outputs_of_any_ancestor, |db| {
    let dag = "id: far\ntasks:\n  extract:\n    kind: shell\n    run: echo rows=7 >> \"$WEIR_OUTPUT\"\n  check:\n    kind: shell\n    depends_on: [extract]\n    run: echo checked\n  report:\n    kind: shell\n    depends_on: [check]\n    when: \"{{ tasks.extract.outputs.rows != '0' }}\"\n    run: echo \"extracted {{ tasks.extract.outputs.rows }}\"\n";
    let mut e = Engine::new(&db, &[("far.yaml", dag)]).await;
    let run = e.trigger("far", serde_json::json!({})).await;
    let done = e.drive(&run.run_id).await;
    assert_eq!(
        done.state,
        RunState::Success,
        "{:?}",
        e.tasks(&run.run_id).await
    );
    let report = e
        .tasks(&run.run_id)
        .await
        .into_iter()
        .find(|t| t.task_id == "report")
        .expect("report");
    assert_eq!(report.state, TaskState::Success);
    assert!(
        e.log_of(&report, 1)
            .await
            .contains(&"extracted 7".to_owned()),
        "{:?}",
        e.log_of(&report, 1).await
    );
});

both_backends!(foreach_maps_and_when_skips, |db| {
    let dag = "id: fan\nparams:\n  tables: [a, b, c]\n  full: false\ntasks:\n  list:\n    kind: shell\n    run: echo 'names=[\"x\", \"y\"]' >> \"$WEIR_OUTPUT\"\n  per_table:\n    kind: shell\n    foreach: \"{{ params.tables | tojson }}\"\n    run: echo \"table={{ item }}\" >> \"$WEIR_OUTPUT\"\n  per_name:\n    kind: shell\n    depends_on: [list]\n    foreach: \"{{ tasks.list.outputs.names }}\"\n    run: echo \"{{ item }}\"\n  empty:\n    kind: noop\n    foreach: []\n  full_only:\n    kind: noop\n    when: \"{{ params.full }}\"\n  summary:\n    kind: shell\n    depends_on: [per_table]\n    run: echo \"{{ tasks.per_table.outputs | length }}\"\n";
    let mut e = Engine::new(&db, &[("fan.yaml", dag)]).await;
    let run = e.trigger("fan", serde_json::json!({})).await;
    let done = e.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Success);
    let tis = e.tasks(&run.run_id).await;
    let mapped: Vec<(i32, Option<serde_json::Value>, Option<serde_json::Value>)> = tis
        .iter()
        .filter(|t| t.task_id == "per_table")
        .map(|t| (t.map_index, t.map_item.clone(), t.outputs.clone()))
        .collect();
    assert_eq!(
        mapped,
        vec![
            (0, Some("a".into()), Some(serde_json::json!({"table": "a"}))),
            (1, Some("b".into()), Some(serde_json::json!({"table": "b"}))),
            (2, Some("c".into()), Some(serde_json::json!({"table": "c"}))),
        ]
    );
    assert_eq!(
        tis.iter()
            .filter(|t| t.task_id == "per_name" && t.state == TaskState::Success)
            .count(),
        2,
        "mapped over an upstream output"
    );
    assert_eq!(
        e.state_of(&run.run_id, "empty").await,
        TaskState::Skipped,
        "a foreach over nothing is skipped"
    );
    assert_eq!(
        e.state_of(&run.run_id, "full_only").await,
        TaskState::Skipped
    );
    let summary = tis
        .iter()
        .find(|t| t.task_id == "summary")
        .expect("summary");
    assert!(
        e.log_of(summary, 1).await.contains(&"3".to_owned()),
        "downstream sees the 3 mapped outputs"
    );
});

both_backends!(clearing_a_failed_task_reruns_it_and_its_downstream, |db| {
    let dag = "id: clr\nparams:\n  flag: x\ntasks:\n  check:\n    kind: shell\n    run: test -f \"{{ params.flag }}\"\n  after:\n    kind: shell\n    depends_on: [check]\n    run: echo after\n";
    let mut e = Engine::new(&db, &[("clr.yaml", dag)]).await;
    let flag = e.path("flag");
    let run = e
        .trigger(
            "clr",
            serde_json::json!({"flag": flag.display().to_string()}),
        )
        .await;
    let done = e.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Failed);
    assert_eq!(
        e.state_of(&run.run_id, "after").await,
        TaskState::UpstreamFailed
    );
    std::fs::write(&flag, "").expect("flag");
    let items: Vec<(i64, i32)> = e
        .tasks(&run.run_id)
        .await
        .iter()
        .map(|t| (t.id, 1))
        .collect();
    assert_eq!(
        e.store
            .clear_tasks(&run.run_id, &items)
            .await
            .expect("clear"),
        2
    );
    let done = e.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Success);
    let check = e
        .tasks(&run.run_id)
        .await
        .into_iter()
        .find(|t| t.task_id == "check")
        .expect("check");
    assert_eq!(
        (check.state, check.try_number),
        (TaskState::Success, 2),
        "the cleared task ran a second try"
    );
});

both_backends!(
    a_scheduler_restart_mid_run_loses_nothing_and_duplicates_no_run,
    |db| {
        let dag = "id: daily\nschedule: \"0 6 * * *\"\nstart_date: 2024-02-28\ncatchup: true\ntasks:\n  a: {kind: shell, run: echo a}\n  b: {kind: shell, run: echo b, depends_on: a}\n";
        let mut e = Engine::new(&db, &[("daily.yaml", dag)]).await;
        // 2024-02-28, 02-29 (leap day) and 03-01 06:00 intervals: two have ended by 12:00 on 03-01.
        let runs = e
            .store
            .list_runs(&weir_store::RunFilter::default())
            .await
            .expect("runs");
        assert_eq!(runs.len(), 2);
        let first = runs.iter().map(|r| r.run_id.clone()).min().expect("run");
        // Run `a` of the first run, then "restart": a new scheduler with empty caches.
        e.scheduler.run_once().await.expect("pass");
        let claimed = e.worker.claim(8).await.expect("claim");
        assert_eq!(claimed.len(), 2, "`a` of both runs");
        for ti in claimed {
            e.worker
                .run_try(ti, CancellationToken::new())
                .await
                .expect("try");
        }
        e.scheduler = Scheduler::new(
            e.store.clone(),
            scheduler_config(e.dir.path()),
            Arc::clone(&e.clock) as Arc<dyn Clock>,
        );
        let done = e.drive(&first).await;
        assert_eq!(done.state, RunState::Success);
        let runs = e
            .store
            .list_runs(&weir_store::RunFilter::default())
            .await
            .expect("runs");
        assert_eq!(
            runs.len(),
            2,
            "the restarted scheduler created no duplicate run"
        );
        for run in &runs {
            let tis = e.tasks(&run.run_id).await;
            assert!(
                tis.iter().all(|t| t.try_number <= 1),
                "no task ran twice: {tis:?}"
            );
        }
    }
);

both_backends!(
    a_backfill_creates_exactly_the_dry_run_intervals_and_renders_ds_per_run,
    |db| {
        let dag = "id: bf\nschedule: \"0 6 * * *\"\ntimezone: America/New_York\nstart_date: 2024-03-01\ncatchup: false\npaused: true\nparams:\n  out: x\ntasks:\n  stamp:\n    kind: shell\n    run: echo \"{{ ds }} {{ data_interval_start }}\" >> \"{{ params.out }}\"\n";
        let mut e = Engine::new(&db, &[("bf.yaml", dag)]).await;
        let out = e.path("stamps");
        let row = e.store.dag("bf").await.expect("dag");
        let parsed =
            weir_model::Dag::from_spec(e.store.dag_version(row.version_id).await.expect("v").spec)
                .expect("dag");
        let from = "2024-03-09".parse().expect("date");
        let to = "2024-03-11".parse().expect("date");
        let planned = parsed.plan_backfill(from, to).expect("plan");
        let overrides = serde_json::Map::from_iter([(
            "out".to_owned(),
            serde_json::json!(out.display().to_string()),
        )]);
        let mut run_ids = Vec::new();
        for interval in &planned {
            let new = weir_ops::runs::new_run(
                &parsed,
                row.version_id,
                RunType::Backfill,
                *interval,
                &overrides,
            )
            .expect("run");
            run_ids.push(
                e.store
                    .create_run(&new, e.clock.now())
                    .await
                    .expect("create")
                    .expect("new")
                    .run_id,
            );
            // Creating it again is a no-op: backfills are idempotent.
            assert!(
                e.store
                    .create_run(&new, e.clock.now())
                    .await
                    .expect("again")
                    .is_none()
            );
        }
        for id in &run_ids {
            assert_eq!(e.drive(id).await.state, RunState::Success);
        }
        let runs = e
            .store
            .list_runs(&weir_store::RunFilter {
                dag_id: Some("bf".into()),
                ..Default::default()
            })
            .await
            .expect("runs");
        let mut got: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs
            .iter()
            .map(|r| (r.data_interval_start, r.data_interval_end))
            .collect();
        got.sort();
        assert_eq!(
            got,
            planned.iter().map(|i| (i.start, i.end)).collect::<Vec<_>>(),
            "exactly the dry run's intervals, paused DAG or not"
        );
        let mut stamps: Vec<String> = std::fs::read_to_string(&out)
            .expect("stamps")
            .lines()
            .map(str::to_owned)
            .collect();
        stamps.sort();
        // 06:00 New York is 11:00Z before DST (March 10th, 2024) and 10:00Z after; dates are
        // written in the DAG's zone, with its offset.
        assert_eq!(
            stamps,
            [
                "2024-03-09 2024-03-09T06:00:00-05:00",
                "2024-03-10 2024-03-10T06:00:00-04:00",
                "2024-03-11 2024-03-11T06:00:00-04:00"
            ]
        );
    }
);

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
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["worker", "--concurrency", "4"])
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
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
            .env("RUST_LOG", "weir_scheduler=info")
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
    // Still standing by after several of its retries (every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
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

both_backends!(
    a_dag_whose_file_is_gone_stops_getting_runs_and_comes_back_with_a_file,
    |db| {
        let dag = "id: hourly\nschedule: \"0 * * * *\"\nstart_date: 2024-03-01\ncatchup: false\ntasks:\n  a: {kind: shell, run: echo a}\n  b: {kind: shell, run: echo b, depends_on: a}\n";
        let mut e = Engine::new(&db, &[("hourly.yaml", dag)]).await;
        let count = |e: &Engine| {
            let store = e.store.clone();
            async move {
                store
                    .list_runs(&weir_store::RunFilter {
                        dag_id: Some("hourly".into()),
                        limit: 1000,
                        ..Default::default()
                    })
                    .await
                    .expect("runs")
                    .len()
            }
        };
        assert_eq!(count(&e).await, 1, "the latest interval's run");
        let running = e
            .store
            .list_runs(&weir_store::RunFilter::default())
            .await
            .expect("runs")
            .remove(0);
        // Start the run, then delete the file: the run finishes on its pinned version.
        e.tick().await;
        std::fs::remove_file(e.path("dags/hourly.yaml")).expect("rm");
        e.clock.set(t("2024-03-01T15:30:00Z"));
        e.scheduler.run_once().await.expect("pass");
        let row = e.store.dag("hourly").await.expect("history kept");
        assert!(row.removed_at.is_some(), "marked removed");
        assert_eq!(count(&e).await, 1, "no new scheduled run for a removed DAG");
        assert_eq!(e.drive(&running.run_id).await.state, RunState::Success);
        let refused = weir_ops::actions::trigger(
            &e.store,
            "hourly",
            &serde_json::Map::new(),
            None,
            false,
            e.clock.now(),
        )
        .await
        .expect_err("trigger refused");
        let text = refused.to_string();
        assert!(
            text.contains("removed") && text.contains("hourly.yaml"),
            "says why: {text}"
        );
        // Another file defining the id brings it back (a rename), and it is scheduled again.
        std::fs::write(e.path("dags/renamed.yml"), dag).expect("write");
        e.clock.set(t("2024-03-01T16:30:00Z"));
        e.scheduler.run_once().await.expect("pass");
        let row = e.store.dag("hourly").await.expect("dag");
        assert_eq!(row.removed_at, None, "active again");
        assert!(row.file.ends_with("renamed.yml"), "{}", row.file);
        assert_eq!(count(&e).await, 2, "scheduled again");
        // A file that no longer parses still claims its DAG: its last good version stays.
        std::fs::write(e.path("dags/renamed.yml"), "id: hourly\ntasks: [oops\n").expect("write");
        e.scheduler.run_once().await.expect("pass");
        assert_eq!(e.store.dag("hourly").await.expect("dag").removed_at, None);
        // A file whose id changed no longer defines the old one.
        std::fs::write(
            e.path("dags/renamed.yml"),
            dag.replace("id: hourly", "id: other"),
        )
        .expect("write");
        e.scheduler.run_once().await.expect("pass");
        assert!(
            e.store
                .dag("hourly")
                .await
                .expect("dag")
                .removed_at
                .is_some()
        );
        assert_eq!(e.store.dag("other").await.expect("dag").removed_at, None);
        // A process that marked it wrongly (another folder) is corrected by the next scan.
        e.store
            .mark_removed_dags(&Default::default(), &Default::default(), e.clock.now())
            .await
            .expect("mark");
        e.scheduler.run_once().await.expect("pass");
        assert_eq!(e.store.dag("other").await.expect("dag").removed_at, None);
    }
);

both_backends!(
    a_midnight_dag_east_of_utc_renders_its_own_days_across_dst,
    |db| {
        let dag = "id: berlin\nschedule: \"@daily\"\ntimezone: Europe/Berlin\nstart_date: 2024-03-01\ncatchup: false\npaused: true\nparams:\n  out: x\ntasks:\n  stamp:\n    kind: shell\n    run: echo \"{{ ds }} {{ ds_utc }} {{ data_interval_end }}\" >> \"{{ params.out }}\"\n";
        let mut e = Engine::new(&db, &[("berlin.yaml", dag)]).await;
        let out = e.path("stamps");
        let (version_id, parsed) = weir_ops::actions::latest_dag(&e.store, "berlin")
            .await
            .expect("dag");
        let planned = parsed
            .plan_backfill(
                "2024-03-30".parse().expect("d"),
                "2024-04-01".parse().expect("d"),
            )
            .expect("plan");
        let overrides = serde_json::Map::from_iter([(
            "out".to_owned(),
            serde_json::json!(out.display().to_string()),
        )]);
        for interval in &planned {
            let new = weir_ops::runs::new_run(
                &parsed,
                version_id,
                RunType::Backfill,
                *interval,
                &overrides,
            )
            .expect("run");
            let run = e
                .store
                .create_run(&new, e.clock.now())
                .await
                .expect("create")
                .expect("new");
            assert_eq!(e.drive(&run.run_id).await.state, RunState::Success);
        }
        let stamps = std::fs::read_to_string(&out).expect("stamps");
        // Berlin springs forward on March 31st, 2024: that day has 23 hours.
        assert_eq!(
            stamps.lines().collect::<Vec<_>>(),
            [
                "2024-03-30 2024-03-29 2024-03-31T00:00:00+01:00",
                "2024-03-31 2024-03-30 2024-04-01T00:00:00+02:00",
                "2024-04-01 2024-03-31 2024-04-02T00:00:00+02:00",
            ]
        );
    }
);

both_backends!(a_clear_on_the_latest_version_reruns_the_fixed_dag, |db| {
    let broken = "id: fixme\ntasks:\n  a: {kind: shell, run: exit 3}\n  gone: {kind: noop}\n";
    let mut e = Engine::new(&db, &[("fixme.yaml", broken)]).await;
    let run = e.trigger("fixme", serde_json::json!({})).await;
    assert_eq!(e.drive(&run.run_id).await.state, RunState::Failed);
    let first = e.store.dag("fixme").await.expect("dag").version_id;
    std::fs::write(
            e.path("dags/fixme.yaml"),
            "id: fixme\ntasks:\n  a: {kind: shell, run: echo fixed}\n  added: {kind: shell, run: echo new, depends_on: [a]}\n",
        )
        .expect("fix");
    e.scheduler.sync_folder_once().await.expect("sync");
    let fixed = e.store.dag("fixme").await.expect("dag").version_id;
    assert_ne!(first, fixed);
    // The default reruns the pinned version: the same failure.
    let row = e.store.run(&run.run_id).await.expect("run");
    let selection = weir_ops::actions::ClearSelection {
        failed_only: true,
        ..Default::default()
    };
    weir_ops::actions::clear(&e.store, &row, &selection)
        .await
        .expect("clear");
    assert_eq!(e.drive(&run.run_id).await.state, RunState::Failed);
    // On the latest version: the fix runs, the new task is added, the dropped one removed.
    let row = e.store.run(&run.run_id).await.expect("run");
    let selection = weir_ops::actions::ClearSelection {
        failed_only: true,
        latest_version: true,
        ..Default::default()
    };
    weir_ops::actions::clear(&e.store, &row, &selection)
        .await
        .expect("clear");
    let done = e.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Success);
    assert_eq!(done.version_id, fixed, "the run moved to the fixed version");
    let tis = e.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    assert_eq!(
        (
            by_id("a").state,
            by_id("a").version_id,
            by_id("a").try_number
        ),
        (TaskState::Success, Some(fixed), 3)
    );
    assert_eq!(
        (by_id("added").state, by_id("added").version_id),
        (TaskState::Success, Some(fixed))
    );
    assert_eq!(by_id("gone").state, TaskState::Removed);
    assert_eq!(
        by_id("gone").version_id,
        Some(first),
        "its try ran the first version"
    );
    // Each try's log names the version it ran.
    let a = by_id("a");
    assert!(
        e.log_of(a, 1)
            .await
            .contains(&format!("DAG version {first}"))
    );
    assert!(
        e.log_of(a, 3)
            .await
            .contains(&format!("DAG version {fixed}"))
    );
});

both_backends!(a_duplicate_takes_over_when_the_first_file_goes, |db| {
    let first = "id: twin\ntasks:\n  a: {kind: shell, run: echo first}\n";
    let second = "id: twin\ntasks:\n  a: {kind: shell, run: echo second}\n";
    let mut e = Engine::new(&db, &[("a.yaml", first), ("b.yaml", second)]).await;
    let row = e.store.dag("twin").await.expect("dag");
    assert!(row.file.ends_with("a.yaml"), "{}", row.file);
    let errors = e.store.import_errors().await.expect("errors");
    assert!(
        errors
            .iter()
            .any(|x| x.file.ends_with("b.yaml") && x.message.contains("already used by")),
        "{errors:?}"
    );
    std::fs::remove_file(e.path("dags/a.yaml")).expect("rm");
    e.scheduler.run_once().await.expect("pass");
    let row = e.store.dag("twin").await.expect("dag");
    assert!(
        row.file.ends_with("b.yaml"),
        "the duplicate took over: {}",
        row.file
    );
    assert_eq!(row.removed_at, None);
    assert!(e.store.import_errors().await.expect("errors").is_empty());
});

// Values that used to overflow date arithmetic and crash the scheduler for good: the longest
// durations a DAG may write, a huge backoff, a sensor checking again in a century. Every
// pass and try completes; the instance waits, nothing panics.
both_backends!(
    extreme_durations_never_crash_the_scheduler_or_the_worker,
    |db| {
        let dag = "id: extreme\ntasks:\n  fail:\n    kind: shell\n    run: exit 1\n    retries: 1000\n    retry_delay: 36500d\n    retry_backoff: 1000000\n    max_retry_delay: 36500d\n  wait:\n    kind: wait_for\n    file: /nonexistent/never\n    interval: 36500d\n    timeout: 36500d\n";
        let mut e = Engine::new(&db, &[("extreme.yaml", dag)]).await;
        let run = e.trigger("extreme", serde_json::json!({})).await;
        for _ in 0..3 {
            e.tick().await;
        }
        let tis = e.tasks(&run.run_id).await;
        for t in &tis {
            assert_eq!(t.state, TaskState::UpForRetry, "{t:?}");
            let due = t.due_at.expect("due");
            assert!(
                due > e.clock.now() + chrono::Duration::days(365 * 99),
                "{due}"
            );
        }
        // A folder gone (renamed, unmounted) stops nothing and removes nothing.
        std::fs::rename(e.path("dags"), e.path("dags.moved")).expect("mv");
        e.scheduler
            .run_once()
            .await
            .expect("a pass without the folder");
        assert_eq!(e.store.dag("extreme").await.expect("dag").removed_at, None);
        std::fs::rename(e.path("dags.moved"), e.path("dags")).expect("mv back");
        e.scheduler.run_once().await.expect("pass");
    }
);

// A start date centuries ago with catchup: runs are created only as fast as they may run
// (`max_active_runs`), and only the latest `max_catchup_runs` intervals are caught up.
both_backends!(a_catchup_from_year_one_is_bounded, |db| {
    let dag = "id: ancient\nschedule: \"@hourly\"\nstart_date: 0001-01-01\ncatchup: true\nmax_active_runs: 3\nmax_catchup_runs: 5\ntasks:\n  a: {kind: shell, run: echo a}\n";
    let mut e = Engine::new(&db, &[("ancient.yaml", dag)]).await;
    let runs = |e: &Engine| {
        let store = e.store.clone();
        async move {
            let mut r = store
                .list_runs(&weir_store::RunFilter {
                    dag_id: Some("ancient".into()),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .expect("runs");
            r.sort_by_key(|r| r.logical_date);
            r
        }
    };
    let first = runs(&e).await;
    assert_eq!(first.len(), 3, "no more runs than may be active");
    // The latest 5 complete hourly intervals end by 12:00: 07:00 .. 11:00.
    assert_eq!(first[0].logical_date, t("2024-03-01T07:00:00Z"));
    e.scheduler.run_once().await.expect("pass");
    assert_eq!(runs(&e).await.len(), 3, "still bounded while they wait");
    for r in &first {
        assert_eq!(e.drive(&r.run_id).await.state, RunState::Success);
    }
    e.scheduler.run_once().await.expect("pass");
    let all = runs(&e).await;
    assert_eq!(all.len(), 5, "the rest of the window, no more");
    assert_eq!(all[4].logical_date, t("2024-03-01T11:00:00Z"));
});

// A heartbeat extends only the tries the worker runs: a row left `running` under its id that
// it does not run (a claim whose answer was lost) expires and is reaped, not held forever;
// and a try claimed while a heartbeat's statement ran is never taken for lost.
both_backends!(
    heartbeats_extend_only_tries_the_worker_runs_and_never_stop_a_fresh_claim,
    |db| {
        let dag =
            "id: beat\ntasks:\n  a: {kind: shell, run: echo a}\n  b: {kind: shell, run: echo b}\n";
        let mut e = Engine::new(&db, &[("beat.yaml", dag)]).await;
        let run = e.trigger("beat", serde_json::json!({})).await;
        e.scheduler.run_once().await.expect("pass");
        // `a`: claimed, tracked as running here. `b` stays queued for now.
        let first = e.worker.claim(1).await.expect("claim");
        assert_eq!(first.len(), 1);
        let a = first[0].id;
        let a_token = CancellationToken::new();
        e.worker.track(a, a_token.clone());
        // `b` is claimed while the heartbeat's statement is in flight.
        let b_token = CancellationToken::new();
        let worker = e.worker.clone();
        let (token, claimed) = (
            b_token.clone(),
            std::sync::Arc::new(std::sync::Mutex::new(None)),
        );
        let slot = std::sync::Arc::clone(&claimed);
        e.worker
            .heartbeat_then(async move {
                let b = worker.claim(1).await.expect("claim b");
                worker.track(b[0].id, token);
                *slot.lock().expect("slot") = Some(b[0].clone());
            })
            .await
            .expect("heartbeat");
        assert!(!a_token.is_cancelled(), "a try held is kept");
        assert!(
            !b_token.is_cancelled(),
            "a try claimed during the heartbeat is not taken for lost"
        );
        let b = claimed.lock().expect("slot").clone().expect("b claimed");
        // An orphan: `b`'s row is ours but this worker forgets it (as after a lost answer).
        e.worker.untrack(b.id);
        let lease_before = e
            .store
            .task_instance(b.id)
            .await
            .expect("b")
            .lease_expires_at;
        e.clock.set(e.clock.now() + chrono::Duration::seconds(20));
        e.worker.heartbeat().await.expect("heartbeat");
        let b_row = e.store.task_instance(b.id).await.expect("b");
        assert_eq!(
            b_row.lease_expires_at, lease_before,
            "an orphan's lease is not extended"
        );
        let a_row = e.store.task_instance(a).await.expect("a");
        assert!(
            a_row.lease_expires_at > lease_before,
            "a tracked try's lease is"
        );
        // Past its lease the orphan is reaped and retried; it then runs to success.
        e.clock.set(e.clock.now() + chrono::Duration::seconds(20));
        e.worker.heartbeat().await.expect("heartbeat");
        e.scheduler.run_once().await.expect("pass");
        let b_row = e.store.task_instance(b.id).await.expect("b");
        assert_ne!(
            b_row.state,
            TaskState::Running,
            "the orphan was reaped: {b_row:?}"
        );
        e.worker.untrack(a);
        e.worker
            .run_try(first[0].clone(), CancellationToken::new())
            .await
            .expect("a");
        assert_eq!(e.drive(&run.run_id).await.state, RunState::Success);
    }
);

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
    let mut cut_off = fault_worker(&cut_dir);
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
    // Back on the network, the cut-off worker's late outcomes are refused (lease lost).
    tokio::time::sleep(Duration::from_secs(2)).await;
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
both_backends!(
    broken_files_dropped_into_a_running_folder_stop_nothing,
    |db| {
        let mut engine = Engine::new(
            &db,
            &[(
                "good.yaml",
                "id: good\ntasks:\n  a: {kind: shell, run: echo fine}\n",
            )],
        )
        .await;
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/data/invalid");
        let mut dropped = Vec::new();
        for entry in std::fs::read_dir(&fixtures).expect("fixtures") {
            let path = entry.expect("entry").path();
            let name = format!(
                "broken_{}",
                path.file_name().expect("name").to_string_lossy()
            );
            std::fs::copy(&path, engine.path("dags").join(&name)).expect("copy");
            dropped.push(name);
        }
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(engine.path("dags/broken_noise.yaml"), noise).expect("noise");
        dropped.push("broken_noise.yaml".into());
        for _ in 0..3 {
            engine
                .scheduler
                .run_once()
                .await
                .expect("a pass with broken files");
        }
        let errors = engine.store().import_errors().await.expect("import errors");
        for name in dropped
            .iter()
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        {
            assert!(
                errors.iter().any(|e| e.file.ends_with(name.as_str())),
                "{name} has no import error: {errors:?}"
            );
        }
        let run = engine.trigger("good", serde_json::json!({})).await;
        let done = engine.drive(&run.run_id).await;
        assert_eq!(done.state, RunState::Success);
    }
);

// A param, an upstream output and `foreach` items carrying shell injections (`$(…)`,
// backticks, `;`, `&&`, a newline, both quotes and a `{{ }}`) reach a shell script as data:
// no injected command runs, and the script sees each value exactly (issue #14).
both_backends!(values_in_shell_scripts_are_data_never_code, |db| {
    let mut engine = Engine::new(&db, &[]).await;
    let pwned = engine.path("pwned");
    let p = pwned.display();
    let evil = format!(
        "a$(touch {p}.1)b`touch {p}.2`c; touch {p}.3 && touch {p}.4\ntouch {p}.5 \" ; touch {p}.6 ; \" ' ; touch {p}.7 ; ' {{{{ 7*7 }}}}"
    );
    let log = engine.path("seen.log");
    let dag = "id: inject\nparams:\n  evil: x\n  evil_line: x\n  items: []\n  log: x\ntasks:\n  produce:\n    kind: shell\n    run: |\n      printf 'value=%s\\n' \"{{ params.evil_line }}\" >> \"$WEIR_OUTPUT\"\n  consume:\n    kind: shell\n    depends_on: [produce]\n    run: |\n      printf 'param:%s|\\n' \"{{ params.evil }}\" >> \"{{ params.log }}\"\n      printf 'output:%s|\\n' \"{{ tasks.produce.outputs.value }}\" >> \"{{ params.log }}\"\n      printf 'bare:%s|\\n' {{ params.evil }} >> \"{{ params.log }}\"\n  each:\n    kind: shell\n    foreach: \"{{ params.items | tojson }}\"\n    run: printf 'item:%s|\\n' \"{{ item }}\" >> \"{{ params.log }}\"\n";
    std::fs::write(engine.path("dags/inject.yaml"), dag).expect("dag");
    engine.scheduler.sync_folder_once().await.expect("sync");
    let run = engine
        .trigger(
            "inject",
            serde_json::json!({
                "evil": evil,
                "evil_line": evil.replace('\n', " "),
                "items": [evil.clone(), "plain"],
                "log": log.display().to_string(),
            }),
        )
        .await;
    let done = engine.drive(&run.run_id).await;
    let tis = engine
        .store()
        .task_instances(&run.run_id)
        .await
        .expect("tis");
    assert_eq!(done.state, RunState::Success, "{tis:?}");
    for n in 1..=7 {
        let file = engine.path(&format!("pwned.{n}"));
        assert!(
            !file.exists(),
            "an injected command ran: {}",
            file.display()
        );
    }
    let seen = std::fs::read_to_string(&log).expect("log");
    let one_line = evil.replace('\n', " ");
    assert!(seen.contains(&format!("param:{evil}|")), "{seen}");
    assert!(seen.contains(&format!("output:{one_line}|")), "{seen}");
    assert!(seen.contains(&format!("item:{evil}|")), "{seen}");
    assert!(seen.contains("item:plain|"), "{seen}");
    // Bare, the value is split into words like any expansion, and still runs nothing.
    assert!(seen.contains("bare:a$(touch"), "{seen}");
});
