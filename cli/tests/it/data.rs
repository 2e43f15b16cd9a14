//! Data steps end to end: the real scheduler and worker (metadata on SQLite) running `sql`
//! steps against real SQLite, Postgres and MariaDB databases.

use weir_model::{RunState, TaskState};
use weir_testkit::{DataBackend, TestDataDb, TestDb, per_backend};

use weir_testkit::engine::{Engine, worker_config};

pub(crate) async fn engine_with(
    data: &TestDataDb,
    meta: &TestDb,
    files: &[(&str, &str)],
) -> Engine {
    let mut wcfg = worker_config();
    wcfg.connections = [("wh".to_owned(), data.url.clone())].into_iter().collect();
    Engine::with_worker(meta, files, wcfg).await
}

/// Rows of a query on the data database, as text (to check what a step left behind).
pub(crate) async fn query_text(data: &TestDataDb, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    async fn rows<DB: sqlx::Database>(url: &str, sql: &str) -> Vec<Vec<Option<String>>>
    where
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'r> Option<String>: sqlx::Decode<'r, DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let pool = sqlx::Pool::<DB>::connect(url).await.expect("connect");
        let out = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&pool)
            .await
            .expect("query")
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get_unchecked::<Option<String>, _>(i).expect("text"))
                    .collect()
            })
            .collect();
        pool.close().await;
        out
    }
    match data.backend {
        DataBackend::Sqlite => rows::<sqlx::Sqlite>(&data.url, sql).await,
        DataBackend::Postgres => rows::<sqlx::Postgres>(&data.url, sql).await,
        DataBackend::MariaDb => rows::<sqlx::MySql>(&data.url, sql).await,
    }
}

const SQL_DAG: &str = r#"id: warehouse
tasks:
  create:
    kind: sql
    conn: wh
    sql:
      - "create table hires (id integer primary key, name varchar(50) not null, day varchar(10))"
      - "insert into hires (id, name, day) values (1, 'Ada', '{{ ds }}'), (2, 'Grace', '{{ ds }}')"
  count:
    kind: sql
    conn: wh
    depends_on: [create]
    sql: "select count(*) as n, max(name) as last_name, min(day) as day from hires"
    fetch: first_row
  report:
    kind: sql
    conn: wh
    depends_on: [count]
    file: sql/report.sql
    fetch: first_row
  echo:
    kind: shell
    depends_on: [count, report]
    run: echo "n={{ tasks.count.outputs.n }} last={{ tasks.count.outputs.last_name }} report={{ tasks.report.outputs.total }}"
  half_done:
    kind: sql
    conn: wh
    depends_on: [echo]
    sql:
      - "insert into hires (id, name, day) values (3, 'Edsger', '{{ ds }}')"
      - "insert into no_such_table values (1)"
"#;

const REPORT_SQL: &str = "-- a file with two statements and a template\n\
    update hires set day = '{{ ds }}' where id = 2;\n\
    select count(*) as total from hires where day = '{{ ds }}';\n";

per_backend!(
    /// Statements in one transaction, `fetch: first_row` outputs passed downstream, a templated
    /// `file` with several statements, and a failure that rolls the whole step back.
    sql_steps_run_in_one_transaction_on_every_database, |backend: DataBackend| {
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let mut engine = engine_with(
            &data,
            &meta,
            &[("warehouse.yaml", SQL_DAG), ("sql/report.sql", REPORT_SQL)],
        )
        .await;
        let run = engine.trigger("warehouse", serde_json::json!({})).await;
        let done = engine.drive(&run.run_id).await;
        assert_eq!(done.state, RunState::Failed, "{backend:?}");
        let tis = engine.tasks(&run.run_id).await;
        let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
        for ok in ["create", "count", "report", "echo"] {
            assert_eq!(
                by_id(ok).state,
                TaskState::Success,
                "{backend:?} {ok}: {:?}",
                by_id(ok).error
            );
        }
        assert_eq!(
            by_id("count").outputs,
            Some(serde_json::json!({"n": "2", "last_name": "Grace", "day": "2024-03-01"})),
            "{backend:?}"
        );
        assert_eq!(
            by_id("report").outputs,
            Some(serde_json::json!({"total": "2"})),
            "{backend:?}"
        );
        let echo = engine.log_of(by_id("echo"), 1).await;
        assert!(
            echo.iter().any(|l| l == "n=2 last=Grace report=2"),
            "{backend:?}: {echo:?}"
        );
        let failed = by_id("half_done");
        assert_eq!(failed.state, TaskState::Failed, "{backend:?}");
        let error = failed.error.clone().unwrap_or_default();
        assert!(
            error.contains("statement block 2 of 2") && error.contains("rolled back"),
            "{backend:?}: {error}"
        );
        // The first insert of the failed step was rolled back with it.
        assert_eq!(
            query_text(&data, "select count(*) from hires").await,
            [[Some("2".to_owned())]],
            "{backend:?}"
        );
    }
);

/// A connection's password, and configured secrets, never reach a task's log or error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_in_logs_and_errors() {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    // Trust authentication accepts any password, so the URL works with this one.
    let with_password = data.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:Sup3r%2FSecret@",
        1,
    );
    assert_ne!(
        with_password, data.url,
        "the test URL has the expected shape"
    );
    let mut wcfg = worker_config();
    wcfg.connections = [("wh".to_owned(), with_password.clone())]
        .into_iter()
        .collect();
    wcfg.secrets = vec!["hook-token-123".to_owned()];
    let dag = format!(
        "id: leaky\ntasks:\n  talk:\n    kind: shell\n    run: |\n      echo \"url {with_password} raw Sup3r/Secret token hook-token-123\"\n      echo \"to stderr Sup3r/Secret\" >&2\n      exit 3\n  query:\n    kind: sql\n    conn: wh\n    sql: \"select 'Sup3r/Secret' as leaked, nonsense_column from no_table\"\n"
    );
    let mut engine = Engine::with_worker(&meta, &[("leaky.yaml", &dag)], wcfg).await;
    let run = engine.trigger("leaky", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let mut seen = String::new();
    for ti in &tis {
        seen.push_str(&engine.log_of(ti, 1).await.join("\n"));
        seen.push_str(ti.error.as_deref().unwrap_or(""));
    }
    assert!(seen.contains("url postgres://postgres:***@"), "{seen}");
    assert!(seen.contains("raw *** token ***"), "{seen}");
    assert!(seen.contains("to stderr ***"), "{seen}");
    for secret in ["Sup3r", "Secret", "hook-token-123"] {
        assert!(!seen.contains(secret), "`{secret}` leaked:\n{seen}");
    }
}

