//! SQLite: the pages' reads of history run on read-only connections of their own, so a page
//! is answered while the one connection that writes waits (here on another process's write
//! lock, as when the CLI writes next to `weir standalone`), and sees every commit after it.

use std::time::Duration as StdDuration;

use chrono::Duration;
use sqlx::Connection;
use weir_store::RunFilter;
use weir_testkit::TestDb;

use super::{line, new_run, t, version};

#[tokio::test]
async fn sqlite_pages_read_while_the_writer_waits_for_the_lock() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let v = version(store).await;
    let now = t("2024-01-02T00:00:00Z");
    let run = store
        .create_run(&new_run(v, "2024-01-01T00:00:00Z", 3), now)
        .await
        .expect("create")
        .expect("new");
    let ti = store
        .task_instances(&run.run_id)
        .await
        .expect("tis")
        .remove(0);
    store
        .append_logs(ti.id, 1, &[line("stdout", "before", now)])
        .await
        .expect("append");

    // Another connection takes the write lock and keeps it.
    let mut other = sqlx::SqliteConnection::connect(&db.url)
        .await
        .expect("connect");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("write lock");
    // The store's writer waits for it (SQLite's busy timeout), holding its connection.
    let writer = {
        let store = store.clone();
        let at = now + Duration::seconds(1);
        tokio::spawn(async move {
            store
                .append_logs(ti.id, 1, &[line("stdout", "after", at)])
                .await
        })
    };
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "the write did not wait for the other connection's lock"
    );

    let pages = async {
        let cells = store.grid_cells("d", 25).await.expect("grid");
        let runs = store.recent_runs("d", 0, 25).await.expect("recent runs");
        let listed = store
            .list_runs(&RunFilter {
                dag_id: Some("d".into()),
                ..RunFilter::default()
            })
            .await
            .expect("runs");
        let log = store.logs(ti.id, 1, 0, 100).await.expect("log");
        let tail = store.log_tail(ti.id, 1, 100).await.expect("tail");
        (cells, runs, listed, log, tail)
    };
    let (cells, runs, listed, log, tail) = tokio::time::timeout(StdDuration::from_secs(5), pages)
        .await
        .expect("a page's reads waited for the connection of a write that waits for a lock");
    assert_eq!(cells.len(), 3);
    assert!(cells.iter().all(|c| c.run_id == run.run_id));
    assert_eq!(runs.len(), 1);
    assert_eq!(listed.len(), 1);
    let texts =
        |lines: &[weir_store::LogLine]| lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&log), ["before"]);
    assert_eq!(texts(&tail), ["before"]);

    // The lock goes; the write lands, and the next read sees it.
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release");
    writer.await.expect("join").expect("the waiting write");
    let log = store.logs(ti.id, 1, 0, 100).await.expect("log");
    assert_eq!(texts(&log), ["before", "after"]);
}
