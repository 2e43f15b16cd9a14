//! The store's behaviour, on SQLite and Postgres with the same test bodies.

mod migrations;
mod reads;

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use weir_model::{RunState, RunType, TaskState};
use weir_store::{
    Completion, NewLogLine, NewRun, NewTaskInstance, Notice, NoticeEvent, Store, StoreError,
    TaskInstanceRow,
};
use weir_testkit::{dag, per_backend};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

const DAG: &str = "id: d\ntasks:\n  a: {kind: noop}\n  b: {kind: noop, depends_on: a}\n";

async fn version(store: &Store) -> i64 {
    sync(store, "d", DAG).await
}

/// Stores the DAG `spec` as the file `dags/<file>.yaml` (on 2024-01-01); returns its version.
async fn sync(store: &Store, file: &str, spec: &str) -> i64 {
    store
        .sync_dag(
            &format!("dags/{file}.yaml"),
            &dag(spec).spec,
            spec,
            &Default::default(),
            t("2024-01-01T00:00:00Z"),
        )
        .await
        .expect("sync")
}

fn new_run(version_id: i64, logical: &str, tasks: usize) -> NewRun {
    NewRun {
        dag_id: "d".into(),
        version_id,
        run_type: RunType::Manual,
        logical_date: t(logical),
        data_interval_start: t(logical),
        data_interval_end: t(logical),
        params: serde_json::json!({"x": 1}),
        timezone: "UTC".into(),
        triggered_by: None,
        tasks: (0..tasks)
            .map(|i| NewTaskInstance {
                task_id: format!("t{i:02}"),
                max_tries: 2,
                queue: "default".into(),
                pool: None,
                priority: 0,
            })
            .collect(),
    }
}

/// Queues every instance of a run (what the scheduler does when they are ready).
async fn queue_all(store: &Store, run_id: &str, now: DateTime<Utc>) {
    let ids: Vec<i64> = store
        .task_instances(run_id)
        .await
        .expect("tis")
        .iter()
        .map(|t| t.id)
        .collect();
    store
        .transition_tasks(&ids, TaskState::Scheduled, TaskState::Queued, now)
        .await
        .expect("queue");
}

/// The first try of instance `ti_id`, claimed by `worker`, ended in success and nothing else.
fn succeeded(ti_id: i64, worker: &str) -> Completion {
    Completion {
        ti_id,
        worker_id: worker.to_owned(),
        try_number: 1,
        state: TaskState::Success,
        outputs: None,
        error: None,
        due_at: None,
        log: Vec::new(),
        give_back_try: false,
        notify: Vec::new(),
        wake: false,
        assets: Vec::new(),
        lineage: Vec::new(),
    }
}

/// Four workers claiming from the `default` queue at the same time, three at a time, each until
/// a claim takes nothing; every instance they took.
async fn claim_at_once(store: &Store, now: DateTime<Utc>) -> Vec<TaskInstanceRow> {
    let claimers = (0..4).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_tasks(
                        &format!("w{w}"),
                        &["default".to_owned()],
                        3,
                        now,
                        now + Duration::seconds(30),
                    )
                    .await
                    .expect("claim");
                if got.is_empty() {
                    break;
                }
                mine.extend(got);
            }
            mine
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.expect("join"));
    }
    all
}

per_backend!(
    a_claim_that_takes_fewer_than_fit_says_so_and_the_next_takes_the_rest,
    |db: TestDb| {
        // DAG `d` (one at a time) holds the first 40 queued rows by priority, more than a
        // claim of 4 reads; DAG `e`'s 10 rows come after them.
        let now = t("2024-01-02T00:00:00Z");
        let mut runs = Vec::new();
        for (id, extra, priority) in [("d", "max_active_tasks: 1\n", 10), ("e", "", 0)] {
            let spec = format!("{}{extra}", DAG.replace("id: d", &format!("id: {id}")));
            let v = sync(&db.store, id, &spec).await;
            let mut new = new_run(v, "2024-01-01T00:00:00Z", if id == "d" { 40 } else { 10 });
            new.dag_id = id.into();
            for ti in &mut new.tasks {
                ti.priority = priority;
            }
            runs.push(
                db.store
                    .create_run(&new, now)
                    .await
                    .expect("create")
                    .expect("new"),
            );
        }
        for run in &runs {
            queue_all(&db.store, &run.run_id, now).await;
        }
        let mut taken = Vec::new();
        let mut claims = 0;
        while taken.len() < 4 {
            let want = 4 - i64::try_from(taken.len()).expect("few");
            let claim = db
                .store
                .claim_tasks_within_limits(
                    "w",
                    &["default".to_owned()],
                    want,
                    now,
                    now + Duration::seconds(30),
                )
                .await
                .expect("claim");
            claims += 1;
            let got = i64::try_from(claim.tasks.len()).expect("few");
            assert!(got > 0, "claim {claims} took nothing: {taken:?}");
            assert!(
                got == want || claim.more,
                "claim {claims} took {got} of {want} and did not say more may fit"
            );
            taken.extend(claim.tasks.into_iter().map(|t| t.dag_id));
            assert!(claims <= 2, "{claims} claims for 4 instances: {taken:?}");
        }
        taken.sort();
        assert_eq!(
            taken,
            ["d", "e", "e", "e"],
            "one of d (its limit), the rest of e"
        );
    }
);