const MIGRATE_DAG: &str =
    "id: schema\ntasks:\n  migrate:\n    kind: migrate\n    conn: wh\n    dir: migrations/wh\n";

per_backend!(
    /// Versioned migrations: applied in order and recorded, idempotent, an edited applied file is
    /// an error naming it, and a failing migration is not recorded.
    migrations_apply_once_in_order_and_refuse_edited_files, |backend: DataBackend| {
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let mut engine = engine_with(
            &data,
            &meta,
            &[
                ("schema.yaml", MIGRATE_DAG),
                (
                    "migrations/wh/0002_seed.sql",
                    "insert into people (id, name) values (1, 'Ada');\ninsert into people (id, name) values (2, 'Grace');\n",
                ),
                (
                    "migrations/wh/0001_create.sql",
                    "create table people (id integer primary key, name varchar(20) not null);\n",
                ),
            ],
        )
        .await;
        let outputs = |ti: &weir_store::TaskInstanceRow| ti.outputs.clone();
        let first = engine.trigger("schema", serde_json::json!({})).await;
        assert_eq!(
            engine.drive(&first.run_id).await.state,
            RunState::Success,
            "{backend:?}"
        );
        let ti = engine.tasks(&first.run_id).await.remove(0);
        assert_eq!(
            outputs(&ti),
            Some(serde_json::json!({"applied": "2", "version": "2"})),
            "{backend:?}"
        );
        assert_eq!(
            query_text(
                &data,
                "select version, name from weir_schema_history order by version"
            )
            .await,
            [
                [Some("1".to_owned()), Some("create".to_owned())],
                [Some("2".to_owned()), Some("seed".to_owned())]
            ],
            "{backend:?}"
        );

        // Again: nothing to do.
        engine.clock.advance(chrono::Duration::seconds(5));
        let second = engine.trigger("schema", serde_json::json!({})).await;
        assert_eq!(
            engine.drive(&second.run_id).await.state,
            RunState::Success,
            "{backend:?}"
        );
        let ti = engine.tasks(&second.run_id).await.remove(0);
        assert_eq!(
            outputs(&ti),
            Some(serde_json::json!({"applied": "0", "version": "2"})),
            "{backend:?}"
        );

        // A failing migration is not recorded (and, where DDL is transactional, leaves nothing).
        std::fs::write(
            engine.path("dags/migrations/wh/0003_broken.sql"),
            "insert into people (id, name) values (3, 'Edsger');\ninsert into no_such_table values (1);\n",
        )
        .expect("write");
        engine.clock.advance(chrono::Duration::seconds(5));
        let third = engine.trigger_after_sync("schema").await;
        assert_eq!(
            engine.drive(&third.run_id).await.state,
            RunState::Failed,
            "{backend:?}"
        );
        let ti = engine.tasks(&third.run_id).await.remove(0);
        let error = ti.error.clone().unwrap_or_default();
        assert!(
            error.contains("0003_broken.sql failed, not recorded"),
            "{backend:?}: {error}"
        );
        assert_eq!(
            query_text(&data, "select max(version) from weir_schema_history").await,
            [[Some("2".to_owned())]],
            "{backend:?}"
        );
        if backend != DataBackend::MariaDb {
            assert_eq!(
                query_text(&data, "select count(*) from people").await,
                [[Some("2".to_owned())]],
                "{backend:?}: the failed migration's first statement stayed"
            );
        }

        // Editing an applied file is refused, naming it, before anything runs.
        std::fs::remove_file(engine.path("dags/migrations/wh/0003_broken.sql")).expect("rm");
        std::fs::remove_file(engine.path("dags/migrations/wh/0002_seed.sql")).expect("rm");
        std::fs::write(
            engine.path("dags/migrations/wh/0001_create.sql"),
            "create table people (id integer primary key, name varchar(40) not null);\n",
        )
        .expect("write");
        engine.clock.advance(chrono::Duration::seconds(5));
        let fourth = engine.trigger_after_sync("schema").await;
        assert_eq!(
            engine.drive(&fourth.run_id).await.state,
            RunState::Failed,
            "{backend:?}"
        );
        let ti = engine.tasks(&fourth.run_id).await.remove(0);
        let error = ti.error.clone().unwrap_or_default();
        assert!(
            error.contains("0001_create.sql was applied with checksum")
                && error.contains("has changed"),
            "{backend:?}: {error}"
        );
    }
);

const VALIDATE_DAG: &str = r#"id: quality
tasks:
  fill:
    kind: sql
    conn: wh
    sql:
      - "create table people (id integer, name varchar(20), dept varchar(10), salary integer, hired timestamp)"
      - "insert into people (id, name, dept, salary, hired) values (1, 'Ada', 'eng', 100, CURRENT_TIMESTAMP), (2, 'Grace', 'ops', 200, CURRENT_TIMESTAMP), (2, NULL, 'sales', 5000, CURRENT_TIMESTAMP), (4, 'O''Brien', 'eng', -5, CURRENT_TIMESTAMP)"
  strict:
    kind: validate
    depends_on: [fill]
    conn: wh
    retries: 2
    retry_delay: 1s
    checks:
      - row_count: {table: people, min: 1, max: 10}
      - not_null: {table: people, columns: [id, name]}
      - unique: {table: people, columns: [id]}
      - accepted_values: {table: people, column: dept, values: [eng, ops]}
      - range: {table: people, column: salary, min: 0, max: 1000}
      - freshness: {table: people, column: hired, max_age: 2d}
      - sql: {query: "select id, name from people where salary < 0", severity: warn}
      - compare_count:
          source: {conn: wh, table: people}
          target: {conn: wh, query: "select * from people where id < 100"}
  lenient:
    kind: validate
    depends_on: [fill]
    conn: wh
    checks:
      - row_count: {table: people, min: 4}
      - accepted_values: {table: people, column: name, values: ["Ada", "O'Brien"], severity: warn}
      - compare_count:
          source: {conn: wh, table: people}
          target: {conn: wh, query: "select * from people where salary < 1000"}
          tolerance: "25%"
"#;

