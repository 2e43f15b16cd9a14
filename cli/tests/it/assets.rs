//! Assets end to end, on both metadata backends: what steps record by themselves, and DAGs
//! scheduled on assets (`all`, `any`, with cron, from an external event).

use std::sync::Arc;

use weir_model::clock::Clock;
use weir_model::{RunState, RunType};
use weir_store::{ExternalEvent, RunRow};
use weir_testkit::engine::Engine;
use weir_testkit::{DataBackend, TestDataDb, per_backend};

use crate::data::engine_with;

/// A producer loading two tables of connection `wh` (SQLite: schema `main`), and a `sql` task
/// whose target is inferred.
fn producer(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("orders.csv"), "id,amount\n1,10\n2,20\n3,30\n").expect("csv");
    std::fs::write(dir.join("customers.csv"), "id,name\n1,Ada\n2,Grace\n").expect("csv");
    format!(
        r#"id: producer
tasks:
  schema:
    kind: migrate
    conn: wh
    dir: migrations
  orders:
    kind: load
    source: {{file: "{d}/orders.csv"}}
    target: {{conn: wh, table: orders}}
    columns: {{id: {{type: int}}, amount: {{type: int}}}}
    mode: replace
  customers:
    kind: load
    source: {{file: "{d}/customers.csv"}}
    target: {{conn: wh, table: customers}}
    mode: replace
  summary:
    kind: sql
    depends_on: [orders, customers]
    conn: wh
    sql:
      - "DROP TABLE IF EXISTS summary"
      - "CREATE TABLE summary AS SELECT c.name, sum(o.amount) AS total FROM orders o JOIN customers c ON c.id = o.id GROUP BY c.name"
  check:
    kind: validate
    depends_on: [summary]
    conn: wh
    checks:
      - row_count: {{table: summary, min: 1}}
"#,
        d = dir.display()
    )
}

/// A consumer scheduled on `schedule`, printing what triggered it.
fn consumer(id: &str, schedule: &str) -> String {
    format!(
        r#"id: {id}
schedule: {schedule}
start_date: 2024-02-01
tasks:
  report:
    kind: shell
    run: |
      echo "events={{{{ trigger.events | length }}}}" >> "$WEIR_OUTPUT"
      echo "keys={{% for e in trigger.events | sort(attribute='asset_key') %}}{{{{ e.asset_key }}}},{{% endfor %}}" >> "$WEIR_OUTPUT"
      echo "runs={{% for e in trigger.events %}}{{{{ e.run_id }}}},{{% endfor %}}" >> "$WEIR_OUTPUT"
"#
    )
}

const MIGRATION: (&str, &str) = (
    "migrations/0001_first.sql",
    "CREATE TABLE IF NOT EXISTS t (id INTEGER);",
);

const BOTH: &str = "{assets: [wh.main.orders, wh.main.customers]}";

async fn runs_of(engine: &Engine, dag_id: &str) -> Vec<RunRow> {
    crate::file_triggers::runs_of(&engine.store, dag_id).await
}

async fn produce(engine: &mut Engine) -> RunRow {
    engine.clock.advance(chrono::Duration::seconds(5));
    let run = engine.trigger("producer", serde_json::json!({})).await;
    let done = engine.drive(&run.run_id).await;
    assert_eq!(
        done.state,
        RunState::Success,
        "{:?}",
        engine.tasks(&run.run_id).await
    );
    done
}