per_backend!(
    runs_between_reads_the_runs_of_a_span_of_logical_dates,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-02-01T00:00:00Z");
        for day in ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"] {
            db.store
                .create_run(&new_run(v, &format!("{day}T00:00:00Z"), 1), now)
                .await
                .expect("create")
                .expect("new");
        }
        let runs = db
            .store
            .runs_between("d", t("2024-01-02T00:00:00Z"), t("2024-01-03T00:00:00Z"))
            .await
            .expect("runs");
        let dates: Vec<String> = runs
            .iter()
            .map(|r| r.logical_date.format("%F").to_string())
            .collect();
        assert_eq!(
            dates,
            ["2024-01-02", "2024-01-03"],
            "both ends included, oldest first"
        );
        assert!(
            db.store
                .runs_between(
                    "other",
                    t("2024-01-01T00:00:00Z"),
                    t("2024-01-04T00:00:00Z")
                )
                .await
                .expect("runs")
                .is_empty(),
            "another DAG's span"
        );
    }
);

per_backend!(
    task_instances_of_runs_reads_the_named_runs_only_in_run_and_task_order,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-02-01T00:00:00Z");
        let mut ids = Vec::new();
        for (day, tasks) in [("2024-01-03", 3), ("2024-01-01", 2), ("2024-01-02", 4)] {
            let run = db
                .store
                .create_run(&new_run(v, &format!("{day}T00:00:00Z"), tasks), now)
                .await
                .expect("create")
                .expect("new");
            ids.push(run.run_id);
        }
        // The first and the second run created; the third is not asked for.
        let rows = db
            .store
            .task_instances_of_runs(&[ids[0].as_str(), ids[1].as_str()])
            .await
            .expect("instances");
        let got: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}", &r.run_id[3..13], r.task_id))
            .collect();
        assert_eq!(
            got,
            [
                "2024-01-01 t00",
                "2024-01-01 t01",
                "2024-01-03 t00",
                "2024-01-03 t01",
                "2024-01-03 t02"
            ]
        );
        assert!(
            db.store
                .task_instances_of_runs(&[])
                .await
                .expect("none")
                .is_empty()
        );
    }
);

per_backend!(a_run_is_created_once_per_logical_date, |db: TestDb| {
    let v = version(&db.store).await;
    let now = t("2024-01-02T00:00:00Z");
    let first = db
        .store
        .create_run(&new_run(v, "2024-01-01T00:00:00Z", 3), now)
        .await
        .expect("create");
    let run = first.expect("created");
    assert_eq!(run.run_id, "d__2024-01-01T00:00:00Z");
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.params, serde_json::json!({"x": 1}));
    let again = db
        .store
        .create_run(&new_run(v, "2024-01-01T00:00:00Z", 3), now)
        .await
        .expect("create again");
    assert!(
        again.is_none(),
        "a second run for the same logical date must not be created"
    );
    let tis = db.store.task_instances(&run.run_id).await.expect("tis");
    assert_eq!(tis.len(), 3, "task instances are created once");
    assert!(
        tis.iter()
            .all(|ti| ti.state == TaskState::Scheduled && ti.map_index == -1)
    );
});

per_backend!(
    dag_versions_follow_content_and_pause_is_the_users,
    |db: TestDb| {
        let now = t("2024-01-01T00:00:00Z");
        let a = db
            .store
            .sync_dag("dags/d.yaml", &dag(DAG).spec, DAG, &Default::default(), now)
            .await
            .expect("sync");
        let same = db
            .store
            .sync_dag("dags/d.yaml", &dag(DAG).spec, DAG, &Default::default(), now)
            .await
            .expect("sync again");
        assert_eq!(a, same, "unchanged content, same version");
        assert!(db.store.set_paused("d", true).await.expect("pause"));
        let changed = dag("id: d\ntasks:\n  a: {kind: noop}\n");
        let b = db
            .store
            .sync_dag("dags/d.yaml", &changed.spec, "", &Default::default(), now)
            .await
            .expect("sync changed");
        assert_ne!(a, b);
        let row = db.store.dag("d").await.expect("dag");
        assert_eq!(row.version_id, b);
        assert!(row.paused, "a new version keeps the user's pause");
        let stored = db.store.dag_version(a).await.expect("old version");
        assert_eq!(
            stored.spec.tasks.len(),
            2,
            "the old version is still there for runs that pin it"
        );
        assert!(matches!(
            db.store.set_paused("nope", true).await,
            Err(StoreError::NotFound(_))
        ));
    }
);

per_backend!(
    concurrent_claims_never_take_the_same_instance,
    |db: TestDb| {
        // Room for all 40 at once: limits are the next test's subject.
        let wide = format!("{DAG}max_active_tasks: 100\n");
        let v = sync(&db.store, "d", &wide).await;
        let now = t("2024-01-02T00:00:00Z");
        let run = db
            .store
            .create_run(&new_run(v, "2024-01-01T00:00:00Z", 40), now)
            .await
            .expect("create")
            .expect("new");
        let ids: Vec<i64> = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(
            db.store
                .transition_tasks(&ids, TaskState::Scheduled, TaskState::Queued, now)
                .await
                .expect("queue"),
            40
        );
        let mut seen = HashSet::new();
        for ti in claim_at_once(&db.store, now).await {
            assert_eq!(ti.try_number, 1);
            assert!(seen.insert(ti.id), "instance {} was claimed twice", ti.id);
        }
        assert_eq!(seen.len(), 40, "every instance was claimed");
    }
);

