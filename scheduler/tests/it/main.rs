//! The scheduler's behaviour with a real worker, on SQLite and Postgres: runs in order,
//! retries after their delays, trigger rules, `when` and `foreach`, clears, backfills,
//! catch-up, the dags folder changing under a running scheduler, time zones. Time is a manual
//! clock and the test drives the passes (`weir_testkit::engine`).

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_model::{RunState, RunType, TaskState};
use weir_scheduler::Scheduler;
use weir_store::TaskInstanceRow;
use weir_testkit::engine::{Engine, scheduler_config, t};
use weir_testkit::per_backend;

per_backend!(a_chain_of_twenty_tasks_runs_in_order, |db: TestDb| {
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

per_backend!(
    a_flaky_task_succeeds_on_its_third_try_after_the_configured_delays,
    |db: TestDb| {
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

per_backend!(
    exhausted_retries_resolve_every_trigger_rule_like_airflow,
    |db: TestDb| {
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

per_backend!(foreach_maps_and_when_skips, |db: TestDb| {
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

per_backend!(
    clearing_a_failed_task_reruns_it_and_its_downstream,
    |db: TestDb| {
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
    }
);

per_backend!(
    a_scheduler_restart_mid_run_loses_nothing_and_duplicates_no_run,
    |db: TestDb| {
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

per_backend!(
    a_backfill_creates_exactly_the_dry_run_intervals_and_renders_ds_per_run,
    |db: TestDb| {
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

per_backend!(
    a_dag_whose_file_is_gone_stops_getting_runs_and_comes_back_with_a_file,
    |db: TestDb| {
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

per_backend!(
    a_midnight_dag_east_of_utc_renders_its_own_days_across_dst,
    |db: TestDb| {
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

per_backend!(
    a_clear_on_the_latest_version_reruns_the_fixed_dag,
    |db: TestDb| {
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
    }
);

per_backend!(
    a_duplicate_takes_over_when_the_first_file_goes,
    |db: TestDb| {
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
    }
);

per_backend!(a_catchup_from_year_one_is_bounded, |db: TestDb| {
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

per_backend!(
    broken_files_dropped_into_a_running_folder_stop_nothing,
    |db: TestDb| {
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

per_backend!(
    extreme_durations_never_crash_the_scheduler_or_the_worker,
    |db: TestDb| {
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

per_backend!(
    a_dag_file_written_while_the_scheduler_runs_is_live_at_once,
    |db: TestDb| {
        // Scans a minute apart: only the folder's watch can make the DAG live in seconds.
        let dir = weir_testkit::engine::dags_folder(&[(
            "first.yaml",
            "id: first\ntasks:\n  t:\n    kind: noop\n",
        )]);
        let mut cfg = scheduler_config(dir.path());
        cfg.scan_interval = std::time::Duration::from_secs(60);
        let shutdown = CancellationToken::new();
        let scheduler = tokio::spawn(weir_scheduler::run(
            db.store.clone(),
            cfg,
            Arc::new(weir_model::clock::SystemClock),
            shutdown.clone(),
        ));
        // The scan at start is over once it has read the first DAG.
        let started = std::time::Instant::now();
        while db.store.dag("first").await.is_err() {
            assert!(started.elapsed() < std::time::Duration::from_secs(20));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let written = std::time::Instant::now();
        std::fs::create_dir_all(dir.path().join("dags/team")).expect("mkdir");
        std::fs::write(
            dir.path().join("dags/team/hello.yaml"),
            "id: hello\ntasks:\n  t:\n    kind: noop\n",
        )
        .expect("write");
        while db.store.dag("hello").await.is_err() {
            assert!(
                written.elapsed() < std::time::Duration::from_secs(20),
                "a new DAG file waited for the next scan"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        eprintln!("new DAG live after {:?}", written.elapsed());
        shutdown.cancel();
        scheduler.await.expect("join").expect("scheduler");
    }
);

per_backend!(
    the_running_loops_keep_max_active_tasks_and_pools_and_use_them_fully,
    |db: TestDb| {
        // Twelve tasks, three at once at most; four of them in the one-slot pool `small`. Each
        // task's process appends `+` when it starts and `-` before it ends to a log of its
        // group (appends are atomic): the log's order is the processes' real order.
        let dir = weir_testkit::engine::dags_folder(&[]);
        let all = dir.path().join("all");
        let pooled = dir.path().join("pooled");
        let mut dag = String::from("id: limited\nmax_active_tasks: 3\ntasks:\n");
        for i in 0..12 {
            let (pool, files) = if i < 4 {
                (", pool: small", vec![&all, &pooled])
            } else {
                ("", vec![&all])
            };
            let mark = |c: char| {
                files
                    .iter()
                    .map(|f| format!("echo {c} >> {}", f.display()))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            dag.push_str(&format!(
                "  t{i:02}: {{kind: shell, run: \"{}; sleep 0.2; {}\"{pool}}}\n",
                mark('+'),
                mark('-')
            ));
        }
        std::fs::write(dir.path().join("dags/limited.yaml"), &dag).expect("dag");
        let mut wcfg = weir_testkit::engine::worker_config();
        wcfg.concurrency = 8;
        let done = run_under_the_loops(&db, dir.path(), wcfg, "limited", 60).await;
        assert_eq!(done.state, RunState::Success);
        let most_at_once = |log: &Path| {
            let text = std::fs::read_to_string(log).expect("log");
            let (mut now, mut most) = (0_i32, 0_i32);
            for line in text.lines() {
                now += if line == "+" { 1 } else { -1 };
                most = most.max(now);
            }
            (most, text.lines().count())
        };
        assert_eq!(most_at_once(&all), (3, 24), "max_active_tasks 3, and used");
        assert_eq!(most_at_once(&pooled), (1, 8), "the pool's one slot");
    }
);

per_backend!(
    a_worker_with_one_slot_claims_the_next_queued_try_when_its_slot_frees_without_a_poll,
    |db: TestDb| {
        // Four independent tasks queued at once, one slot, and no poll within the test: each
        // try after the first is claimed because the slot freed while instances waited (the
        // queueing's wake-up is spent on the first claim).
        let mut dag = String::from("id: one_slot\ntasks:\n");
        for i in 0..4 {
            dag.push_str(&format!("  t{i}: {{kind: shell, run: \"true\"}}\n"));
        }
        let dir = weir_testkit::engine::dags_folder(&[("one_slot.yaml", &dag)]);
        let mut wcfg = weir_testkit::engine::worker_config();
        wcfg.concurrency = 1;
        wcfg.poll_interval = std::time::Duration::from_secs(3600);
        let done = run_under_the_loops(&db, dir.path(), wcfg, "one_slot", 30).await;
        assert_eq!(
            done.state,
            RunState::Success,
            "four one-slot tries ran back to back within 30 s"
        );
    }
);

per_backend!(
    the_pass_woken_at_a_cron_intervals_end_creates_its_run_without_waiting_for_a_scan,
    |db: TestDb| {
        let dag = "id: minutely\nschedule: \"* * * * *\"\nstart_date: 2024-03-01\ntasks:\n  a: {kind: noop}\n";
        let dir = weir_testkit::engine::dags_folder(&[("minutely.yaml", dag)]);
        let clock = Arc::new(weir_model::clock::ManualClock::new(t(
            "2024-03-01T12:00:10Z",
        )));
        let mut cfg = scheduler_config(dir.path());
        // Scans far apart: only the interval's end can bring the next run in time.
        cfg.scan_interval = std::time::Duration::from_secs(3600);
        let mut scheduler =
            Scheduler::new(db.store.clone(), cfg, Arc::clone(&clock) as Arc<dyn Clock>);
        let first = scheduler.run_once().await.expect("first pass");
        assert_eq!(first.runs_created, 1, "the interval that ended at 12:00");
        assert_eq!(
            first.next_due,
            Some(t("2024-03-01T12:01:00Z")),
            "the next interval's end"
        );
        clock.set(t("2024-03-01T12:01:00Z"));
        let woken = scheduler.pass(false).await.expect("woken pass");
        assert_eq!(
            woken.runs_created, 1,
            "the pass at the interval's end creates its run (it waited for the hourly scan)"
        );
    }
);

/// Starts the scheduler's and the worker's loops over the folder `dir` (its `dags/`), waits for
/// `dag_id` to be stored, triggers it and returns the run once it finished, or as it is after
/// `seconds` (the caller's assertion on its state says what went wrong); the loops stopped.
async fn run_under_the_loops(
    db: &weir_testkit::TestDb,
    dir: &Path,
    wcfg: weir_testkit::engine::WorkerConfig,
    dag_id: &str,
    seconds: u64,
) -> weir_store::RunRow {
    let clock: Arc<dyn Clock> = Arc::new(weir_model::clock::SystemClock);
    let services =
        weir_testkit::engine::Services::start(&db.store, scheduler_config(dir), wcfg, &clock);
    let started = std::time::Instant::now();
    while db.store.dag(dag_id).await.is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let run =
        weir_testkit::engine::trigger(&db.store, dag_id, &Default::default(), clock.now()).await;
    let done = loop {
        let r = db.store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() || started.elapsed() > std::time::Duration::from_secs(seconds) {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = services.stop().await;
    done
}

/// Retention runs beside the passes: while its delete waits for a row another session holds
/// (as a long cleanup of millions of instances keeps it busy), a new run is still started at
/// once; when the row is free, the old runs go. (Postgres: SQLite has one writer, so a held
/// row there holds every write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waiting_for_a_locked_row_holds_up_no_pass() {
    use sqlx::Connection;
    let db = weir_testkit::TestDb::postgres().await;
    let dir = weir_testkit::engine::dags_folder(&[
        ("old.yaml", "id: old\ntasks:\n  t:\n    kind: noop\n"),
        ("probe.yaml", "id: probe\ntasks:\n  t:\n    kind: noop\n"),
    ]);
    let mut cfg = scheduler_config(dir.path());
    cfg.keep_runs = Some(std::time::Duration::from_secs(30 * 24 * 3600));
    let clock: Arc<dyn Clock> = Arc::new(weir_model::clock::SystemClock);
    Scheduler::new(db.store.clone(), cfg.clone(), Arc::clone(&clock))
        .sync_folder_once()
        .await
        .expect("sync");
    // Three runs that finished a year ago.
    let long_ago = Utc::now() - chrono::Duration::days(365);
    let mut old = Vec::new();
    for i in 0..3 {
        let at = long_ago + chrono::Duration::minutes(i);
        let run = weir_testkit::engine::trigger(&db.store, "old", &Default::default(), at).await;
        old.push(run.run_id);
    }
    let mut holder = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query(
        "UPDATE weir_runs SET state = 'success', started_at = created_at, ended_at = created_at
         WHERE dag_id = 'old'",
    )
    .execute(&mut holder)
    .await
    .expect("finish the old runs");
    let mut held = holder.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM weir_runs WHERE run_id = $1 FOR UPDATE")
        .bind(&old[0])
        .execute(&mut *held)
        .await
        .expect("hold the oldest run's row");

    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(weir_scheduler::run(
        db.store.clone(),
        cfg,
        clock,
        shutdown.clone(),
    ));
    // The cleanup has begun and waits for the held row.
    let mut watch = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let waiting = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'
                     AND query LIKE 'DELETE FROM weir_runs%'";
    let since = std::time::Instant::now();
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&mut watch)
        .await
        .expect("pg_stat_activity")
        == 0
    {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "retention never reached the old runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let probe =
        weir_testkit::engine::trigger(&db.store, "probe", &Default::default(), Utc::now()).await;
    let since = std::time::Instant::now();
    loop {
        let tis = db.store.task_instances(&probe.run_id).await.expect("tis");
        if tis.iter().any(|t| t.state == TaskState::Queued) {
            break;
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "a run triggered during retention was not started: {tis:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The delete still waits: the probe was started beside it, not after it.
    for id in &old {
        assert!(
            db.store.run(id).await.is_ok(),
            "{id} deleted under a held row"
        );
    }
    held.rollback().await.expect("release the row");
    let since = std::time::Instant::now();
    for id in &old {
        while db.store.run(id).await.is_ok() {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(20),
                "{id} outlived retention"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    shutdown.cancel();
    scheduler.await.expect("join").expect("scheduler");
}