per_backend!(
    /// Every check on every database: results as structured outputs (observed values, failing
    /// samples), error checks failing the task after all ran, warnings not failing it.
    validate_checks_report_structured_results_on_every_database, |backend: DataBackend| {
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let mut engine = engine_with(&data, &meta, &[("quality.yaml", VALIDATE_DAG)]).await;
        let run = engine.trigger("quality", serde_json::json!({})).await;
        engine.drive(&run.run_id).await;
        let tis = engine.tasks(&run.run_id).await;
        let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");

        let strict = by_id("strict");
        assert_eq!(strict.state, TaskState::Failed, "{backend:?}");
        // The error names each failed check, what it saw and its failing keys or rows.
        let error = strict.error.clone().unwrap_or_default();
        assert!(
            error.starts_with(
                "4 check(s) failed: check 2 not_null: id: 0, name: 1; failing rows: {"
            ),
            "{backend:?}: {error}"
        );
        for part in [
            "; check 3 unique: duplicated_keys: 1; failing rows: {\"id\":\"2\",\"copies\":\"2\"}",
            "; check 4 accepted_values: rows_with_other_values: 1; failing rows: {\"value\":\"sales\",\"occurrences\":\"1\"}",
            "; check 5 range: rows_outside: 2; failing rows: ",
        ] {
            assert!(error.contains(part), "{backend:?}: {error}");
        }
        assert_eq!(
            strict.try_number, 1,
            "{backend:?}: failed data is not retried"
        );
        let out = strict.outputs.clone().expect("outputs kept on failure");
        assert_eq!(out["checks_passed"], 3, "{backend:?}: {out}");
        assert_eq!(out["checks_failed"], 5, "{backend:?}: {out}");
        let checks = out["checks"].as_array().expect("list");
        let passed: Vec<bool> = checks.iter().map(|c| c["passed"] == true).collect();
        assert_eq!(
            passed,
            [true, false, false, false, false, true, false, true],
            "{backend:?}: {out}"
        );
        assert_eq!(checks[0]["observed"], 4, "{backend:?}");
        assert_eq!(
            checks[1]["observed"],
            serde_json::json!({"id": 0, "name": 1}),
            "{backend:?}"
        );
        assert_eq!(
            checks[1]["samples"].as_array().map(Vec::len),
            Some(1),
            "{backend:?}"
        );
        assert_eq!(
            checks[2]["observed"],
            serde_json::json!({"duplicated_keys": 1}),
            "{backend:?}"
        );
        assert_eq!(checks[2]["samples"][0]["id"], "2", "{backend:?}");
        assert_eq!(checks[2]["samples"][0]["copies"], "2", "{backend:?}");
        assert_eq!(
            checks[3]["observed"],
            serde_json::json!({"rows_with_other_values": 1}),
            "{backend:?}"
        );
        assert_eq!(checks[3]["samples"][0]["value"], "sales", "{backend:?}");
        assert_eq!(
            checks[4]["observed"],
            serde_json::json!({"rows_outside": 2}),
            "{backend:?}"
        );
        assert_eq!(checks[6]["severity"], "warn", "{backend:?}");
        assert_eq!(checks[6]["samples"][0]["name"], "O'Brien", "{backend:?}");
        assert_eq!(
            checks[7]["observed"],
            serde_json::json!({"source": 4, "target": 4, "difference": 0, "allowed": 0}),
            "{backend:?}"
        );

        let lenient = by_id("lenient");
        assert_eq!(
            lenient.state,
            TaskState::Success,
            "{backend:?}: {:?}",
            lenient.error
        );
        let out = lenient.outputs.clone().expect("outputs");
        assert_eq!(out["checks_failed"], 1, "{backend:?}: {out}");
        // Only Grace is another value (the quoted O'Brien matched; NULL is not_null's business).
        assert_eq!(
            out["checks"][1]["observed"],
            serde_json::json!({"rows_with_other_values": 1}),
            "{backend:?}"
        );
        // 1 of 4 rows differs: 25% of 4 allows exactly 1.
        assert_eq!(
            out["checks"][2]["observed"],
            serde_json::json!({"source": 4, "target": 3, "difference": 1, "allowed": 1}),
            "{backend:?}"
        );
    }
);

per_backend!(
    /// The load step on every database: typed columns from header-less CSV and from JSON lines,
    /// rejects with file, line and reason (parsing and database constraints), the rows invariant,
    /// `replace` and `truncate_insert`, and a failing load that leaves the target as it was.
    loads_account_for_every_row_and_fail_without_a_trace, |backend: DataBackend| {
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        // Line 3: empty name (not_null); line 4: bad int; line 5: duplicate id (the database's
        // primary key refuses it); line 6: a quoted comma.
        let hires = file(
            "hires.csv",
            "1,Ada,2021-11-07T01:30:00Z,2,1\n2,Grace,2021-03-01T08:00:00Z,1,2\n3,,2021-05-01T08:00:00Z,1,2\nx4,Alan,2021-06-01T08:00:00Z,1,1\n2,Twin,2021-07-01T08:00:00Z,1,1\n6,\"Hopper, Grace\",2021-08-01T08:00:00Z,2,2\n",
        );
        let more = file(
            "more.jsonl",
            "{\"emp_id\": 7, \"who\": \"Edsger\"}\n\n{\"emp_id\": 8, \"who\": \"Barbara\"}\n",
        );
        let broken = file("broken.csv", "id,name\n10,Ok\n11,Fine\nnot-a-number,Bad\n");
        let dag = format!(
            r#"id: loads
tasks:
  schema:
    kind: sql
    conn: wh
    sql: "create table hires (id integer primary key, name varchar(40) not null, hired_at {ts}, department_id integer, job_id integer)"
  hires:
    kind: load
    depends_on: [schema]
    source: {{file: "{hires}", format: csv, header: false}}
    target: {{conn: wh, table: hires, create: never}}
    columns:
      id: {{type: int, not_null: true}}
      name: {{type: text, not_null: true}}
      hired_at: {{type: timestamptz}}
      department_id: {{type: int}}
      job_id: {{type: int}}
    batch_size: 2
    rejects: {{on_error: reject, max: 5}}
  people:
    kind: load
    source: {{file: "{more}", format: jsonl}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint, from: emp_id}}
      name: {{type: text, from: who}}
    mode: replace
  again:
    kind: load
    depends_on: [people]
    source: {{file: "{more}", format: jsonl}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint, from: emp_id}}
      name: {{type: text, from: who}}
    mode: truncate_insert
  broken:
    kind: load
    depends_on: [again]
    source: {{file: "{broken}", format: csv}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint}}
      name: {{type: text}}
    batch_size: 1