per_backend!(
    claims_stay_within_the_dags_and_pools_limits_however_many_claim_at_once,
    |db: TestDb| {
        let spec = format!("{DAG}max_active_tasks: 5\n");
        let v = sync(&db.store, "d", &spec).await;
        db.store
            .set_pools(&[("small".to_owned(), 1)].into_iter().collect())
            .await
            .expect("pools");
        let now = t("2024-01-02T00:00:00Z");
        // 40 instances, the first 10 (best priority) in the one-slot pool.
        let mut new = new_run(v, "2024-01-01T00:00:00Z", 40);
        for ti in new.tasks.iter_mut().take(10) {
            ti.pool = Some("small".into());
            ti.priority = 10;
        }
        let run = db
            .store
            .create_run(&new, now)
            .await
            .expect("create")
            .expect("new");
        let tis = db.store.task_instances(&run.run_id).await.expect("tis");
        let ids: Vec<i64> = tis.iter().map(|t| t.id).collect();
        db.store
            .transition_tasks(&ids, TaskState::Scheduled, TaskState::Queued, now)
            .await
            .expect("queue");
        let pooled: HashSet<i64> = tis
            .iter()
            .filter(|t| t.pool.is_some())
            .map(|t| t.id)
            .collect();
        let first: Vec<(i64, Option<String>)> = claim_at_once(&db.store, now)
            .await
            .into_iter()
            .map(|t| (t.id, t.worker_id))
            .collect();
        assert_eq!(first.len(), 5, "max_active_tasks 5: {first:?}");
        assert_eq!(
            first.iter().filter(|(id, _)| pooled.contains(id)).count(),
            1,
            "the pool's one slot, and its instances come first by priority: {first:?}"
        );
        // Two end (the pooled one among them): two more fit, one of them from the pool.
        let (pooled_id, pooled_worker) = first
            .iter()
            .find(|(id, _)| pooled.contains(id))
            .cloned()
            .expect("pooled");
        let (other_id, other_worker) = first
            .iter()
            .find(|(id, _)| !pooled.contains(id))
            .cloned()
            .expect("other");
        for (id, worker) in [(pooled_id, pooled_worker), (other_id, other_worker)] {
            db.store
                .complete_task(&succeeded(id, &worker.expect("claimed by a worker")), now)
                .await
                .expect("complete");
        }
        let second: Vec<(i64, Option<String>)> = claim_at_once(&db.store, now)
            .await
            .into_iter()
            .map(|t| (t.id, t.worker_id))
            .collect();
        assert_eq!(second.len(), 2, "two slots freed: {second:?}");
        assert_eq!(
            second.iter().filter(|(id, _)| pooled.contains(id)).count(),
            1,
            "the pool's slot freed too: {second:?}"
        );
    }
);

per_backend!(
    a_lost_lease_refuses_completion_and_heartbeats_drop_it,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-01-02T00:00:00Z");
        let run = db
            .store
            .create_run(&new_run(v, "2024-01-01T00:00:00Z", 1), now)
            .await
            .expect("create")
            .expect("new");
        let ti = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .remove(0);
        db.store
            .transition_tasks(&[ti.id], TaskState::Scheduled, TaskState::Queued, now)
            .await
            .expect("queue");
        db.store
            .register_worker("w1", "host", &["default".into()], 1, now)
            .await
            .expect("register");
        let claimed = db
            .store
            .claim_tasks(
                "w1",
                &["default".into()],
                1,
                now,
                now + Duration::seconds(30),
            )
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            db.store
                .heartbeat("w1", &[ti.id], now, now + Duration::seconds(30))
                .await
                .expect("hb"),
            vec![ti.id]
        );

        // The lease expires; the scheduler reaps the try and schedules a retry.
        let later = now + Duration::seconds(60);
        let expired = db.store.expired_leases(later).await.expect("expired");
        assert_eq!(expired.len(), 1);
        let run = db.store.run(&expired[0].run_id).await.expect("run");
        let notice = |error: &str| {
            Notice::for_try(
                &run,
                &expired[0],
                NoticeEvent::TaskRetry,
                Some(error.to_owned()),
                later,
            )
            .to(&["ops".to_owned()])
        };
        assert!(
            db.store
                .reap_expired(
                    &expired[0],
                    TaskState::UpForRetry,
                    Some(later),
                    "worker lost",
                    &notice("worker lost"),
                    later
                )
                .await
                .expect("reap")
        );
        assert!(
            !db.store
                .reap_expired(
                    &expired[0],
                    TaskState::UpForRetry,
                    Some(later),
                    "again",
                    &notice("again"),
                    later
                )
                .await
                .expect("reap twice")
        );
        // The notice is written with the change, and only with a change.
        let written = db.store.notifications(&run.run_id).await.expect("outbox");
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0].notifier, "ops");
        assert_eq!(written[0].notice.error.as_deref(), Some("worker lost"));
        assert_eq!(
            written[0].notice.task_id.as_deref(),
            Some(expired[0].task_id.as_str())
        );
        assert_eq!(written[0].notice.try_number, Some(1));

        // The old worker comes back: it no longer holds the instance and cannot complete it.
        assert!(
            db.store
                .heartbeat("w1", &[ti.id], later, later + Duration::seconds(30))
                .await
                .expect("hb")
                .is_empty()
        );
        let done = Completion {
            ti_id: ti.id,
            worker_id: "w1".into(),
            try_number: 1,
            state: TaskState::Success,
            outputs: None,
            error: None,
            due_at: None,
            log: vec![line("stdout", "printed after the lease expired", later)],
            give_back_try: false,
            assets: Vec::new(),
            lineage: Vec::new(),
            notify: notice("from a try whose lease is lost"),
            wake: true,
        };
        assert!(
            matches!(db.store.complete_task(&done, later).await, Err(StoreError::LeaseLost(id)) if id == ti.id)
        );
        assert_eq!(
            db.store
                .notifications(&run.run_id)
                .await
                .expect("outbox")
                .len(),
            1,
            "a dropped completion writes no notification"
        );
        let row = db.store.task_instance(ti.id).await.expect("row");
        assert_eq!(row.state, TaskState::UpForRetry);
        assert_eq!(row.error.as_deref(), Some("worker lost"));
        // What the try printed is kept even though its outcome is dropped.
        let kept = db.store.logs(ti.id, 1, 0, 10).await.expect("logs");
        assert_eq!(
            kept.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["printed after the lease expired"]
        );
    }
);

