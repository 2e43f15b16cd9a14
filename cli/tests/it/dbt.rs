//! `kind: dbt` against the real local Postgres and MariaDB: dbt-core and the adapter installed
//! by weir from PyPI (the tests' shared cache; on MariaDB dbt-mysql's dbt 1.7), the profile
//! written from the connection, `vars` carrying the run's date, and the artifacts read back:
//! each model's and test's result in the outputs, failing tests as checks with their severity,
//! a failing model named with its compiled SQL, the models written recorded as assets with their
//! upstream sources.

use weir_model::{RunState, TaskState};
use weir_testkit::engine::Engine;
use weir_testkit::{DataBackend, TestDataDb, TestDb, per_backend};

use crate::data::engine_with;

/// The project's files (`cli/tests/data/dbt/shop`), as the dags folder holds them, its raw
/// schema renamed to `raw`; for MariaDB, written for dbt 1.7 (a generic test's arguments
/// beside its name rather than under `arguments:`, which dbt 1.10 introduced).
fn project(raw: &str, backend: DataBackend) -> Vec<(String, String)> {
    let root = crate::repo().join("cli/tests/data/dbt");
    let mut out = Vec::new();
    let mut pending = vec![root.join("shop")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("project")
            .map(Result::unwrap)
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .expect("inside")
                .display()
                .to_string();
            let mut text = std::fs::read_to_string(&path)
                .expect("read")
                .replace("schema: raw_shop", &format!("schema: {raw}"));
            if backend == DataBackend::MariaDb {
                text = text.replace(
                    "              arguments:\n                values:",
                    "              values:",
                );
            }
            out.push((relative, text));
        }
    }
    out
}

/// The raw table the project's source reads, in schema (MariaDB: database) `raw`.
async fn raw_orders(data: &TestDataDb, raw: &str) {
    let sql = format!(
        "CREATE SCHEMA {raw};
         CREATE TABLE {raw}.orders (id int, status varchar(20), amount numeric(10, 2));
         INSERT INTO {raw}.orders VALUES (1, 'paid', 10), (2, 'shipped', 5), (3, 'lost', 1);"
    );
    run_sql(data, &sql).await;
}