"#,
            ts = if backend == DataBackend::MariaDb {
                "datetime(6)"
            } else {
                "timestamp"
            },
        );
        let mut engine = engine_with(&data, &meta, &[("loads.yaml", &dag)]).await;
        let run = engine.trigger("loads", serde_json::json!({})).await;
        engine.drive(&run.run_id).await;
        let tis = engine.tasks(&run.run_id).await;
        let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");

        let hires_ti = by_id("hires");
        assert_eq!(
            hires_ti.state,
            TaskState::Success,
            "{backend:?}: {:?}",
            hires_ti.error
        );
        let out = hires_ti.outputs.clone().expect("outputs");
        assert_eq!(
            (
                &out["rows_read"],
                &out["rows_loaded"],
                &out["rows_rejected"]
            ),
            (
                &serde_json::json!(6),
                &serde_json::json!(3),
                &serde_json::json!(3)
            ),
            "{backend:?}: {out}"
        );
        assert_eq!(
            query_text(&data, "select id, name from hires order by id").await,
            [
                [Some("1".to_owned()), Some("Ada".to_owned())],
                [Some("2".to_owned()), Some("Grace".to_owned())],
                [Some("6".to_owned()), Some("Hopper, Grace".to_owned())],
            ],
            "{backend:?}"
        );
        let rejects = query_text(
            &data,
            "select line_number, raw_row, reason from hires__rejects order by line_number",
        )
        .await;
        let lines: Vec<&str> = rejects
            .iter()
            .map(|r| r[0].as_deref().unwrap_or(""))
            .collect();
        assert_eq!(lines, ["3", "4", "5"], "{backend:?}: {rejects:?}");
        let reason = |i: usize| rejects[i][2].clone().unwrap_or_default();
        assert!(
            reason(0).contains("`name` is empty but not_null"),
            "{backend:?}: {}",
            reason(0)
        );
        assert!(
            reason(1).contains("`id`: `x4` is not an int"),
            "{backend:?}: {}",
            reason(1)
        );
        assert!(
            reason(2).starts_with("refused by the database"),
            "{backend:?}: {}",
            reason(2)
        );
        assert_eq!(
            rejects[2][1].as_deref(),
            Some("2,Twin,2021-07-01T08:00:00Z,1,1"),
            "{backend:?}"
        );

        for id in ["people", "again"] {
            let ti = by_id(id);
            assert_eq!(
                ti.state,
                TaskState::Success,
                "{backend:?} {id}: {:?}",
                ti.error
            );
            assert_eq!(
                ti.outputs.as_ref().map(|o| o["rows_loaded"].clone()),
                Some(serde_json::json!(2)),
                "{backend:?} {id}"
            );
        }
        // The failed load (bad third row, one row per batch) left the table as it was.
        let broken_ti = by_id("broken");
        assert_eq!(broken_ti.state, TaskState::Failed, "{backend:?}");
        let error = broken_ti.error.clone().unwrap_or_default();
        assert!(
            error.contains("broken.csv line 4: `id`: `not-a-number` is not a bigint"),
            "{backend:?}: {error}"
        );
        assert_eq!(
            query_text(&data, "select id, name from people order by id").await,
            [
                [Some("7".to_owned()), Some("Edsger".to_owned())],
                [Some("8".to_owned()), Some("Barbara".to_owned())],
            ],
            "{backend:?}"
        );
    }
);

/// A load killed mid-way (SIGKILL of the process running it, batches already sent) leaves
/// the target exactly as before: on Postgres, not even the table it was creating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_mid_way_leaves_nothing() {
    use std::io::{BufRead, Write};
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("big.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
        writeln!(w, "id,name").expect("write");
        for i in 0..400_000 {
            writeln!(w, "{i},name number {i}").expect("write");
        }
    }
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/big.yaml"),
        format!(
            "id: big\ntasks:\n  load:\n    kind: load\n    source: {{file: \"{}\", format: csv}}\n    target: {{conn: wh, table: big}}\n    columns:\n      id: {{type: bigint}}\n      name: {{type: text}}\n    batch_size: 1000\n",
            csv.display()
        ),
    )
    .expect("dag");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["tasks", "test", "big", "load"])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .env("WEIR_CONN_WH", &data.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start weir");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("loading 1 file(s)"));
    assert!(started, "the load never started");
    // Let batches go in: rows sit in the open transaction.
    let pool = sqlx::PgPool::connect(&data.url).await.expect("connect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let inserting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and (query like 'COPY \"big\"%' or query like 'INSERT INTO \"big\"%')",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        if inserting > 0 {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the load finished before it could be killed; make the file bigger"
        );
        assert!(std::time::Instant::now() < deadline, "no insert seen");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // The server notices the closed connection and rolls back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed session lingers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name in ('big', 'big__rejects')",
    )
    .fetch_one(&pool)
    .await
    .expect("tables");
    assert_eq!(tables, 0, "the killed load left a table behind");
    pool.close().await;
}

/// Parses a NYT `date,cases,deaths` file into date → (cases, deaths), independently of weir.
fn nyt(path: &std::path::Path) -> std::collections::BTreeMap<String, (String, String)> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), (f[1].to_owned(), f[2].to_owned()))
        })
        .collect()
}