fn line(stream: &'static str, text: &str, at: DateTime<Utc>) -> NewLogLine {
    NewLogLine {
        stream,
        text: text.to_owned(),
        at,
    }
}

per_backend!(
    a_completed_try_keeps_its_outputs_and_a_clear_reopens_the_run,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-01-02T00:00:00Z");
        let run = db
            .store
            .create_run(&new_run(v, "2024-01-01T00:00:00Z", 1), now)
            .await
            .expect("create")
            .expect("new");
        let ti = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .remove(0);
        db.store
            .transition_tasks(&[ti.id], TaskState::Scheduled, TaskState::Queued, now)
            .await
            .expect("queue");
        db.store
            .claim_tasks(
                "w1",
                &["default".into()],
                1,
                now,
                now + Duration::seconds(30),
            )
            .await
            .expect("claim");
        let done = Completion {
            ti_id: ti.id,
            worker_id: "w1".into(),
            try_number: 1,
            state: TaskState::Success,
            outputs: Some(serde_json::json!({"rows": "42"})),
            error: None,
            due_at: None,
            log: vec![
                line("stdout", "first", now),
                line("weir", "succeeded (1 output(s))", now),
            ],
            give_back_try: false,
            assets: Vec::new(),
            lineage: Vec::new(),
            notify: Vec::new(),
            wake: true,
        };
        db.store.complete_task(&done, now).await.expect("complete");
        let stored = db.store.logs(ti.id, 1, 0, 10).await.expect("logs");
        assert_eq!(
            stored
                .iter()
                .map(|l| (l.stream.as_str(), l.line.as_str()))
                .collect::<Vec<_>>(),
            [("stdout", "first"), ("weir", "succeeded (1 output(s))")]
        );
        assert_eq!(
            db.store.task_instance(ti.id).await.expect("row").outputs,
            Some(serde_json::json!({"rows": "42"}))
        );
        assert!(
            db.store
                .set_run_state(&run.run_id, RunState::Queued, RunState::Running, &[], now)
                .await
                .expect("start")
        );
        let told = |event| Notice::for_run(&run, event, None, now).to(&["ops".to_owned()]);
        assert!(
            db.store
                .set_run_state(
                    &run.run_id,
                    RunState::Running,
                    RunState::Success,
                    &told(NoticeEvent::RunSucceeded),
                    now
                )
                .await
                .expect("finish")
        );
        assert!(
            !db.store
                .set_run_state(
                    &run.run_id,
                    RunState::Running,
                    RunState::Failed,
                    &told(NoticeEvent::RunFailed),
                    now
                )
                .await
                .expect("stale"),
            "guarded by the old state"
        );
        let events: Vec<NoticeEvent> = db
            .store
            .notifications(&run.run_id)
            .await
            .expect("outbox")
            .iter()
            .map(|n| n.notice.event)
            .collect();
        assert_eq!(events, [NoticeEvent::RunSucceeded]);

        assert_eq!(
            db.store
                .clear_tasks(&run.run_id, &[(ti.id, 2)])
                .await
                .expect("clear"),
            1
        );
        let row = db.store.task_instance(ti.id).await.expect("row");
        assert_eq!(
            (row.state, row.try_number, row.max_tries),
            (TaskState::Scheduled, 1, 3)
        );
        assert_eq!(
            db.store.run(&run.run_id).await.expect("run").state,
            RunState::Queued
        );
    }
);

per_backend!(logs_are_read_in_order_after_an_id, |db: TestDb| {
    let v = version(&db.store).await;
    let now = t("2024-01-02T00:00:00Z");
    let run = db
        .store
        .create_run(&new_run(v, "2024-01-01T00:00:00Z", 1), now)
        .await
        .expect("create")
        .expect("new");
    let ti = db
        .store
        .task_instances(&run.run_id)
        .await
        .expect("tis")
        .remove(0);
    let lines: Vec<NewLogLine> = (0..5)
        .map(|i| line("stdout", &format!("line {i}"), now))
        .collect();
    db.store
        .append_logs(ti.id, 1, &lines)
        .await
        .expect("append");
    db.store
        .append_logs(ti.id, 2, &[line("stderr", "other try", now)])
        .await
        .expect("append");
    let first = db.store.logs(ti.id, 1, 0, 3).await.expect("read");
    assert_eq!(
        first.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["line 0", "line 1", "line 2"]
    );
    let rest = db
        .store
        .logs(ti.id, 1, first[2].id, 100)
        .await
        .expect("read rest");
    assert_eq!(
        rest.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["line 3", "line 4"]
    );
    // A batch over one statement's rows (1,000) keeps every line, in order.
    let many: Vec<NewLogLine> = (0..2500)
        .map(|i| line("stdout", &format!("many {i}"), now))
        .collect();
    db.store
        .append_logs(ti.id, 3, &many)
        .await
        .expect("append many");
    let read = db.store.logs(ti.id, 3, 0, 5000).await.expect("read many");
    assert_eq!(read.len(), 2500);
    assert!(
        read.iter()
            .enumerate()
            .all(|(i, l)| l.line == format!("many {i}"))
    );
});

per_backend!(foreach_expansion_happens_once, |db: TestDb| {
    let v = version(&db.store).await;
    let now = t("2024-01-02T00:00:00Z");
    let run = db
        .store
        .create_run(&new_run(v, "2024-01-01T00:00:00Z", 1), now)
        .await
        .expect("create")
        .expect("new");
    let placeholder = db
        .store
        .task_instances(&run.run_id)
        .await
        .expect("tis")
        .remove(0);
    let items = [serde_json::json!("a"), serde_json::json!({"b": 2})];
    assert!(
        db.store
            .expand_mapped(&placeholder, &items, now)
            .await
            .expect("expand")
    );
    assert!(
        !db.store
            .expand_mapped(&placeholder, &items, now)
            .await
            .expect("expand twice")
    );
    let tis = db.store.task_instances(&run.run_id).await.expect("tis");
    assert_eq!(
        tis.iter()
            .map(|t| (t.map_index, t.map_item.clone()))
            .collect::<Vec<_>>(),
        [(0, Some(items[0].clone())), (1, Some(items[1].clone()))]
    );
});

