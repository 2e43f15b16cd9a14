//! Migrations over a database that holds history: SQLite's rebuild of `weir_runs` (0012,
//! which widens the run types) keeps every run, instance and log line, and the foreign keys.

use weir_store::Store;

#[tokio::test]
async fn rebuilding_the_runs_table_keeps_history_and_foreign_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&pool)
        .await
        .expect("fk");
    // The schema as it was before assets.
    sqlx::migrate!("../migrations/sqlite")
        .run_to(11, &pool)
        .await
        .expect("migrations to 0011");
    for sql in [
        "INSERT INTO weir_dag_versions (id, dag_id, hash, spec, created_at) VALUES (1, 'd', 'h', '{}', '2024-01-01T00:00:00Z')",
        "INSERT INTO weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start, data_interval_end, params, created_at, timezone)
         VALUES ('d__1', 'd', 1, 'manual', 'success', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', '2024-01-02T00:00:00Z', '{}', '2024-01-01T00:00:00Z', 'Europe/Paris')",
        "INSERT INTO weir_task_instances (id, run_id, dag_id, task_id, state, max_tries, queue) VALUES (7, 'd__1', 'd', 't', 'success', 1, 'default')",
        "INSERT INTO weir_task_logs (ti_id, try_number, stream, line, at) VALUES (7, 1, 'stdout', 'hello', '2024-01-01T00:00:00Z')",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    pool.close().await;

    let store = Store::connect(&url).await.expect("migrate to the latest");
    let run = store.run("d__1").await.expect("the run survives");
    assert_eq!(run.timezone, "Europe/Paris");
    assert_eq!(run.triggered_by, None);
    let tis = store.task_instances("d__1").await.expect("instances");
    assert_eq!(tis.len(), 1);
    let logs = store.logs(7, 1, 0, 10).await.expect("logs");
    assert_eq!(
        logs.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["hello"]
    );

    // The new run types are allowed, other values still refused, and deleting a run still
    // cascades to its instances and logs.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&pool)
        .await
        .expect("fk");
    sqlx::query("UPDATE weir_runs SET run_type = 'assets' WHERE run_id = 'd__1'")
        .execute(&pool)
        .await
        .expect("assets is a run type");
    assert!(
        sqlx::query("UPDATE weir_runs SET run_type = 'nonsense' WHERE run_id = 'd__1'")
            .execute(&pool)
            .await
            .is_err()
    );
    sqlx::query("DELETE FROM weir_runs WHERE run_id = 'd__1'")
        .execute(&pool)
        .await
        .expect("delete");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM weir_task_logs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "the cascade from runs to instances to logs holds");
    let fk: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await
        .expect("check");
    assert!(fk.is_empty(), "{fk:?}");
}