async fn run_sql(data: &TestDataDb, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match data.backend {
        DataBackend::MariaDb => {
            let pool = sqlx::MySqlPool::connect(&data.url.replace("mariadb://", "mysql://"))
                .await
                .expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.expect("sql");
        }
        _ => {
            let pool = sqlx::PgPool::connect(&data.url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.expect("sql");
        }
    }
}

async fn only_task(engine: &Engine, run_id: &str) -> weir_store::TaskInstanceRow {
    engine.tasks(run_id).await.remove(0)
}

per_backend!(
    a_dbt_build_reports_its_models_tests_and_assets_and_names_what_failed,
    [postgres: Postgres, mariadb: MariaDb],
    |backend: DataBackend| {
        dbt_build(backend).await;
    }
);

async fn dbt_build(backend: DataBackend) {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(backend).await;
    // Postgres: the test's own database holds both schemas. MariaDB: a schema is a database,
    // so the raw one is named after the test's (and dropped at the end); models go to the
    // connection's database.
    let (raw, schema) = match backend {
        DataBackend::MariaDb => {
            let db = data.url.rsplit('/').next().expect("database").to_owned();
            (format!("{db}_raw"), db)
        }
        _ => ("raw_shop".to_owned(), "analytics".to_owned()),
    };
    raw_orders(&data, &raw).await;
    let target = if backend == DataBackend::MariaDb {
        String::new()
    } else {
        format!("    schema: {schema}\n")
    };
    let all = format!(
        "id: shop_all\ntasks:\n  build:\n    kind: dbt\n    project: shop\n    conn: wh\n{target}    vars: {{ds: \"{{{{ ds }}}}\"}}\n"
    );
    let good = format!(
        "id: shop_good\ntasks:\n  build:\n    kind: dbt\n    project: shop\n    conn: wh\n{target}    select: [stg_orders, orders_by_status]\n    exclude: \"test_name:accepted_values\"\n    vars: {{ds: \"{{{{ ds }}}}\"}}\n"
    );
    let files = project(&raw, backend);
    let mut dags: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    dags.push(("shop_all.yaml", &all));
    dags.push(("shop_good.yaml", &good));
    let mut engine = engine_with(&data, &meta, &dags).await;

    let run = engine.trigger("shop_all", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Failed);
    let ti = only_task(&engine, &run.run_id).await;
    assert_eq!(ti.state, TaskState::Failed);
    let error = ti.error.clone().unwrap_or_default();
    assert!(
        error.contains("model `broken` failed: Database Error in model broken"),
        "{error}\n{}",
        engine.log_of(&ti, ti.try_number).await.join("\n")
    );
    assert!(error.contains("no_such_column"), "{error}");
    let compiled = error
        .split("(compiled SQL: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no compiled SQL path in: {error}"));
    let sql = std::fs::read_to_string(compiled).expect("the compiled SQL is kept");
    assert!(sql.contains("no_such_column"), "{sql}");
    assert!(
        error.contains(
            "test `accepted_values_stg_orders_status__paid__shipped` failed: Got 1 result"
        ),
        "{error}"
    );
    assert!(
        !error.contains("accepted_values_stg_orders_id"),
        "a warning fails nothing: {error}"
    );

    let out = ti.outputs.clone().expect("outputs of a failed build");
    let status = |node: &str| {
        out["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["node"] == node)
            .map(|r| r["status"].clone())
            .unwrap_or_else(|| panic!("no result for {node}: {out:#}"))
    };
    assert_eq!(status("stg_orders"), "success");
    assert_eq!(status("broken"), "error");
    assert_eq!(status("orders_by_status"), "skipped");
    let checks = out["checks"].as_array().expect("checks");
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"].as_str().is_some_and(|n| n.starts_with(name)))
            .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
    };
    assert_eq!(check("not_null_stg_orders_id")["passed"], true);
    assert_eq!(check("accepted_values_stg_orders_status")["passed"], false);
    assert_eq!(
        check("accepted_values_stg_orders_status")["severity"],
        "error"
    );
    assert_eq!(check("accepted_values_stg_orders_id")["passed"], false);
    assert_eq!(check("accepted_values_stg_orders_id")["severity"], "warn");
    assert_eq!(out["checks_passed"], 1);
    assert_eq!(out["checks_failed"], 2);

    // `vars` carried the run's date into the model.
    let loaded = crate::data::query_text(
        &data,
        &format!("SELECT DISTINCT loaded_for FROM {schema}.stg_orders"),
    )
    .await;
    assert_eq!(loaded, [[Some("2024-03-01".to_owned())]]);

    // What it built is an asset, with where it came from; its source was read.
    let events = engine
        .store
        .run_asset_events(&run.run_id)
        .await
        .expect("events");
    let written = events
        .iter()
        .find(|e| e.asset_key == format!("wh.{schema}.stg_orders") && e.access == "write")
        .unwrap_or_else(|| panic!("stg_orders not recorded: {events:#?}"));
    let details: serde_json::Value =
        serde_json::from_str(written.details.as_deref().unwrap_or("{}")).expect("details");
    assert_eq!(
        details["upstream"],
        serde_json::json!([format!("{raw}.orders")])
    );
    assert!(
        events
            .iter()
            .any(|e| e.asset_key == format!("wh.{raw}.orders") && e.access == "read")
    );
    assert!(
        !events.iter().any(|e| e.asset_key.ends_with(".broken")),
        "a model that failed wrote nothing"
    );

    // Selected and excluded: the two models and the passing test build.
    let run = engine.trigger("shop_good", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    let ti = only_task(&engine, &run.run_id).await;
    assert_eq!(run.state, RunState::Success, "{:?}", ti.error);
    let out = ti.outputs.expect("outputs");
    assert_eq!(out["built"], 2);
    assert_eq!(out["errors"], 0);
    assert_eq!(out["checks_passed"], 1);
    let by_status = crate::data::query_text(
        &data,
        &format!("SELECT status, orders FROM {schema}.orders_by_status ORDER BY status"),
    )
    .await;
    assert_eq!(by_status.len(), 3);
    let events = engine
        .store
        .run_asset_events(&run.run_id)
        .await
        .expect("events");
    let table = events
        .iter()
        .find(|e| e.asset_key == format!("wh.{schema}.orders_by_status") && e.access == "write")
        .unwrap_or_else(|| panic!("orders_by_status not recorded: {events:#?}"));
    assert_eq!(table.rows_written, Some(3));
    if backend == DataBackend::MariaDb {
        run_sql(&data, &format!("DROP DATABASE {raw}")).await;
    }
}