per_backend!(
    retention_deletes_only_old_finished_runs_with_their_instances_and_logs,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-06-01T00:00:00Z");
        let mut ids = Vec::new();
        for (logical, ended) in [
            ("2024-01-01T00:00:00Z", Some("2024-01-01T01:00:00Z")),
            ("2024-05-30T00:00:00Z", Some("2024-05-30T01:00:00Z")),
            ("2024-01-02T00:00:00Z", None),
        ] {
            let run = db
                .store
                .create_run(&new_run(v, logical, 2), now)
                .await
                .expect("create")
                .expect("new");
            db.store
                .set_run_state(
                    &run.run_id,
                    RunState::Queued,
                    RunState::Running,
                    &[],
                    t(logical),
                )
                .await
                .expect("start");
            if let Some(ended) = ended {
                db.store
                    .set_run_state(
                        &run.run_id,
                        RunState::Running,
                        RunState::Success,
                        &[],
                        t(ended),
                    )
                    .await
                    .expect("finish");
            }
            let ti = db
                .store
                .task_instances(&run.run_id)
                .await
                .expect("tis")
                .remove(0);
            db.store
                .append_logs(ti.id, 1, &[line("stdout", "hello", now)])
                .await
                .expect("log");
            ids.push((run.run_id, ti.id));
        }
        // Keep 30 days: only the January run that finished goes; the unfinished January run stays.
        let cutoff = now - Duration::days(30);
        assert_eq!(
            db.store
                .delete_runs_ended_before(cutoff, 1)
                .await
                .expect("delete"),
            1
        );
        assert_eq!(
            db.store
                .delete_runs_ended_before(cutoff, 1)
                .await
                .expect("delete again"),
            0
        );
        assert!(matches!(
            db.store.run(&ids[0].0).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            db.store
                .task_instances(&ids[0].0)
                .await
                .expect("tis")
                .is_empty(),
            "instances go with the run"
        );
        assert!(
            db.store
                .logs(ids[0].1, 1, 0, 10)
                .await
                .expect("logs")
                .is_empty(),
            "logs go with the instances"
        );
        assert!(db.store.run(&ids[1].0).await.is_ok());
        assert!(
            db.store.run(&ids[2].0).await.is_ok(),
            "an unfinished run is never deleted"
        );
    }
);

// The hot-path statements stay index-driven with 100k finished runs (and their instances)
// in the tables: no scan of runs or task instances but through an index of live rows.
per_backend!(hot_path_stays_index_driven_after_100k_runs, |db: TestDb| {
    let v = version(&db.store).await;
    let postgres = db.url.starts_with("postgres");
    let (runs, instances) = if postgres {
        (
            "INSERT INTO weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start, data_interval_end, params, created_at, started_at, ended_at)
             SELECT 'd__' || g, 'd', $1, 'scheduled', 'success', t, t, t, '{}', t, t, t
             FROM generate_series(1, 100000) g, LATERAL (SELECT timestamptz '2020-01-01' + g * interval '1 hour' AS t) x",
            "INSERT INTO weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue, started_at, ended_at, outputs)
             SELECT run_id, 'd', task, 'success', 1, 1, 'default', ended_at, ended_at, '{}'
             FROM weir_runs, (VALUES ('a'), ('b')) tasks(task)",
        )
    } else {
        (
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 100000)
             INSERT INTO weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start, data_interval_end, params, created_at, started_at, ended_at)
             SELECT 'd__' || i, 'd', $1, 'scheduled', 'success', t, t, t, '{}', t, t, t
             FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || i || ' hours') AS t FROM g)",
            "INSERT INTO weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue, started_at, ended_at, outputs)
             SELECT run_id, 'd', task, 'success', 1, 1, 'default', ended_at, ended_at, '{}'
             FROM weir_runs, (SELECT 'a' AS task UNION ALL SELECT 'b')",
        )
    };
    execute_raw(&db, runs, Some(v)).await;
    execute_raw(&db, instances, None).await;
    // Some live work next to the history.
    let run = db
        .store
        .create_run(
            &new_run(v, "2040-01-01T00:00:00Z", 3),
            t("2040-01-01T00:00:00Z"),
        )
        .await
        .expect("create")
        .expect("new");
    queue_all(&db.store, &run.run_id, t("2040-01-01T00:00:00Z")).await;
    execute_raw(&db, "ANALYZE", None).await;
    let plans = db.store.explain_hot_path().await.expect("explain");
    assert_eq!(plans.len(), if postgres { 8 } else { 7 });
    for (name, plan) in plans {
        assert!(
            !plan.contains("Seq Scan on weir_runs")
                && !plan.contains("Seq Scan on weir_task_instances")
                && sqlite_table_scan(&plan).is_none(),
            "{name} scans a whole table:\n{plan}"
        );
        // The claim's candidates are read through an index of queued rows (on Postgres the
        // function is inlined: a `Function Scan` would hide its plan).
        assert!(
            !name.starts_with("claim")
                || plan.contains(" weir_ti_claim ")
                || plan.contains(" weir_ti_queued_by_dag "),
            "{name} does not read an index of queued rows:\n{plan}"
        );
    }
});