per_backend!(
    /// Upserts of the three real NYT downloads (later ones revise earlier days): inserted,
    /// updated and unchanged counts as computed here from the files, an unchanged row not
    /// rewritten, and the table equal to the last download.
    upserts_of_the_covid_downloads_count_revisions_as_updates, |backend: DataBackend| {
        let covid = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/covid");
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let dag = format!(
            r#"id: covid
params:
  snapshot: us_v1
tasks:
  load:
    kind: load
    source: {{file: "{}/{{{{ params.snapshot }}}}.csv", format: csv}}
    target: {{conn: wh, table: covid_us}}
    columns:
      date: {{type: date, not_null: true}}
      cases: {{type: bigint, not_null: true}}
      deaths: {{type: bigint, not_null: true}}
    mode: upsert
    key: [date]
"#,
            covid.display()
        );
        let mut engine = engine_with(&data, &meta, &[("covid.yaml", &dag)]).await;
        let mut held: std::collections::BTreeMap<String, (String, String)> = Default::default();
        let mut revisions = 0;
        for snapshot in ["us_v1", "us_v2", "us_v3"] {
            let file = nyt(&covid.join(format!("{snapshot}.csv")));
            let inserted = file.keys().filter(|d| !held.contains_key(*d)).count();
            let updated = file
                .iter()
                .filter(|(d, v)| held.get(*d).is_some_and(|h| h != *v))
                .count();
            let unchanged = file
                .iter()
                .filter(|(d, v)| held.get(*d) == Some(*v))
                .count();
            engine.clock.advance(chrono::Duration::seconds(5));
            let run = engine
                .trigger("covid", serde_json::json!({"snapshot": snapshot}))
                .await;
            engine.drive(&run.run_id).await;
            let ti = engine.tasks(&run.run_id).await.remove(0);
            assert_eq!(
                ti.state,
                TaskState::Success,
                "{backend:?} {snapshot}: {:?}",
                ti.error
            );
            let out = ti.outputs.clone().expect("outputs");
            assert_eq!(
                [
                    &out["rows_read"],
                    &out["rows_inserted"],
                    &out["rows_updated"],
                    &out["rows_unchanged"],
                    &out["rows_rejected"]
                ],
                [
                    &serde_json::json!(file.len()),
                    &serde_json::json!(inserted),
                    &serde_json::json!(updated),
                    &serde_json::json!(unchanged),
                    &serde_json::json!(0)
                ],
                "{backend:?} {snapshot}: {out}"
            );
            revisions += updated;
            held.extend(file);
        }
        // The revisions really happened (the test would prove nothing otherwise).
        assert!(
            revisions > 100 && held.len() > 800,
            "{revisions} {}",
            held.len()
        );
        let total_cases: u64 = held
            .values()
            .map(|(c, _)| c.parse::<u64>().expect("int"))
            .sum();
        assert_eq!(
            query_text(&data, "select count(*), sum(cases) from covid_us").await,
            [[Some(held.len().to_string()), Some(total_cases.to_string())]],
            "{backend:?}"
        );
    }
);

per_backend!(
    /// A table exported to CSV and to JSON lines and loaded back is the same table: NULLs,
    /// quotes, commas, line breaks, spaces and non-ASCII text included (CSV cannot write an empty
    /// string apart from NULL; JSON lines can).
    export_then_load_restores_the_table, |backend: DataBackend| {
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = |name: &str| dir.path().join(name).display().to_string();
        let ddl = |table: &str| {
            format!(
                "create table {table} (id integer primary key, name varchar(100), amount decimal(12, 2), note varchar(100))"
            )
        };
        let columns = "    columns:\n      id: {type: int, not_null: true}\n      name: {type: text}\n      amount: {type: numeric}\n      note: {type: text}\n";
        let dag = format!(
            r#"id: trip
tasks:
  source:
    kind: sql
    conn: wh
    sql:
      - "{src}"
      - "{csv_copy}"
      - "{jsonl_copy}"
      - |
        insert into src (id, name, amount, note) values
          (1, 'plain', 12.50, 'n'),
          (2, 'a, b', -0.01, NULL),
          (3, 'say "hi"', NULL, ''),
          (4, 'two
        lines', 1000000.00, ' padded '),
          (5, 'Zoë ✓ ünïcode', 0, 'x')
  to_csv:
    kind: export
    depends_on: [source]
    conn: wh
    table: src
    to: "{csv}"
    format: csv
  to_jsonl:
    kind: export
    depends_on: [source]
    conn: wh
    query: "select * from src order by id"
    to: "{jsonl}"
    format: jsonl
  back_csv:
    kind: load
    depends_on: [to_csv]
    source: {{file: "{csv}", format: csv}}
    target: {{conn: wh, table: copy_csv, create: never}}
{columns}  back_jsonl:
    kind: load
    depends_on: [to_jsonl]
    source: {{file: "{jsonl}", format: jsonl}}
    target: {{conn: wh, table: copy_jsonl, create: never}}
{columns}"#,
            src = ddl("src"),
            csv_copy = ddl("copy_csv"),
            jsonl_copy = ddl("copy_jsonl"),
            csv = out("backups/src.csv"),
            jsonl = out("backups/src.jsonl"),
        );
        let mut engine = engine_with(&data, &meta, &[("trip.yaml", &dag)]).await;
        let run = engine.trigger("trip", serde_json::json!({})).await;
        let done = engine.drive(&run.run_id).await;
        let tis = engine.tasks(&run.run_id).await;
        assert_eq!(
            done.state,
            RunState::Success,
            "{backend:?}: {:?}",
            tis.iter()
                .map(|t| (&t.task_id, &t.error))
                .collect::<Vec<_>>()
        );
        let exported = tis.iter().find(|t| t.task_id == "to_csv").expect("task");
        assert_eq!(
            exported.outputs.as_ref().map(|o| o["rows"].clone()),
            Some(serde_json::json!(5))
        );
        assert!(
            !std::path::Path::new(&out("backups/.src.csv.partial")).exists(),
            "a partial file was left"
        );
        let original =
            query_text(&data, "select id, name, amount, note from src order by id").await;
        assert_eq!(
            query_text(
                &data,
                "select id, name, amount, note from copy_jsonl order by id"
            )
            .await,
            original,
            "{backend:?}: JSON lines round trip"
        );
        let mut expected_csv = original.clone();
        expected_csv[2][3] = None; // '' reads back as NULL from CSV
        assert_eq!(
            query_text(
                &data,
                "select id, name, amount, note from copy_csv order by id"
            )
            .await,
            expected_csv,
            "{backend:?}: CSV round trip"
        );
    }
);

/// A MariaDB table copied into Postgres by a load with a database source keeps its rows and
/// types; count and row-checksum reconciliation across the two servers passes, then names the
/// missing, extra and changed keys after the target is tampered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_mariadb_to_postgres_reconciles_by_count_and_checksum() {
    let meta = TestDb::sqlite().await;
    let legacy = TestDataDb::new(DataBackend::MariaDb).await;
    let warehouse = TestDataDb::new(DataBackend::Postgres).await;
    let dag = r#"id: copy
tasks:
  seed:
    kind: sql
    conn: legacy
    sql:
      - "create table staff (id integer primary key, name varchar(40), salary decimal(10, 2), hired datetime, active boolean)"
      - "insert into staff values (1, 'Ada', 1200.50, '2021-01-02 03:04:05', true), (2, 'Grace, \"Amazing\"', NULL, '2021-06-30 00:00:00', false), (3, NULL, 99.00, NULL, NULL)"
  copy:
    kind: load
    depends_on: [seed]
    source: {conn: legacy, table: staff}
    target: {conn: warehouse, table: staff_copy}
    mode: replace
  reconcile:
    kind: validate
    depends_on: [copy]
    checks:
      - compare_count:
          source: {conn: legacy, table: staff}
          target: {conn: warehouse, table: staff_copy}
      - compare_checksum:
          source: {conn: legacy, table: staff}
          target: {conn: warehouse, table: staff_copy}
          key: [id]
  tamper:
    kind: sql
    depends_on: [reconcile]
    conn: warehouse
    sql:
      - "update staff_copy set salary = 1200.51 where id = 1"
      - "delete from staff_copy where id = 2"
      - "insert into staff_copy (id, name) values (4, 'Extra')"
  recheck:
    kind: validate
    depends_on: [tamper]
    checks:
      - compare_checksum:
          source: {conn: legacy, table: staff}
          target: {conn: warehouse, table: staff_copy}
          key: [id]
"#;
    let mut wcfg = worker_config();
    wcfg.connections = [
        ("legacy".to_owned(), legacy.url.clone()),
        ("warehouse".to_owned(), warehouse.url.clone()),
    ]
    .into_iter()
    .collect();
    let mut engine = Engine::with_worker(&meta, &[("copy.yaml", dag)], wcfg).await;
    let run = engine.trigger("copy", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    for ok in ["seed", "copy", "reconcile", "tamper"] {
        assert_eq!(
            by_id(ok).state,
            TaskState::Success,
            "{ok}: {:?} {:?}",
            by_id(ok).error,
            by_id(ok).outputs
        );
    }
    // Types came across: numeric and timestamp columns in Postgres.
    assert_eq!(
        query_text(
            &warehouse,
            "select column_name, data_type from information_schema.columns where table_name = 'staff_copy' order by ordinal_position"
        )
        .await,
        [
            [Some("id".to_owned()), Some("integer".to_owned())],
            [Some("name".to_owned()), Some("text".to_owned())],
            [Some("salary".to_owned()), Some("numeric".to_owned())],
            [Some("hired".to_owned()), Some("timestamp without time zone".to_owned())],
            [Some("active".to_owned()), Some("integer".to_owned())],
        ]
    );
    let recheck = by_id("recheck");
    assert_eq!(recheck.state, TaskState::Failed);
    let out = recheck.outputs.clone().expect("outputs");
    assert_eq!(
        out["checks"][0]["observed"],
        serde_json::json!({"source_rows": 3, "target_rows": 3, "missing": 1, "extra": 1, "changed": 1}),
        "{out}"
    );
    let problems: Vec<(String, String)> = out["checks"][0]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap_or("").to_owned(),
                s["problem"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            ("2".to_owned(), "missing in target".to_owned()),
            ("4".to_owned(), "extra in target".to_owned()),
            ("1".to_owned(), "changed".to_owned()),
        ]
    );
}