async fn output(engine: &Engine, run: &RunRow, key: &str) -> String {
    let tis = engine.tasks(&run.run_id).await;
    let report = tis.iter().find(|t| t.task_id == "report").expect("report");
    report
        .outputs
        .as_ref()
        .and_then(|o| o.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

per_backend!(steps_record_what_they_write_and_read, |meta: TestDb| {
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine_with(
        &data,
        &meta,
        &[("producer.yaml", &producer(dir.path())), MIGRATION],
    )
    .await;
    let run = produce(&mut engine).await;
    let events = engine
        .store
        .run_asset_events(&run.run_id)
        .await
        .expect("events");
    let find = |key: &str, access: &str| {
        events
            .iter()
            .find(|e| e.asset_key == key && e.access == access)
            .unwrap_or_else(|| panic!("no {access} of {key} in {events:#?}"))
    };
    let orders = find("wh.main.orders", "write");
    assert_eq!(orders.rows_written, Some(3));
    assert_eq!(orders.task_id.as_deref(), Some("orders"));
    assert_eq!(orders.try_number, Some(1));
    assert_eq!(orders.interval_start, Some(run.data_interval_start));
    assert_eq!(find("wh.main.customers", "write").rows_written, Some(2));
    let file = format!("file://{}/orders.csv", dir.path().display());
    assert_eq!(find(&file, "read").task_id.as_deref(), Some("orders"));
    // The SQL's target and sources, from its text.
    assert_eq!(
        find("wh.main.summary", "write").task_id.as_deref(),
        Some("summary")
    );
    assert_eq!(
        find("wh.main.orders", "read").task_id.as_deref(),
        Some("summary")
    );
    assert_eq!(
        find("wh.main.customers", "read").task_id.as_deref(),
        Some("summary")
    );
    // A validation reads what its checks name.
    assert_eq!(
        find("wh.main.summary", "read").task_id.as_deref(),
        Some("check")
    );
    // A migration that applied a file writes its history table.
    let history = find("wh.main.weir_schema_history", "write");
    assert_eq!(
        history.details.as_deref(),
        Some(r#"{"applied":"1","version":"1"}"#)
    );
    assert_eq!(events.len(), 9, "{events:#?}");
    // Run again, it applies nothing and writes nothing.
    let again = produce(&mut engine).await;
    let events = engine
        .store
        .run_asset_events(&again.run_id)
        .await
        .expect("events");
    assert!(
        !events
            .iter()
            .any(|e| e.asset_key.ends_with("weir_schema_history")),
        "{events:#?}"
    );
});

per_backend!(
    a_consumer_of_all_runs_once_both_were_updated,
    |meta: TestDb| {
        let data = TestDataDb::new(DataBackend::Sqlite).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let files = [
            ("producer.yaml", producer(dir.path())),
            (MIGRATION.0, MIGRATION.1.to_owned()),
            ("consumer.yaml", consumer("consumer", BOTH)),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let mut engine = engine_with(&data, &meta, &files).await;
        engine.tick().await;
        assert!(runs_of(&engine, "consumer").await.is_empty());
        // One of the two updated: not yet.
        engine
            .store
            .record_external_event(
                &ExternalEvent {
                    key: "wh.main.orders".into(),
                    source: "api",
                    ..Default::default()
                },
                engine.clock.now(),
            )
            .await
            .expect("event");
        engine.tick().await;
        assert!(runs_of(&engine, "consumer").await.is_empty());
        let produced = produce(&mut engine).await;
        engine.tick().await;
        engine.tick().await;
        let runs = runs_of(&engine, "consumer").await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        let run = engine.drive(&runs[0].run_id).await;
        assert_eq!(run.state, RunState::Success);
        assert_eq!(run.run_type, RunType::Assets);
        // The external update of orders and the producer's two.
        assert_eq!(output(&engine, &run, "events").await, "3");
        assert_eq!(
            output(&engine, &run, "keys").await,
            "wh.main.customers,wh.main.orders,wh.main.orders,"
        );
        assert!(
            output(&engine, &run, "runs")
                .await
                .contains(&produced.run_id)
        );
        // Its data interval is the producer run's.
        assert_eq!(run.data_interval_start, produced.data_interval_start);
        // Nothing more without new updates.
        engine.tick().await;
        engine.tick().await;
        assert_eq!(runs_of(&engine, "consumer").await.len(), 1);
        // Another producer run: exactly one more.
        produce(&mut engine).await;
        engine.tick().await;
        assert_eq!(runs_of(&engine, "consumer").await.len(), 2);
    }
);

per_backend!(a_consumer_of_any_runs_on_each_update, |meta: TestDb| {
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("producer.yaml", producer(dir.path())),
        (MIGRATION.0, MIGRATION.1.to_owned()),
        (
            "consumer.yaml",
            consumer(
                "eager",
                "{assets: {any: [wh.main.orders, wh.main.customers]}}",
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let mut engine = engine_with(&data, &meta, &files).await;
    produce(&mut engine).await;
    engine.tick().await;
    let runs = runs_of(&engine, "eager").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in &runs {
        let done = engine.drive(&run.run_id).await;
        assert_eq!(output(&engine, &done, "events").await, "1");
    }
    let keys: Vec<String> = {
        let mut k = Vec::new();
        for run in &runs {
            k.push(output(&engine, run, "keys").await);
        }
        k.sort();
        k
    };
    assert_eq!(keys, ["wh.main.customers,", "wh.main.orders,"]);
    engine.tick().await;
    assert_eq!(runs_of(&engine, "eager").await.len(), 2);
});

per_backend!(cron_and_assets_wait_for_both, |meta: TestDb| {
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("producer.yaml", producer(dir.path())),
        (MIGRATION.0, MIGRATION.1.to_owned()),
        (
            "consumer.yaml",
            consumer(
                "daily",
                "{cron: \"0 6 * * *\", assets: [wh.main.orders, wh.main.customers]}",
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    // The clock starts at 2024-03-01T12:00Z: the interval of 02-29 06:00 is due, without data.
    let mut engine = engine_with(&data, &meta, &files).await;
    engine.tick().await;
    assert!(runs_of(&engine, "daily").await.is_empty());
    produce(&mut engine).await;
    engine.tick().await;
    let runs = runs_of(&engine, "daily").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].run_type, RunType::Scheduled);
    assert_eq!(
        runs[0].logical_date,
        weir_testkit::engine::t("2024-02-29T06:00:00Z")
    );
    let done = engine.drive(&runs[0].run_id).await;
    assert_eq!(output(&engine, &done, "events").await, "2");
    // Data again the same day: the next run waits for the next tick.
    produce(&mut engine).await;
    engine.tick().await;
    assert_eq!(runs_of(&engine, "daily").await.len(), 1);
    engine
        .clock
        .set(weir_testkit::engine::t("2024-03-02T06:30:00Z"));
    engine.tick().await;
    let runs = runs_of(&engine, "daily").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[1].logical_date,
        weir_testkit::engine::t("2024-03-01T06:00:00Z")
    );
    // A tick with no new data creates nothing.
    engine
        .clock
        .set(weir_testkit::engine::t("2024-03-03T06:30:00Z"));
    engine.tick().await;
    assert_eq!(runs_of(&engine, "daily").await.len(), 2);
});

/// An external system records an update through the API (the CLI in remote mode) and the
/// DAG scheduled on that asset runs; a viewer may not, and a bad key is refused by name.
#[test]
fn an_external_update_through_the_api_runs_the_consumer() {
    use crate::remote::{remote, token_for};
    use crate::{Standalone, examples_copy, stderr, stdout};
    let server_dir = examples_copy();
    std::fs::write(
        server_dir.path().join("dags/on_landing.yaml"),
        consumer("on_landing", "{assets: {any: [lake.public.landed]}}"),
    )
    .expect("dag");
    let standalone = Standalone::start(server_dir.path());
    let operator = token_for(server_dir.path(), "ops", "operator");
    let viewer = token_for(server_dir.path(), "watcher", "viewer");
    let here = tempfile::tempdir().expect("tempdir");
    let touch = |token: &str, key: &str| {
        remote(
            here.path(),
            &standalone.url,
            token,
            &[
                "assets",
                "touch",
                key,
                "--rows",
                "42",
                "--interval-start",
                "2024-03-01",
                "--interval-end",
                "2024-03-02",
            ],
        )
    };
    let o = touch(&viewer, "lake.public.landed");
    assert_ne!(o.status.code(), Some(0), "a viewer recorded an event");
    let o = touch(&operator, "lake.landed");
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("asset `lake.landed` has 2 dot-separated names"),
        "{}",
        stderr(&o)
    );
    let o = touch(&operator, "lake.public.landed");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("recorded an update of lake.public.landed"));
    // The consumer's run comes from the scheduler of the running weir.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runs = loop {
        let o = remote(
            here.path(),
            &standalone.url,
            &operator,
            &["runs", "list", "on_landing", "--json"],
        );
        let runs: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
        if runs
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["state"] == "success"))
        {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no successful run of on_landing: {runs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let runs = runs.as_array().expect("list");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run_type"], "assets", "{runs:?}");
    assert!(
        runs[0]["data_interval_start"]
            .as_str()
            .is_some_and(|s| s.starts_with("2024-03-01")),
        "{runs:?}"
    );
    // The run's page says what triggered it; a cron DAG's page shows its intervals and gaps.
    let page = |path: &str| {
        let o = std::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                &format!("Authorization: Bearer {operator}"),
                &format!("{}{path}", standalone.url),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let run_id = runs[0]["run_id"].as_str().expect("run id");
    let html = page(&format!("/runs/{}", weir_model::text::url_segment(run_id)));
    assert!(
        html.contains("Triggered by") && html.contains("/assets/lake.public.landed"),
        "{html}"
    );
    let html = page("/dags/table_copy");
    assert!(
        html.contains("interval-strip") && html.contains("not materialized"),
        "{html}"
    );
    // The event is listed with its counts, and the audit log names who recorded it.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["assets", "events", "lake.public.landed", "--json"])
        .current_dir(server_dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .output()
        .expect("weir");
    let events: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(events[0]["rows_written"], 42, "{events}");
    assert_eq!(events[0]["source"], "api", "{events}");
}

const DAILY: &str = r#"id: daily
schedule: "@daily"
start_date: 2024-03-01
tasks:
  build:
    kind: shell
    run: test "{{ ds }}" != 2024-03-02
    produces: [wh.public.daily]
"#;

// `--missing` creates exactly the intervals never materialized: not those with a successful
// run, nor one whose run was deleted since but whose write is recorded; it reruns the failed
// one and leaves the one still running.
per_backend!(a_missing_backfill_fills_only_the_gaps, |meta: TestDb| {
    use weir_ops::actions::{self, Rerun};
    let mut engine = Engine::new(&meta, &[("daily.yaml", DAILY)]).await;
    std::fs::write(
        engine.dir.path().join("weir.toml"),
        format!("database_url = \"{}\"\ndags_folder = \"dags\"\n", meta.url),
    )
    .expect("config");
    let (version, dag) = actions::latest_dag(&engine.store, "daily")
        .await
        .expect("dag");
    let day = |d: u32| {
        let from = chrono::NaiveDate::from_ymd_opt(2024, 3, d).expect("day");
        dag.plan_backfill(from, from).expect("plan")[0]
    };
    let (store, clock) = (engine.store.clone(), Arc::clone(&engine.clock));
    let run_day = |d: u32| {
        let store = store.clone();
        let dag = dag.clone();
        let interval = day(d);
        let now = clock.now();
        async move {
            actions::backfill(
                &store,
                &dag,
                version,
                &[interval],
                Rerun::None,
                &Default::default(),
                now,
            )
            .await
            .expect("backfill")
            .run_ids[0]
                .clone()
        }
    };
    // Mar 4 succeeded long ago; its run is deleted by retention, its write stays.
    let old = run_day(4).await;
    assert_eq!(engine.drive(&old).await.state, RunState::Success);
    engine.clock.advance(chrono::Duration::days(30));
    let cutoff = engine.clock.now() - chrono::Duration::days(1);
    weir_scheduler::delete_old_runs(&engine.store, cutoff)
        .await
        .expect("retention");
    assert!(engine.store.run(&old).await.is_err());
    // Mar 1 succeeded, Mar 2 failed, Mar 5 is still queued; Mar 3 never ran.
    for d in [1, 2] {
        let id = run_day(d).await;
        engine.drive(&id).await;
    }
    let queued = run_day(5).await;
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "backfill",
            "daily",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-06",
            "--missing",
            "--dry-run",
            "--json",
        ])
        .current_dir(engine.dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .output()
        .expect("weir");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let starts: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["logical_date"].as_str())
        .collect();
    assert_eq!(
        starts,
        [
            "2024-03-02T00:00:00Z",
            "2024-03-03T00:00:00Z",
            "2024-03-05T00:00:00Z",
            "2024-03-06T00:00:00Z"
        ]
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "backfill",
            "daily",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-06",
            "--missing",
            "--json",
        ])
        .current_dir(engine.dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .output()
        .expect("weir");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    // Mar 3 and Mar 6 created, Mar 2 cleared to run again, Mar 5 kept (queued).
    let ids: Vec<&str> = done
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "daily__2024-03-02T00:00:00Z",
            "daily__2024-03-03T00:00:00Z",
            "daily__2024-03-05T00:00:00Z",
            "daily__2024-03-06T00:00:00Z"
        ]
    );
    assert_eq!(
        done[0]["tasks"][0]["state"], "scheduled",
        "the failed day is rerun: {done}"
    );
    // (The scheduler made the latest interval's run too, late in March: not in the range.)
    let runs = runs_of(&engine, "daily").await;
    assert_eq!(
        runs.iter()
            .map(|r| r.ds())
            .filter(|d| d.as_str() <= "2024-03-06")
            .collect::<Vec<_>>(),
        [
            "2024-03-01",
            "2024-03-02",
            "2024-03-03",
            "2024-03-05",
            "2024-03-06"
        ]
    );
    assert_eq!(
        engine.store.run(&queued).await.expect("run").state,
        RunState::Queued
    );
});

const UP: &str = r#"id: up
schedule: "@daily"
start_date: 2024-03-01
tasks:
  build: {kind: shell, run: "true", produces: [wh.public.up]}
"#;

const DOWN: &str = r#"id: down
schedule: "@daily"
start_date: 2024-03-01
tasks:
  build: {kind: shell, run: "true", consumes: [wh.public.up], produces: [wh.public.down]}
"#;

// A downstream interval is stale once its upstream interval is written again after it; the
// other intervals are not, and writing the downstream again clears it.
per_backend!(
    a_rewritten_upstream_interval_makes_the_downstream_stale,
    |meta: TestDb| {
        use weir_ops::actions::{self, Rerun};
        let mut engine = Engine::new(&meta, &[("up.yaml", UP), ("down.yaml", DOWN)]).await;
        let store = engine.store.clone();
        let clock = Arc::clone(&engine.clock);
        let run = |dag_id: &'static str, day: u32, rerun: Rerun| {
            let store = store.clone();
            let now = clock.now();
            async move {
                let (version, dag) = actions::latest_dag(&store, dag_id).await.expect("dag");
                let d = chrono::NaiveDate::from_ymd_opt(2024, 3, day).expect("day");
                let interval = dag.plan_backfill(d, d).expect("plan")[0];
                actions::backfill(
                    &store,
                    &dag,
                    version,
                    &[interval],
                    rerun,
                    &Default::default(),
                    now,
                )
                .await
                .expect("backfill")
                .run_ids[0]
                    .clone()
            }
        };
        for day in [1, 2] {
            for dag in ["up", "down"] {
                let id = run(dag, day, Rerun::None).await;
                engine.clock.advance(chrono::Duration::seconds(1));
                assert_eq!(engine.drive(&id).await.state, RunState::Success);
            }
        }
        assert!(
            store
                .stale_intervals("wh.public.down")
                .await
                .expect("stale")
                .is_empty()
        );
        // Mar 2 of `up` is written again.
        engine.clock.advance(chrono::Duration::seconds(1));
        let again = run("up", 2, Rerun::All).await;
        assert_eq!(engine.drive(&again).await.state, RunState::Success);
        let stale = store
            .stale_intervals("wh.public.down")
            .await
            .expect("stale");
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].upstream, "wh.public.up");
        assert_eq!(
            stale[0].interval_start,
            weir_testkit::engine::t("2024-03-02T00:00:00Z")
        );
        // The downstream written again: fresh.
        engine.clock.advance(chrono::Duration::seconds(1));
        let redo = run("down", 2, Rerun::All).await;
        assert_eq!(engine.drive(&redo).await.state, RunState::Success);
        assert!(
            store
                .stale_intervals("wh.public.down")
                .await
                .expect("stale")
                .is_empty()
        );
    }
);