per_backend!(
    tries_finishing_together_are_recorded_in_one_write_except_a_lost_lease,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-01-02T00:00:00Z");
        let run = db
            .store
            .create_run(&new_run(v, "2024-01-01T00:00:00Z", 3), now)
            .await
            .expect("create")
            .expect("new");
        let ids: Vec<i64> = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .iter()
            .map(|t| t.id)
            .collect();
        db.store
            .transition_tasks(&ids, TaskState::Scheduled, TaskState::Queued, now)
            .await
            .expect("queue");
        let claimed = db
            .store
            .claim_tasks(
                "w1",
                &["default".into()],
                3,
                now,
                now + Duration::seconds(30),
            )
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 3);
        let completion = |id: i64, state: TaskState, worker: &str, text: &str| Completion {
            ti_id: id,
            worker_id: worker.into(),
            try_number: 1,
            state,
            outputs: (state == TaskState::Success)
                .then(|| serde_json::json!({"id": id.to_string()})),
            error: (state != TaskState::Success).then(|| "exit code 1".to_owned()),
            due_at: None,
            log: vec![line("stdout", text, now)],
            give_back_try: false,
            assets: Vec::new(),
            lineage: Vec::new(),
            notify: Vec::new(),
            wake: true,
        };
        let batch = [
            completion(ids[0], TaskState::Success, "w1", "zero"),
            completion(ids[1], TaskState::Failed, "w1", "one"),
            // Not this worker's lease: dropped, its line kept.
            completion(ids[2], TaskState::Success, "w2", "two"),
        ];
        let recorded = db
            .store
            .complete_tasks(&batch, now)
            .await
            .expect("complete");
        assert_eq!(recorded, [true, true, false]);
        let states: Vec<TaskState> = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .iter()
            .map(|t| t.state)
            .collect();
        assert_eq!(
            states,
            [TaskState::Success, TaskState::Failed, TaskState::Running]
        );
        assert_eq!(
            db.store.task_instance(ids[0]).await.expect("row").outputs,
            Some(serde_json::json!({"id": ids[0].to_string()}))
        );
        for (id, text) in ids.iter().zip(["zero", "one", "two"]) {
            let lines = db.store.logs(*id, 1, 0, 10).await.expect("logs");
            assert_eq!(
                lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
                [text]
            );
        }
    }
);

per_backend!(
    the_outbox_is_claimed_once_retried_with_backoff_and_given_up,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-01-02T00:00:00Z");
        let run = db
            .store
            .create_run(&new_run(v, "2024-01-01T00:00:00Z", 1), now)
            .await
            .expect("create")
            .expect("new");
        db.store
            .set_run_state(&run.run_id, RunState::Queued, RunState::Running, &[], now)
            .await
            .expect("start");
        let notice = Notice::for_run(&run, NoticeEvent::RunFailed, Some("boom".into()), now);
        db.store
            .set_run_state(
                &run.run_id,
                RunState::Running,
                RunState::Failed,
                &notice.to(&["a".into(), "b".into(), "c".into()]),
                now,
            )
            .await
            .expect("finish");
        let lease = Duration::seconds(60);
        let first = db
            .store
            .claim_notifications(now, lease, 2)
            .await
            .expect("claim");
        let second = db
            .store
            .claim_notifications(now, lease, 2)
            .await
            .expect("claim");
        let third = db
            .store
            .claim_notifications(now, lease, 2)
            .await
            .expect("claim");
        let names = |c: &[weir_store::ClaimedNotification]| {
            c.iter().map(|n| n.notifier.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(names(&second), ["c"], "claimed rows are not claimed again");
        assert!(third.is_empty());
        assert_eq!(first[0].notice, notice);
        assert_eq!(first[0].attempts, 1);

        db.store
            .notification_sent(first[0].id, now)
            .await
            .expect("sent");
        db.store
            .notification_failed(first[1].id, "smtp down", Some(now + Duration::seconds(10)))
            .await
            .expect("failed");
        db.store
            .notification_failed(second[0].id, "404", None)
            .await
            .expect("gave up");
        assert_eq!(
            db.store.next_notification_due().await.expect("due"),
            Some(now + Duration::seconds(10))
        );
        // Only the failed one comes back, once its backoff is over.
        let early = db
            .store
            .claim_notifications(now + Duration::seconds(5), lease, 10)
            .await
            .expect("claim");
        assert!(early.is_empty());
        let retry = db
            .store
            .claim_notifications(now + Duration::seconds(11), lease, 10)
            .await
            .expect("claim");
        assert_eq!(names(&retry), ["b"]);
        assert_eq!(retry[0].attempts, 2);

        let rows = db.store.notifications(&run.run_id).await.expect("rows");
        let summary: Vec<(&str, bool, bool, Option<&str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.notifier.as_str(),
                    r.sent_at.is_some(),
                    r.gave_up,
                    r.error.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a", true, false, None),
                ("b", false, false, Some("smtp down")),
                ("c", false, true, Some("404")),
            ]
        );
        // Retention removes settled rows only.
        let removed = db
            .store
            .delete_notifications_before(now + Duration::days(1), 10)
            .await
            .expect("cleanup");
        assert_eq!(removed, 2);
        assert_eq!(names_of(&db.store, &run.run_id).await, ["b"]);
    }
);

async fn names_of(store: &Store, run_id: &str) -> Vec<String> {
    store
        .notifications(run_id)
        .await
        .expect("rows")
        .into_iter()
        .map(|n| n.notifier)
        .collect()
}