/// A load whose source and target are one SQLite connection (a table copied within a file)
/// does not wait on itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_within_one_sqlite_file_does_not_deadlock() {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dag = "id: within\ntasks:\n  seed:\n    kind: sql\n    conn: wh\n    sql: [\"create table a (id integer, name text)\", \"insert into a values (1, 'x'), (2, 'y'), (3, 'z')\"]\n  copy:\n    kind: load\n    depends_on: [seed]\n    source: {conn: wh, table: a}\n    target: {conn: wh, table: b}\n    batch_size: 1\n";
    let mut engine = engine_with(&data, &meta, &[("within.yaml", dag)]).await;
    let run = engine.trigger("within", serde_json::json!({})).await;
    let done = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        engine.drive(&run.run_id),
    )
    .await
    .expect("the copy waited on itself");
    assert_eq!(done.state, RunState::Success);
    assert_eq!(
        query_text(&data, "select count(*) from b").await,
        [[Some("3".to_owned())]]
    );
}

per_backend!(
    /// An incremental load reads only rows past the cursor its earlier runs reached (kept in
    /// weir's database); forgetting the cursor reads everything again. File source on every
    /// database, and a database source.
    incremental_loads_read_only_newer_rows, |backend: DataBackend| {
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("daily.csv");
        std::fs::write(
            &csv,
            "day,cases\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n",
        )
        .expect("write");
        let dag = format!(
            r#"id: inc
tasks:
  daily:
    kind: load
    source: {{file: "{}", format: csv}}
    target: {{conn: wh, table: daily}}
    columns:
      day: {{type: date, not_null: true}}
      cases: {{type: int}}
    mode: upsert
    key: [day]
    incremental: {{cursor: day}}
  copied:
    kind: load
    depends_on: [daily]
    source: {{conn: wh, table: daily}}
    target: {{conn: wh, table: copied}}
    columns:
      day: {{type: date, not_null: true}}
      cases: {{type: int}}
    incremental: {{cursor: day}}
"#,
            csv.display()
        );
        let mut engine = engine_with(&data, &meta, &[("inc.yaml", &dag)]).await;
        let run_once = async |engine: &mut Engine| {
            engine.clock.advance(chrono::Duration::seconds(5));
            let run = engine.trigger("inc", serde_json::json!({})).await;
            engine.drive(&run.run_id).await;
            let tis = engine.tasks(&run.run_id).await;
            let out = |id: &str| {
                let ti = tis.iter().find(|t| t.task_id == id).expect("task");
                assert_eq!(
                    ti.state,
                    TaskState::Success,
                    "{backend:?} {id}: {:?}",
                    ti.error
                );
                let o = ti.outputs.clone().expect("outputs");
                (
                    o["rows_read"].clone(),
                    o["rows_skipped"].clone(),
                    o["cursor"].clone(),
                )
            };
            (out("daily"), out("copied"))
        };
        assert_eq!(
            run_once(&mut engine).await,
            (
                (
                    serde_json::json!(3),
                    serde_json::json!(0),
                    serde_json::json!("2024-01-03")
                ),
                (
                    serde_json::json!(3),
                    serde_json::json!(0),
                    serde_json::json!("2024-01-03")
                )
            ),
            "{backend:?}: first run"
        );
        std::fs::write(
            &csv,
            "day,cases\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n2024-01-04,4\n2024-01-05,5\n",
        )
        .expect("write");
        assert_eq!(
            run_once(&mut engine).await,
            (
                (
                    serde_json::json!(2),
                    serde_json::json!(3),
                    serde_json::json!("2024-01-05")
                ),
                (
                    serde_json::json!(2),
                    serde_json::json!(0),
                    serde_json::json!("2024-01-05")
                )
            ),
            "{backend:?}: second run reads only the new days"
        );
        assert_eq!(
            query_text(&data, "select count(*) from copied").await,
            [[Some("5".to_owned())]],
            "{backend:?}: the appended copy has each day once"
        );
        // Nothing new: nothing read, the cursor stays.
        assert_eq!(
            run_once(&mut engine).await,
            (
                (
                    serde_json::json!(0),
                    serde_json::json!(5),
                    serde_json::json!("2024-01-05")
                ),
                (
                    serde_json::json!(0),
                    serde_json::json!(0),
                    serde_json::json!("2024-01-05")
                )
            ),
            "{backend:?}: third run"
        );
        assert_eq!(
            engine
                .store()
                .reset_incremental("inc", Some("daily"))
                .await
                .expect("reset"),
            1
        );
        let ((read, skipped, _), _) = run_once(&mut engine).await;
        assert_eq!(
            (read, skipped),
            (serde_json::json!(5), serde_json::json!(0)),
            "{backend:?}: after the reset"
        );
    }
);

