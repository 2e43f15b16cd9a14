//! The worker's behaviour with a real scheduler, on SQLite and Postgres: a timeout kills the
//! whole process group, templates, params and upstream outputs reach the script (as data,
//! never code), a task's own PATH chooses the `bash` it runs, and heartbeats extend only the
//! tries the worker runs. Time is a manual clock
//! and the test drives the claims (`weir_testkit::engine`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_model::{RunState, TaskState};
use weir_testkit::engine::Engine;
use weir_testkit::per_backend;

per_backend!(a_timeout_kills_the_whole_process_group, |db: TestDb| {
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

per_backend!(
    templates_params_and_outputs_flow_downstream,
    |db: TestDb| {
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
    }
);

per_backend!(
    a_template_reads_the_outputs_of_any_ancestor,
    |db: TestDb| {
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
    }
);

per_backend!(
    heartbeats_extend_only_tries_the_worker_runs_and_never_stop_a_fresh_claim,
    |db: TestDb| {
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

per_backend!(values_in_shell_scripts_are_data_never_code, |db: TestDb| {
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

// The shell step looks `bash` up itself (so that the task starts without a fork of the
// worker): in the PATH the task gets, its own `env` first.
per_backend!(a_tasks_own_path_chooses_the_bash_it_runs, |db: TestDb| {
    let mut engine = Engine::new(&db, &[]).await;
    let bin = engine.path("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let marker = engine.path("wrapped");
    let wrapper = bin.join("bash");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$WEIR_TASK_ID\" >> '{}'\nexec /bin/bash \"$@\"\n",
            marker.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let dag = format!(
        "id: paths\ntasks:\n  own:\n    kind: shell\n    env: {{PATH: \"{}:/usr/bin:/bin\"}}\n    run: \"true\"\n  inherited:\n    kind: shell\n    run: \"true\"\n",
        bin.display()
    );
    std::fs::write(engine.path("dags/paths.yaml"), dag).expect("dag");
    engine.scheduler.sync_folder_once().await.expect("sync");
    let run = engine.trigger("paths", serde_json::json!({})).await;
    let done = engine.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Success);
    let wrapped = std::fs::read_to_string(&marker).expect("the task's own bash ran");
    assert_eq!(wrapped.trim(), "own", "only the task whose PATH names it");
});
