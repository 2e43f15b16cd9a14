//! SQLite: the pages' reads of history run on read-only connections of their own, so a page
//! is answered while the one connection that writes waits (here on another process's write
//! lock, as when the CLI writes next to `weir standalone`), and sees every commit after it.

use std::time::Duration as StdDuration;

use chrono::Duration;
use sqlx::Connection;
use weir_store::RunFilter;
use weir_testkit::{TestDb, per_backend};

use super::{execute_raw, line, new_run, queue_all, succeeded, t, version};

per_backend!(
    the_grid_reads_every_instance_of_the_newest_runs_as_stored,
    |db: TestDb| {
        let store = &db.store;
        let v = version(store).await;
        let now = t("2024-01-03T00:00:00Z");
        let mut runs = Vec::new();
        for (logical, tasks) in [("2024-01-01T00:00:00Z", 2), ("2024-01-02T00:00:00Z", 3)] {
            let run = store
                .create_run(&new_run(v, logical, tasks), now)
                .await
                .expect("create")
                .expect("new");
            runs.push(run.run_id);
        }
        // One instance of the newer run tried and ended, at times with fractions of a second.
        queue_all(store, &runs[1], now).await;
        let started = t("2024-01-03T01:02:03.456789Z");
        let ended = t("2024-01-03T01:02:05.5Z");
        let claimed = store
            .claim_tasks(
                "w1",
                &["default".to_owned()],
                1,
                started,
                ended + Duration::hours(1),
            )
            .await
            .expect("claim")
            .remove(0);
        store
            .complete_task(&succeeded(claimed.id, "w1"), ended)
            .await
            .expect("complete");

        let mut newest = store.grid_cells("d", 1).await.expect("grid");
        newest.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let seen: Vec<_> = newest
            .iter()
            .map(|c| {
                (
                    c.run_id.as_str(),
                    c.task_id.as_str(),
                    c.map_index,
                    c.state.as_str(),
                    c.try_number,
                )
            })
            .collect();
        let ran = newest
            .iter()
            .position(|c| c.state == "success")
            .expect("the tried instance");
        let mut expected = vec![
            (runs[1].as_str(), "t00", -1, "queued", 0),
            (runs[1].as_str(), "t01", -1, "queued", 0),
            (runs[1].as_str(), "t02", -1, "queued", 0),
        ];
        expected[ran].3 = "success";
        expected[ran].4 = 1;
        assert_eq!(seen, expected);
        assert_eq!(
            (newest[ran].started_at, newest[ran].ended_at),
            (Some(started), Some(ended))
        );
        assert!(
            newest
                .iter()
                .enumerate()
                .all(|(i, c)| i == ran || (c.started_at, c.ended_at) == (None, None))
        );

        let all = store.grid_cells("d", 25).await.expect("grid");
        assert_eq!(all.len(), 5);
        assert_eq!(all.iter().filter(|c| c.run_id == runs[0]).count(), 2);
    }
);

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

/// SQLite is built without its memory statistics (`.cargo/config.toml`): with them, every
/// allocation and free of every connection takes one process-wide mutex, and the read
/// connections above queued on it behind each other and behind the threads freeing their rows.
#[tokio::test]
async fn sqlite_allocations_take_no_process_wide_lock() {
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .expect("connect");
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(&mut conn)
        .await
        .expect("compile options");
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "SQLite was built with its memory statistics on (LIBSQLITE3_FLAGS not applied?): {options:?}"
    );
}

/// A time SQLite holds that is not RFC 3339 (written by hand, or by another tool) makes the
/// grid's read fail naming the run and the value, not a page of wrong durations.
#[tokio::test]
async fn a_grid_time_that_is_not_rfc_3339_is_named_with_its_run() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let v = version(store).await;
    let run = store
        .create_run(
            &new_run(v, "2024-01-01T00:00:00Z", 1),
            t("2024-01-02T00:00:00Z"),
        )
        .await
        .expect("create")
        .expect("new");
    execute_raw(
        &db,
        "UPDATE weir_task_instances SET started_at = 'yesterday noon'",
        None,
    )
    .await;
    let error = store
        .grid_cells("d", 25)
        .await
        .expect_err("not a time")
        .to_string();
    assert!(
        error.contains(&run.run_id) && error.contains("yesterday noon"),
        "{error}"
    );
}