/// A sensor holds no worker slot while it waits: each check that finds nothing gives the
/// instance back (`up_for_retry` with the next check time, the try not counted); the check
/// that finds the file succeeds and the downstream task runs; a sensor past its `timeout`
/// gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_wait_without_holding_a_slot_and_give_up_after_their_timeout() {
    let meta = TestDb::sqlite().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("ready.flag");
    let dag = format!(
        "id: sensing\ntasks:\n  wait:\n    kind: wait_for\n    file: \"{}\"\n    interval: 10s\n    timeout: 1h\n  after:\n    kind: shell\n    depends_on: [wait]\n    run: echo done\n  hopeless:\n    kind: wait_for\n    file: \"{}/never-*.csv\"\n    interval: 10s\n    timeout: 25s\n",
        flag.display(),
        dir.path().display()
    );
    let mut engine = Engine::with_worker(&meta, &[("sensing.yaml", &dag)], worker_config()).await;
    let run = engine.trigger("sensing", serde_json::json!({})).await;
    for _ in 0..2 {
        assert_eq!(engine.tick().await, 2, "both sensors are checked");
        let tis = engine.tasks(&run.run_id).await;
        let wait = tis.iter().find(|t| t.task_id == "wait").expect("wait");
        assert_eq!(wait.state, TaskState::UpForRetry);
        assert_eq!(
            wait.try_number, 0,
            "a check that finds nothing is not a try"
        );
        assert!(
            wait.error
                .as_deref()
                .unwrap_or("")
                .starts_with("waiting: no file matches"),
            "{:?}",
            wait.error
        );
        // Nothing runs before the next check is due.
        assert_eq!(engine.tick().await, 0);
        engine.clock.advance(chrono::Duration::seconds(10));
    }
    std::fs::write(&flag, "").expect("flag");
    let done = engine.drive(&run.run_id).await;
    assert_eq!(
        done.state,
        RunState::Failed,
        "the hopeless sensor fails the run"
    );
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    assert_eq!(by_id("wait").state, TaskState::Success);
    assert_eq!(by_id("wait").try_number, 1);
    assert_eq!(by_id("after").state, TaskState::Success);
    let hopeless = by_id("hopeless");
    assert_eq!(hopeless.state, TaskState::Failed);
    assert!(
        hopeless
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("gave up after waiting 30s"),
        "{:?}",
        hopeless.error
    );
}

per_backend!(
    /// A row the database refuses deep in a large load (in Postgres's third `COPY`, past 60,000
    /// rows; in a 10,000-row `INSERT` batch elsewhere) is found by halving what was refused:
    /// every other row loads, and the reject keeps its line and raw text.
    a_refused_row_deep_in_a_large_load_is_rejected_alone, |backend: DataBackend| {
        refused_row_deep_in_a_large_load(backend).await;
    }
);

async fn refused_row_deep_in_a_large_load(backend: DataBackend) {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.csv");
    let rows = 70_000;
    let duplicate_at = 65_000; // 0-based data row: it repeats id 7
    let mut text = String::from("id,name\n");
    for i in 0..rows {
        let id = if i == duplicate_at { 7 } else { i };
        text.push_str(&format!("{id},\"name, {i}\"\n"));
    }
    std::fs::write(&path, &text).expect("csv");
    let dag = format!(
        r#"id: many
tasks:
  schema:
    kind: sql
    conn: wh
    sql: "create table many (id bigint primary key, name text not null)"
  load:
    kind: load
    depends_on: [schema]
    source: {{file: "{}"}}
    target: {{conn: wh, table: many, create: never}}
    columns:
      id: {{type: bigint, not_null: true}}
      name: {{type: text, not_null: true}}
    rejects: {{on_error: reject}}
"#,
        path.display()
    );
    let mut engine = engine_with(&data, &meta, &[("many.yaml", &dag)]).await;
    let run = engine.trigger("many", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let load = tis.iter().find(|t| t.task_id == "load").expect("load");
    assert_eq!(run.state, RunState::Success, "{:?}", load.error);
    let out = load.outputs.clone().expect("outputs");
    assert_eq!(
        (
            &out["rows_read"],
            &out["rows_loaded"],
            &out["rows_rejected"]
        ),
        (
            &serde_json::json!(rows),
            &serde_json::json!(rows - 1),
            &serde_json::json!(1)
        ),
        "{out}"
    );
    assert_eq!(
        query_text(&data, "select count(*), count(distinct id) from many").await,
        [[Some((rows - 1).to_string()), Some((rows - 1).to_string())]]
    );
    let rejects = query_text(&data, "select line_number, raw_row from many__rejects").await;
    assert_eq!(
        rejects,
        [[
            // The header is line 1.
            Some((duplicate_at + 2).to_string()),
            Some(format!("7,\"name, {duplicate_at}\""))
        ]]
    );
}

/// Loads and `sql` steps writing one SQLite file at the same time wait for each other: a
/// transaction that read before another wrote used to fail at once ("database is locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_loads_into_one_sqlite_file_wait_for_each_other() {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Two runs of one DAG at once (a scheduled and a manual one, say), each upserting the same
    // tables in parallel and copying them within the file: every transaction meets others'.
    let mut tasks = String::new();
    let names = ["a", "b", "c", "d"];
    for n in names {
        let path = dir.path().join(format!("{n}.csv"));
        let rows: String = (0..3000).map(|i| format!("{i},{n}{i}\n")).collect();
        std::fs::write(&path, format!("id,v\n{rows}")).expect("csv");
        tasks.push_str(&format!(
            "  load_{n}:\n    kind: load\n    source: {{file: \"{}\"}}\n    target: {{conn: wh, table: {n}}}\n    columns:\n      id: {{type: int}}\n      v: {{type: text}}\n    mode: upsert\n    key: [id]\n    batch_size: 100\n    rejects: {{on_error: reject}}\n  copy_{n}:\n    kind: load\n    depends_on: [load_{n}]\n    source: {{conn: wh, table: {n}}}\n    target: {{conn: wh, table: {n}_copy}}\n    mode: replace\n    batch_size: 100\n",
            path.display()
        ));
    }
    let dag = format!("id: parallel\nmax_active_tasks: 16\ntasks:\n{tasks}");
    let mut engine = engine_with(&data, &meta, &[("parallel.yaml", &dag)]).await;
    for round in 0..3 {
        let first = engine.trigger("parallel", serde_json::json!({})).await;
        engine.clock.advance(chrono::Duration::seconds(1));
        let second = engine.trigger("parallel", serde_json::json!({})).await;
        engine.clock.advance(chrono::Duration::seconds(1));
        for run in [&first, &second] {
            let run = engine.drive(&run.run_id).await;
            let retried: Vec<(String, Option<String>)> = engine
                .tasks(&run.run_id)
                .await
                .into_iter()
                .filter(|t| t.state != TaskState::Success || t.try_number != 1)
                .map(|t| (t.task_id, t.error))
                .collect();
            assert_eq!(run.state, RunState::Success, "round {round}: {retried:?}");
            assert!(
                retried.is_empty(),
                "round {round}: tries retried: {retried:?}"
            );
        }
    }
    for n in names {
        assert_eq!(
            query_text(&data, &format!("select count(*) from {n}")).await,
            [[Some("3000".to_owned())]],
            "{n}"
        );
    }
}

