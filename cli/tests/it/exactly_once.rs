//! Exactly-once writes under a real crash: a `weir worker` process is killed (SIGKILL) after
//! its step committed in the target and before weir's database recorded the try. The retry, on
//! another worker process, must find the commit in the target's ledger and record it instead of
//! writing again.
//!
//! The window is held open without any hook in weir: the test locks the task instance's row in
//! weir's Postgres database while the step runs, so the worker's recording waits; it watches the
//! target from its own connection until the rows are committed, kills the worker, ends the
//! worker's waiting statements on the server (a dead client's statement would otherwise still
//! run), and lets go.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_model::TaskState;
use weir_testkit::{DataBackend, TestDataDb, TestDb, per_backend};

use crate::data::query_text;

struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Starts `weir ARGS` in `dir`, its log going to `dir/NAME.log` so a failure can show it.
fn weir(dir: &Path, args: &[&str], name: &str) -> std::process::Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start weir")
}

/// The last lines of each process's log in `dir`, for a failure's message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {}\n", path.display()));
        for line in &lines[lines.len().saturating_sub(40)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a statement on the target (creating a SQLite file).
async fn create_table(data: &TestDataDb, sql: &str) {
    use std::str::FromStr as _;
    if data.backend == DataBackend::Sqlite {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&data.url)
            .expect("url")
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("sqlite");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .expect("create");
        pool.close().await;
    } else {
        query_text(data, sql).await;
    }
}

/// Kills the worker between the target's commit and the recording of `task`, then lets a
/// second worker retry it. Returns the instance as finally recorded.
async fn crash_after_commit(
    meta: &TestDb,
    data: &TestDataDb,
    dag: &str,
    task: &str,
    committed: &str,
) -> weir_store::TaskInstanceRow {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/once.yaml"), dag).expect("dag");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!(
            "database_url = \"{}\"\ndags_folder = \"dags\"\n[scheduler]\nheartbeat_timeout = \"3s\"\n[connections.wh]\nurl = \"{}\"\n",
            meta.url, data.url
        ),
    )
    .expect("config");
    let mut procs = Processes(vec![weir(dir.path(), &["scheduler"], "scheduler")]);
    wait_until("the DAG is synced", || async {
        meta.store.dag("once").await.is_ok()
    })
    .await;
    let victim = weir(dir.path(), &["worker"], "worker-1");
    let victim_pid = victim.id();
    procs.0.push(victim);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["trigger", "once"])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("trigger");
    assert!(status.success());
    let pg = sqlx::PgPool::connect(&meta.url).await.expect("meta");
    let run_id: String = sqlx::query_scalar("select run_id from weir_runs where dag_id = 'once'")
        .fetch_one(&pg)
        .await
        .expect("run");
    let deadline = Instant::now() + Duration::from_secs(90);
    let ti_id = loop {
        let row: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "select id, state, error from weir_task_instances where run_id = $1 and task_id = $2",
        )
        .bind(&run_id)
        .bind(task)
        .fetch_optional(&pg)
        .await
        .expect("ti");
        match &row {
            Some((id, state, _)) if state == "running" => break *id,
            Some((_, state, error)) if state != "scheduled" && state != "queued" => panic!(
                "the try ended ({state}: {error:?}) before the test saw it run\n{}",
                logs(dir.path())
            ),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the task never ran: {row:?}\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Hold the instance's row: the worker's recording of the try waits behind it.
    let mut lock = pg.begin().await.expect("begin");
    let state: String =
        sqlx::query_scalar("select state from weir_task_instances where id = $1 for no key update")
            .bind(ti_id)
            .fetch_one(&mut *lock)
            .await
            .expect("lock");
    assert_eq!(state, "running", "the try ended before it could be held");
    assert_eq!(
        query_text(data, committed).await,
        [[Some("0".to_owned())]],
        "the step committed before the test could hold its recording; make it slower"
    );
    wait_until("the target commits", || async {
        query_text(data, committed).await != [[Some("0".to_owned())]]
    })
    .await;
    // The step committed; its outcome is not recorded. The worker dies now.
    let victim = procs
        .0
        .iter_mut()
        .find(|p| p.id() == victim_pid)
        .expect("the victim");
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reap");
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity where starts_with(application_name, $1)",
    )
    // Each pool's sessions are `weir[PID] SUFFIX`.
    .bind(format!("weir[{victim_pid}] "))
    .execute(&mut *lock)
    .await
    .expect("end the dead worker's statements");
    lock.rollback().await.expect("let go");
    procs.0.push(weir(dir.path(), &["worker"], "worker-2"));
    wait_until("the run finishes", || async {
        let state: String = sqlx::query_scalar("select state from weir_runs where run_id = $1")
            .bind(&run_id)
            .fetch_one(&pg)
            .await
            .expect("run");
        state != "running" && state != "queued"
    })
    .await;
    pg.close().await;
    meta.store.task_instance(ti_id).await.expect("ti")
}