per_backend!(
    a_success_with_nothing_to_decide_does_not_wake_the_scheduler,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-01-02T00:00:00Z");
        let run = db
            .store
            .create_run(&new_run(v, "2024-01-01T00:00:00Z", 4), now)
            .await
            .expect("create")
            .expect("new");
        let ids: Vec<i64> = db
            .store
            .task_instances(&run.run_id)
            .await
            .expect("tis")
            .iter()
            .map(|t| t.id)
            .collect();
        // Three run; the fourth stays scheduled until the end.
        db.store
            .transition_tasks(&ids[..3], TaskState::Scheduled, TaskState::Queued, now)
            .await
            .expect("queue");
        db.store
            .claim_tasks(
                "w1",
                &["default".into()],
                3,
                now,
                now + Duration::seconds(30),
            )
            .await
            .expect("claim");
        let woken = async || {
            tokio::time::timeout(
                std::time::Duration::from_millis(200),
                db.store.scheduler_woken(),
            )
            .await
            .is_ok()
        };
        let done = |id: i64, state: TaskState, wake: bool| Completion {
            ti_id: id,
            worker_id: "w1".into(),
            try_number: 1,
            state,
            outputs: None,
            error: None,
            due_at: None,
            log: Vec::new(),
            give_back_try: false,
            assets: Vec::new(),
            lineage: Vec::new(),
            notify: Vec::new(),
            wake,
        };
        // An instance still waits for a decision (ids[3] is scheduled): the scheduler looks.
        woken().await; // whatever earlier changes left
        db.store
            .complete_task(&done(ids[0], TaskState::Success, false), now)
            .await
            .expect("complete");
        assert!(
            woken().await,
            "a scheduled instance waits: the scheduler must look"
        );
        db.store
            .transition_tasks(&ids[3..], TaskState::Scheduled, TaskState::Skipped, now)
            .await
            .expect("skip");
        woken().await;
        // Nothing waits, others still run, nothing downstream: no wake-up.
        db.store
            .complete_task(&done(ids[1], TaskState::Success, false), now)
            .await
            .expect("complete");
        assert!(
            !woken().await,
            "nothing to decide, yet the scheduler was woken"
        );
        // The last unfinished instance: the run may be over.
        db.store
            .complete_task(&done(ids[2], TaskState::Success, false), now)
            .await
            .expect("complete");
        assert!(
            woken().await,
            "the run's last try ended: the scheduler must look"
        );
    }
);

per_backend!(users_have_roles_tokens_and_unique_names, |db: TestDb| {
    use weir_store::Role;
    let now = t("2024-01-02T00:00:00Z");
    db.store
        .create_user("ada", Role::Operator, "$argon2id$x", now)
        .await
        .expect("create");
    assert!(matches!(
        db.store.create_user("ada", Role::Admin, "h", now).await,
        Err(StoreError::Conflict(m)) if m.contains("`ada`")
    ));
    db.store.add_token("ada", "d1", now).await.expect("token");
    assert!(matches!(
        db.store.add_token("nobody", "d2", now).await,
        Err(StoreError::NotFound(_))
    ));
    let by_token = db.store.user_by_token("d1", now).await.expect("by token");
    assert_eq!(
        (by_token.name.as_str(), by_token.role, by_token.tokens),
        ("ada", Role::Operator, 1)
    );
    assert!(matches!(
        db.store.user_by_token("d3", now).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(db.store.delete_user("ada").await.expect("delete"));
    assert!(!db.store.delete_user("ada").await.expect("delete again"));
    assert!(matches!(
        db.store.user_by_token("d1", now).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(db.store.users().await.expect("users").is_empty());
});

/// The first step of a SQLite `EXPLAIN QUERY PLAN` that reads a whole stored table: a `SCAN`
/// neither through an index of live rows nor of a CTE, subquery or table-valued function.
fn sqlite_table_scan(plan: &str) -> Option<&str> {
    const LIVE_ROWS: [&str; 8] = [
        "weir_runs_active",
        "weir_ti_claim",
        "weir_ti_leases",
        "weir_ti_retry",
        "weir_ti_pool",
        "weir_ti_running",
        "weir_ti_queued_by_dag",
        "weir_ti_unfinished",
    ];
    let derived: Vec<&str> = plan
        .lines()
        .filter_map(|l| {
            l.strip_prefix("MATERIALIZE ")
                .or_else(|| l.strip_prefix("CO-ROUTINE "))
        })
        .collect();
    plan.lines().find(|line| {
        let Some(rest) = line.strip_prefix("SCAN ") else {
            return false;
        };
        let scanned = rest.split(' ').next().unwrap_or_default();
        !(derived.contains(&scanned)
            || rest.contains("VIRTUAL TABLE")
            || LIVE_ROWS
                .iter()
                .any(|index| rest.ends_with(&format!("INDEX {index}"))))
    })
}

/// Runs `sql` past the store, its `$1` bound to `arg` when given.
async fn execute_raw(db: &weir_testkit::TestDb, sql: &'static str, arg: Option<i64>) {
    if db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("pool");
        let q = sqlx::query(sql);
        let q = match arg {
            Some(a) => q.bind(a),
            None => q,
        };
        q.execute(&pool).await.expect(sql);
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
        let q = sqlx::query(sql);
        let q = match arg {
            Some(a) => q.bind(a),
            None => q,
        };
        q.execute(&pool).await.expect(sql);
    }
}

/// Whether the token `sha` was last used at `at`, read past the store.
async fn token_last_used_at(db: &weir_testkit::TestDb, sha: &str, at: DateTime<Utc>) -> bool {
    let sql = "SELECT COUNT(*) FROM weir_api_tokens WHERE token_sha256 = $1 AND last_used_at = $2";
    let n: i64 = if db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("pool");
        sqlx::query_scalar(sql)
            .bind(sha)
            .bind(at)
            .fetch_one(&pool)
            .await
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
        sqlx::query_scalar(sql)
            .bind(sha)
            .bind(at)
            .fetch_one(&pool)
            .await
    }
    .expect("read");
    n == 1
}

per_backend!(
    /// An API call reads its token; the token's use is written to the minute, not on every call.
    a_tokens_use_is_recorded_to_the_minute, |db: TestDb| {
        use weir_store::Role;
        let now = t("2024-01-02T00:00:00Z");
        db.store
            .create_user("ada", Role::Viewer, "$argon2id$x", now)
            .await
            .expect("create");
        db.store.add_token("ada", "d1", now).await.expect("token");
        for (at, recorded) in [
            ("2024-01-02T00:00:05Z", "2024-01-02T00:00:05Z"),
            ("2024-01-02T00:00:50Z", "2024-01-02T00:00:05Z"),
            ("2024-01-02T00:01:04Z", "2024-01-02T00:00:05Z"),
            ("2024-01-02T00:01:05Z", "2024-01-02T00:01:05Z"),
        ] {
            let user = db.store.user_by_token("d1", t(at)).await.expect("by token");
            assert_eq!((user.name.as_str(), user.role), ("ada", Role::Viewer));
            assert!(
                token_last_used_at(&db, "d1", t(recorded)).await,
                "a call at {at}: the token's last use should read {recorded}"
            );
        }
    }
);

per_backend!(
    /// Task instances racing to claim one object version: exactly one owns it, every racer is
    /// told the same owner, and a new version of the object is claimable again.
    an_object_version_is_claimed_by_one_instance, |db: TestDb| {
        let owner = |run: usize| weir_store::ObjectOwner {
            run_id: format!("r{run}"),
            task_id: "load".into(),
            map_index: -1,
        };
        let racers = (0..8).map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                store
                    .claim_object("s3://landing/c.csv", "\"etag-1\"", &owner(i))
                    .await
                    .expect("claim")
            })
        });
        let mut winners = Vec::new();
        for r in racers {
            winners.push(r.await.expect("join"));
        }
        assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
        // The owner claiming again (a retry) still owns it.
        let again = db
            .store
            .claim_object("s3://landing/c.csv", "\"etag-1\"", &winners[0])
            .await
            .expect("again");
        assert_eq!(again, winners[0]);
        let other = (0..8).map(owner).find(|o| *o != winners[0]).expect("a loser");
        let newer = db
            .store
            .claim_object("s3://landing/c.csv", "\"etag-2\"", &other)
            .await
            .expect("new version");
        assert_eq!(newer, other);
    }
);