const INJECT_SQL_DAG: &str = r#"id: inject_sql
params:
  evil: x
  evil_line: x
  items: []
  n: 0
  table: x
  out: x
tasks:
  setup:
    kind: sql
    conn: wh
    sql:
      - create table canary (id integer)
      - create table seen (src varchar(20), v varchar(500))
  produce:
    kind: shell
    depends_on: [setup]
    run: |
      printf 'value=%s\n' "{{ params.evil_line }}" >> "$WEIR_OUTPUT"
  consume:
    kind: sql
    conn: wh
    depends_on: [produce]
    sql:
      - "insert into seen (src, v) values ('quoted', '{{ params.evil }}')"
      - "insert into seen (src, v) values ('bare', {{ params.evil }})"
      - "insert into seen (src, v) values ('output', '{{ tasks.produce.outputs.value }}')"
      - "-- {{ params.evil }}\ninsert into seen (src, v) values ('commented', 'ok')"
  each:
    kind: sql
    conn: wh
    depends_on: [setup]
    foreach: "{{ params.items | tojson }}"
    sql: "insert into seen (src, v) values ('item', {{ item }})"
  count:
    kind: sql
    conn: wh
    depends_on: [consume, each]
    fetch: first_row
    sql: "select count(*) as rows_seen, {{ params.n }} + 1 as n_plus from {{ params.table | ident }}"
  check:
    kind: validate
    conn: wh
    depends_on: [consume, each]
    checks:
      - sql: {query: "select v from seen where src = 'bare' and v <> {{ params.evil }}"}
  dump:
    kind: export
    conn: wh
    depends_on: [consume, each]
    query: "select src from seen where v = {{ params.evil }} order by src"
    to: "{{ params.out }}"
    format: csv
"#;

per_backend!(
    /// A param, an upstream output and `foreach` items carrying SQL injections (quotes, a
    /// backslash before a quote, `;`, `--`, `#`, `/*`, `$$`, backticks, a newline, `{{ }}`) reach
    /// `sql`, `validate` and `export` statements as data on every database, inside quotes, bare
    /// and in a comment: no injected statement runs and each value lands exactly (issue #14).
    values_in_sql_text_are_data_never_code, |backend: DataBackend| {
        let evil = "a'); drop table canary; -- \\'); drop table canary; # \" ` $$ */ /* $(id) && ; {{ 7*7 }}\nb'";
        let one_line = evil.replace('\n', " ");
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let mut engine = engine_with(&data, &meta, &[("inject.yaml", INJECT_SQL_DAG)]).await;
        let out = engine.path("dump.csv");
        let run = engine
            .trigger(
                "inject_sql",
                serde_json::json!({
                    "evil": evil,
                    "evil_line": one_line,
                    "items": [evil, "plain"],
                    "n": 7,
                    "table": "seen",
                    "out": out.display().to_string(),
                }),
            )
            .await;
        let done = engine.drive(&run.run_id).await;
        let tis = engine.tasks(&run.run_id).await;
        let failures: Vec<_> = tis
            .iter()
            .filter(|t| t.state != TaskState::Success)
            .map(|t| (&t.task_id, &t.error))
            .collect();
        assert_eq!(done.state, RunState::Success, "{backend:?}: {failures:?}");
        assert_eq!(
            query_text(&data, "select count(*) from canary").await,
            [[Some("0".to_owned())]],
            "{backend:?}"
        );
        let seen = query_text(&data, "select src, v from seen order by src, v").await;
        let row = |src: &str, v: &str| vec![Some(src.to_owned()), Some(v.to_owned())];
        assert_eq!(
            seen,
            [
                row("bare", evil),
                row("commented", "ok"),
                row("item", evil),
                row("item", "plain"),
                row("output", &one_line),
                row("quoted", evil),
            ],
            "{backend:?}"
        );
        let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
        assert_eq!(
            by_id("count").outputs,
            Some(serde_json::json!({"rows_seen": "6", "n_plus": "8"})),
            "{backend:?}"
        );
        let dumped = std::fs::read_to_string(&out).expect("export");
        assert_eq!(dumped, "src\nbare\nitem\nquoted\n", "{backend:?}");
    }
);