per_backend!(
    /// A load killed after its commit is not loaded again, on every target database.
    a_load_whose_worker_died_after_the_commit_is_not_loaded_twice, |backend: DataBackend| {
        let rows = 150_000_u64;
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("rows.csv");
        let mut text = String::from("id,name\n");
        for i in 0..rows {
        text.push_str(&format!("{i},name {i}\n"));
        }
        std::fs::write(&csv, text).expect("csv");
        let meta = TestDb::postgres().await;
        let data = TestDataDb::new(backend).await;
        create_table(&data, "create table landed (id bigint, name varchar(40))").await;
        let dag = format!(
            "id: once\ntasks:\n  load:\n    kind: load\n    source: {{file: \"{}\"}}\n    target: {{conn: wh, table: landed}}\n    columns:\n      id: {{type: bigint}}\n      name: {{type: text}}\n    retries: 2\n    retry_delay: 1s\n",
            csv.display()
        );
        let ti =
            crash_after_commit(&meta, &data, &dag, "load", "select count(*) from landed").await;
        assert_eq!(ti.state, TaskState::Success, "{backend:?}: {:?}", ti.error);
        assert_eq!(ti.try_number, 2, "{backend:?}: the retry recorded it");
        assert_eq!(
            ti.outputs.as_ref().and_then(|o| o["rows_loaded"].as_u64()),
            Some(rows),
            "{backend:?}: the committed try's outputs"
        );
        assert_eq!(
            query_text(&data, "select count(*), count(distinct id) from landed").await,
            [[Some(rows.to_string()), Some(rows.to_string())]],
            "{backend:?}: each row once"
        );
    }
);

per_backend!(
    /// A `sql` step that declares itself non-idempotent is not run again after a commit whose
    /// outcome was lost.
    a_non_idempotent_sql_step_whose_worker_died_after_the_commit_is_not_run_twice, [postgres: Postgres, mariadb: MariaDb], |backend: DataBackend| {
        let meta = TestDb::postgres().await;
        let data = TestDataDb::new(backend).await;
        let sleep = match backend {
            DataBackend::MariaDb => "select sleep(2)",
            _ => "select pg_sleep(2)",
        };
        let dag = format!(
            "id: once\ntasks:\n  append:\n    kind: sql\n    conn: wh\n    idempotent: false\n    sql:\n      - \"{sleep}\"\n      - \"insert into ledger_rows (n) values (1), (2), (3)\"\n    retries: 2\n    retry_delay: 1s\n"
        );
        create_table(&data, "create table ledger_rows (n integer)").await;
        let ti = crash_after_commit(
            &meta,
            &data,
            &dag,
            "append",
            "select count(*) from ledger_rows",
        )
        .await;
        assert_eq!(ti.state, TaskState::Success, "{backend:?}: {:?}", ti.error);
        assert_eq!(ti.try_number, 2, "{backend:?}");
        assert_eq!(
            query_text(&data, "select count(*) from ledger_rows").await,
            [[Some("3".to_owned())]],
            "{backend:?}: the rows once"
        );
    }
);