per_backend!(
    an_arrived_file_or_a_queued_update_makes_one_run,
    |db: TestDb| {
        let v = version(&db.store).await;
        let now = t("2024-01-02T00:00:00Z");
        let file = [("s3://lake/in/a.csv".to_owned(), "etag-1".to_owned())];
        let first = db
            .store
            .create_run_for_files(&new_run(v, "2024-01-01T00:00:00Z", 1), &file, now)
            .await
            .expect("create");
        assert!(first.is_some());
        // Another scheduler, at another logical date, for the same object version: nothing.
        let second = db
            .store
            .create_run_for_files(&new_run(v, "2024-01-01T00:00:01Z", 1), &file, now)
            .await
            .expect("create");
        assert!(second.is_none());
        assert!(
            db.store.run("d__2024-01-01T00:00:01Z").await.is_err(),
            "rolled back"
        );
        // A new version of the object is a new arrival.
        let newer = [("s3://lake/in/a.csv".to_owned(), "etag-2".to_owned())];
        assert!(
            db.store
                .create_run_for_files(&new_run(v, "2024-01-01T00:00:02Z", 1), &newer, now)
                .await
                .expect("create")
                .is_some()
        );
        // Queued asset updates are taken once: the second run of the same events is not created.
        let spec = dag("id: d\nschedule: {assets: [w.public.t]}\ntasks:\n  a: {kind: noop}\n").spec;
        let v2 = db
            .store
            .sync_dag("dags/d.yaml", &spec, "", &Default::default(), now)
            .await
            .expect("sync");
        let event = weir_store::ExternalEvent {
            key: "w.public.t".into(),
            source: "api",
            ..Default::default()
        };
        let id = db
            .store
            .record_external_event(&event, now)
            .await
            .expect("event");
        let queued = db.store.queued_events("d").await.expect("queued");
        assert_eq!(queued.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
        let made = db
            .store
            .create_run_consuming(&new_run(v2, "2024-01-03T00:00:00Z", 1), &[id], now)
            .await
            .expect("create");
        assert!(made.is_some());
        let again = db
            .store
            .create_run_consuming(&new_run(v2, "2024-01-03T00:00:01Z", 1), &[id], now)
            .await
            .expect("create");
        assert!(again.is_none());
        assert!(
            db.store
                .queued_events("d")
                .await
                .expect("queued")
                .is_empty()
        );
    }
);

/// Two processes on one SQLite file (two stores, as `weir standalone` and a `weir trigger`
/// are): the listening one is woken by the other's news, scheduler and workers apart, and a
/// socket left by a dead listener is cleared by the next sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_sqlite_file_wake_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("weir.db").display());
    let standalone = Store::connect(&url).await.expect("standalone");
    let cli = Store::connect(&url).await.expect("cli");
    let listening = standalone.listen().expect("listens");
    assert!(standalone.listen().is_none(), "one listener a store");
    let within = std::time::Duration::from_secs(10);
    cli.wake_scheduler().await;
    tokio::time::timeout(within, standalone.scheduler_woken())
        .await
        .expect("the scheduler was woken by the other process");
    cli.wake_workers().await;
    tokio::time::timeout(within, standalone.workers_woken())
        .await
        .expect("the workers were woken by the other process");
    // A listener that died leaves its socket: the next sender removes it.
    listening.abort();
    let _ = listening.await;
    let stale = dir.path().join("weir.db.wake/deadbeef0000.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&stale).expect("a socket nobody reads"));
    assert!(stale.exists());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the senders' list ages
    cli.wake_scheduler().await;
    assert!(!stale.exists(), "a dead listener's socket is removed");
}
