//! Loads and exports against real object stores and an SFTP server (moto, Azurite,
//! gcp-storage-emulator, sshd: weir_testkit::stores), with the real scheduler and worker and a
//! real Postgres: globs, gzip and zstd, rejects that keep their original bytes, atomic exports,
//! and credentials that never reach a log or an error.

use weir_model::TaskState;
use weir_storage::{Compression, Location, Stores};
use weir_testkit::engine::{Engine, worker_config};
use weir_testkit::stores::{StoreKind, TestStore};
use weir_testkit::{DataBackend, TestDataDb, TestDb};

use crate::data::query_text;

/// An engine whose worker has the data database as `wh` and the store as `lake`.
pub(crate) async fn engine_on(
    store: &TestStore,
    data: &TestDataDb,
    meta: &TestDb,
    files: &[(&str, &str)],
) -> Engine {
    let mut wcfg = worker_config();
    wcfg.connections = [("wh".to_owned(), data.url.clone())].into_iter().collect();
    wcfg.stores = vec![store.conn("lake")];
    Engine::with_worker(meta, files, wcfg).await
}

pub(crate) fn stores(store: &TestStore) -> Stores {
    Stores::new(vec![store.conn("lake")])
}

pub(crate) fn loc(text: &str) -> Location {
    Location::parse(text).expect("location")
}

/// Writes `bytes` at `at`, compressed as its name says.
pub(crate) async fn put(stores: &Stores, at: &str, text: &[u8]) {
    let (compression, _) = Compression::of_name(at);
    let mut e = compression.encoder().expect("encoder");
    std::io::Write::write_all(&mut e, text).expect("encode");
    let mut bytes = e.take();
    bytes.extend(e.finish().expect("finish"));
    let mut w = stores.create(&loc(at)).await.expect("create");
    w.write(bytes).await.expect("write");
    w.commit().await.expect("commit");
}

/// The bytes at `at`, decompressed as its name says.
pub(crate) async fn get(stores: &Stores, at: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut r = stores.open(&loc(at)).await.expect("open");
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).await.expect("read");
    weir_storage::decode_all(Compression::of_name(at).0, &bytes).expect("decode")
}

const HIRES_1: &str =
    "id,name,hired_on\n1,Ada,2024-01-02\nx2,Bad id,2024-01-03\n3,Grace,2024-01-04\n";
const HIRES_2: &str = "id,name,hired_on\n4,Edsger,2024-02-01\n1,Ada again,2024-02-02\n5,\"Hopper, Grace\",2024-02-03\n";

/// Files of every format and compression load from the store: a glob over gzip and zstd CSV,
/// gzip JSON lines; a row that does not parse and a row the database refuses are rejected with
/// their exact original line; the export lands compressed; no log line or error holds the
/// connection's secret.
async fn files_load_from_and_export_to(kind: StoreKind) {
    let store = TestStore::new(kind);
    let s = stores(&store);
    put(&s, &store.at("in/hires-1.csv.gz"), HIRES_1.as_bytes()).await;
    put(&s, &store.at("in/hires-2.csv.zst"), HIRES_2.as_bytes()).await;
    put(&s, &store.at("in/notes.txt"), b"not a hires file").await;
    put(
        &s,
        &store.at("in/people.jsonl.gz"),
        b"{\"id\": 7, \"who\": \"Barbara\"}\n\n{\"id\": 8, \"who\": \"Frances\"}\n",
    )
    .await;
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dag = format!(
        r#"id: lake
tasks:
  schema:
    kind: sql
    conn: wh
    sql: "create table hires (id integer primary key, name text not null, hired_on date)"
  hires:
    kind: load
    depends_on: [schema]
    source: {{file: "{glob}"}}
    target: {{conn: wh, table: hires, create: never}}
    columns:
      id: {{type: int}}
      name: {{type: text}}
      hired_on: {{type: date}}
    rejects: {{on_error: reject, max: 5}}
  people:
    kind: load
    source: {{file: "{people}"}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint}}
      name: {{type: text, from: who}}
  out:
    kind: export
    depends_on: [hires]
    conn: wh
    query: "select id, name, hired_on from hires order by id"
    to: "{out}"
  missing:
    kind: load
    source: {{file: "{missing}"}}
    target: {{conn: wh, table: nothing}}
"#,
        glob = store.at("in/hires-*.csv.*"),
        people = store.at("in/people.jsonl.gz"),
        out = store.at("out/hires.csv.gz"),
        missing = store.at("in/none-*.csv"),
    );
    let mut engine = engine_on(&store, &data, &meta, &[("lake.yaml", &dag)]).await;
    let run = engine.trigger("lake", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    for id in ["hires", "people", "out"] {
        assert_eq!(
            by_id(id).state,
            TaskState::Success,
            "{kind:?} {id}: {:?}",
            by_id(id).error
        );
    }
    let out = by_id("hires").outputs.clone().expect("outputs");
    assert_eq!(
        (
            &out["rows_read"],
            &out["rows_loaded"],
            &out["rows_rejected"]
        ),
        (
            &serde_json::json!(6),
            &serde_json::json!(4),
            &serde_json::json!(2)
        ),
        "{kind:?}: {out}"
    );
    assert_eq!(
        out["files"],
        serde_json::json!([
            store.at("in/hires-1.csv.gz"),
            store.at("in/hires-2.csv.zst")
        ]),
        "{kind:?}"
    );
    assert_eq!(
        query_text(&data, "select id, name, hired_on from hires order by id").await,
        [
            ["1", "Ada", "2024-01-02"],
            ["3", "Grace", "2024-01-04"],
            ["4", "Edsger", "2024-02-01"],
            ["5", "Hopper, Grace", "2024-02-03"],
        ]
        .map(|r| r.map(|v| Some(v.to_owned())).to_vec()),
        "{kind:?}"
    );
    let rejects = query_text(
        &data,
        "select source_file, line_number, raw_row from hires__rejects order by source_file, line_number",
    )
    .await;
    assert_eq!(
        rejects,
        [
            [
                store.at("in/hires-1.csv.gz"),
                "3".into(),
                "x2,Bad id,2024-01-03".into()
            ],
            [
                store.at("in/hires-2.csv.zst"),
                "3".into(),
                "1,Ada again,2024-02-02".into()
            ],
        ]
        .map(|r| r.map(Some).to_vec()),
        "{kind:?}"
    );
    assert_eq!(
        query_text(&data, "select id, name from people order by id").await,
        [["7", "Barbara"], ["8", "Frances"]].map(|r| r.map(|v| Some(v.to_owned())).to_vec()),
        "{kind:?}"
    );
    let exported = String::from_utf8(get(&s, &store.at("out/hires.csv.gz")).await).expect("utf8");
    assert_eq!(
        exported,
        "id,name,hired_on\n1,Ada,2024-01-02\n3,Grace,2024-01-04\n4,Edsger,2024-02-01\n5,\"Hopper, Grace\",2024-02-03\n",
        "{kind:?}"
    );
    let missing = by_id("missing");
    assert_eq!(missing.state, TaskState::Failed, "{kind:?}");
    let error = missing.error.clone().unwrap_or_default();
    assert!(error.contains("no file matches"), "{kind:?}: {error}");
    if !store.secret.is_empty() {
        for ti in &tis {
            let log = engine.log_of(ti, 1).await.join("\n");
            assert!(
                !log.contains(&store.secret),
                "{kind:?} {}: {log}",
                ti.task_id
            );
            assert!(
                !ti.error.clone().unwrap_or_default().contains(&store.secret),
                "{kind:?} {}",
                ti.task_id
            );
        }
    }
}

/// An export that fails after more than one part was uploaded leaves nothing at its location,
/// and the file an earlier export put there stays as it was.
async fn a_failed_export_leaves_nothing(kind: StoreKind) {
    let store = TestStore::new(kind);
    let s = stores(&store);
    put(&s, &store.at("out/earlier.csv"), b"id\n1\n").await;
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    // 20 MB of rows, then a division by zero: the failure comes after two parts went up. (The
    // GCS emulator has no multipart uploads: there the rows stay within one part, 2 MB.)
    let pad = if kind == StoreKind::Gcs { 100 } else { 1000 };
    let dag = format!(
        r#"id: halfway
tasks:
  fresh:
    kind: export
    conn: wh
    query: "select i, repeat('x', {pad}) as pad, 1 / (i - 20000) as boom from generate_series(1, 30000) i"
    to: "{fresh}"
  over:
    kind: export
    conn: wh
    query: "select i, repeat('x', {pad}) as pad, 1 / (i - 20000) as boom from generate_series(1, 30000) i"
    to: "{earlier}"
"#,
        fresh = store.at("out/fresh.csv"),
        earlier = store.at("out/earlier.csv"),
    );
    let mut engine = engine_on(&store, &data, &meta, &[("halfway.yaml", &dag)]).await;
    let run = engine.trigger("halfway", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    for ti in engine.tasks(&run.run_id).await {
        assert_eq!(ti.state, TaskState::Failed, "{kind:?} {}", ti.task_id);
        let error = ti.error.clone().unwrap_or_default();
        assert!(error.contains("division by zero"), "{kind:?}: {error}");
    }
    let left: Vec<String> = s
        .list(&loc(&store.at("out/*")))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.location.file_name().to_owned())
        .collect();
    assert_eq!(left, ["earlier.csv"], "{kind:?}: a partial file is left");
    assert_eq!(
        get(&s, &store.at("out/earlier.csv")).await,
        b"id\n1\n",
        "{kind:?}"
    );
}

/// A sensor lists arrived objects and a load claims them: the first try times out after its
/// claim (the table is locked) and its retry loads what it claimed, while an object that
/// arrived in between waits for the next run; of two runs started together, one loads it.
async fn a_sensor_and_claims_load_each_arrival_once(kind: StoreKind) {
    let store = TestStore::new(kind);
    let s = stores(&store);
    put(&s, &store.at("landing/a.csv"), b"id,name\n1,Ada\n2,Grace\n").await;
    put(
        &s,
        &store.at("landing/b.csv"),
        b"id,name\n3,Edsger\n4,Barbara\n",
    )
    .await;
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dag = format!(
        r#"id: arrivals
max_active_runs: 4
tasks:
  sense:
    kind: wait_for
    file: "{landing}"
    interval: 1s
  load:
    kind: load
    depends_on: [sense]
    retries: 1
    retry_delay: 1s
    timeout: 2s
    source:
      file: "{landing}"
      claim: {{move_to: "{claimed}", archive_to: "{archive}"}}
    target: {{conn: wh, table: arrivals, create: never}}
    columns:
      id: {{type: int}}
      name: {{type: text}}
"#,
        landing = store.at("landing/*.csv"),
        claimed = store.at("claimed"),
        archive = store.at("archive"),
    );
    let mut engine = engine_on(&store, &data, &meta, &[("arrivals.yaml", &dag)]).await;
    query_text(
        &data,
        "create table arrivals (id integer primary key, name text)",
    )
    .await;
    let mut lock = <sqlx::PgConnection as sqlx::Connection>::connect(&data.url)
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE arrivals IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .expect("lock");
    let first = engine.trigger("arrivals", serde_json::json!({})).await;
    for _ in 0..10 {
        engine.tick().await;
        if engine.state_of(&first.run_id, "load").await == TaskState::UpForRetry {
            break;
        }
    }
    assert_eq!(
        engine.state_of(&first.run_id, "load").await,
        TaskState::UpForRetry,
        "{kind:?}"
    );
    let names = |found: Vec<weir_storage::Object>| -> Vec<String> {
        found
            .into_iter()
            .map(|o| o.location.file_name().to_owned())
            .collect()
    };
    assert!(
        s.list(&loc(&store.at("landing/*")))
            .await
            .expect("list")
            .is_empty(),
        "{kind:?}"
    );
    let claimed_dir = store.at(&format!(
        "claimed/{}/load/*",
        first.run_id.replace('/', "_")
    ));
    assert_eq!(
        names(s.list(&loc(&claimed_dir)).await.expect("list")),
        ["a.csv", "b.csv"],
        "{kind:?}"
    );
    // The table is free again, and another file arrives, while the load waits for its retry.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    put(&s, &store.at("landing/c.csv"), b"id,name\n5,Frances\n").await;
    engine.drive(&first.run_id).await;
    let tis = engine.tasks(&first.run_id).await;
    let load = tis.iter().find(|t| t.task_id == "load").expect("load");
    assert_eq!(load.state, TaskState::Success, "{kind:?}: {:?}", load.error);
    assert_eq!(load.try_number, 2, "{kind:?}");
    let archived = |run: &str| store.at(&format!("archive/{}/load/", run.replace('/', "_")));
    assert_eq!(
        load.outputs.clone().expect("outputs")["files"],
        serde_json::json!([
            archived(&first.run_id) + "a.csv",
            archived(&first.run_id) + "b.csv"
        ]),
        "{kind:?}"
    );
    assert_eq!(
        names(s.list(&loc(&store.at("landing/*"))).await.expect("list")),
        ["c.csv"],
        "{kind:?}"
    );
    // Two runs start together for c.csv: one loads it, the other finds nothing left to claim
    // (the database claim that decides a true race is tested in weir-store).
    engine.clock.advance(chrono::Duration::seconds(1));
    let second = engine.trigger("arrivals", serde_json::json!({})).await;
    engine.clock.advance(chrono::Duration::seconds(1));
    let third = engine.trigger("arrivals", serde_json::json!({})).await;
    engine.drive(&second.run_id).await;
    engine.drive(&third.run_id).await;
    let mut loaded = 0;
    for run in [&second, &third] {
        let tis = engine.tasks(&run.run_id).await;
        let load = tis.iter().find(|t| t.task_id == "load").expect("load");
        if load.state == TaskState::Success {
            loaded += 1;
            assert_eq!(
                load.outputs.clone().expect("outputs")["files"],
                serde_json::json!([archived(&run.run_id) + "c.csv"]),
                "{kind:?}"
            );
        } else {
            let error = load.error.clone().unwrap_or_default();
            assert!(
                error.contains("claimed by another run") || error.contains("no file matches"),
                "{kind:?}: {error}"
            );
        }
    }
    assert_eq!(loaded, 1, "{kind:?}: c.csv was loaded by {loaded} runs");
    assert_eq!(
        query_text(
            &data,
            "select count(*), count(distinct id), sum(id) from arrivals"
        )
        .await,
        vec![vec![
            Some("5".to_owned()),
            Some("5".to_owned()),
            Some("15".to_owned())
        ]],
        "{kind:?}"
    );
    assert!(
        s.list(&loc(&store.at("claimed/**")))
            .await
            .expect("list")
            .is_empty(),
        "{kind:?}"
    );
}

/// A transfer copies a local folder's files to the store, keeping their paths below the glob's
/// folder; run again after a byte of one copy changed, it skips the intact file and copies the
/// corrupted one again; a transfer back from the store with `delete_source` moves them.
async fn a_transfer_is_verified_and_resumes(kind: StoreKind) {
    let store = TestStore::new(kind);
    let s = stores(&store);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("out/sub")).expect("mkdir");
    // Several upload parts where the store takes multipart uploads.
    let len = if kind == StoreKind::Gcs {
        400_000
    } else {
        20 << 20
    };
    let big: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("out/a.csv"), "id\n1\n").expect("a");
    std::fs::write(dir.path().join("out/sub/b.bin"), &big).expect("b");
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dag = format!(
        r#"id: move
tasks:
  up:
    kind: transfer
    from: "{local}/out/**/*"
    to: "{raw}/"
    parallel: 2
"#,
        local = dir.path().display(),
        raw = store.at("raw"),
    );
    let back = format!(
        r#"id: back
tasks:
  down:
    kind: transfer
    from: "{raw}/**/*"
    to: "{local}/back/"
    delete_source: true
"#,
        local = dir.path().display(),
        raw = store.at("raw"),
    );
    let mut engine = engine_on(
        &store,
        &data,
        &meta,
        &[("move.yaml", &dag), ("back.yaml", &back)],
    )
    .await;
    let outputs = |tis: Vec<weir_store::TaskInstanceRow>| {
        let ti = tis.into_iter().next().expect("one task");
        assert_eq!(ti.state, TaskState::Success, "{kind:?}: {:?}", ti.error);
        ti.outputs.expect("outputs")
    };
    let first = engine.trigger("move", serde_json::json!({})).await;
    engine.drive(&first.run_id).await;
    let out = outputs(engine.tasks(&first.run_id).await);
    assert_eq!(
        (&out["copied"], &out["skipped"], &out["bytes"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(0),
            &serde_json::json!(len + 5)
        ),
        "{kind:?}: {out}"
    );
    assert_eq!(
        out["files"],
        serde_json::json!([store.at("raw/a.csv"), store.at("raw/sub/b.bin")]),
        "{kind:?}"
    );
    assert_eq!(get(&s, &store.at("raw/sub/b.bin")).await, big, "{kind:?}");
    // One byte of the copy changes; the size stays.
    let mut bad = big.clone();
    bad[len / 3] ^= 0x20;
    if kind == StoreKind::Gcs {
        store.put_whole("raw/sub/b.bin", &bad);
    } else {
        put(&s, &store.at("raw/sub/b.bin"), &bad).await;
    }
    engine.clock.advance(chrono::Duration::seconds(1));
    let second = engine.trigger("move", serde_json::json!({})).await;
    engine.drive(&second.run_id).await;
    let out = outputs(engine.tasks(&second.run_id).await);
    assert_eq!(
        (&out["copied"], &out["skipped"], &out["bytes"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(len)
        ),
        "{kind:?}: {out}"
    );
    assert_eq!(
        get(&s, &store.at("raw/sub/b.bin")).await,
        big,
        "{kind:?}: repaired"
    );
    // And back, as a move.
    let third = engine.trigger("back", serde_json::json!({})).await;
    engine.drive(&third.run_id).await;
    let out = outputs(engine.tasks(&third.run_id).await);
    assert_eq!(out["copied"], serde_json::json!(2), "{kind:?}: {out}");
    assert_eq!(
        std::fs::read(dir.path().join("back/sub/b.bin")).expect("b back"),
        big,
        "{kind:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("back/a.csv")).expect("a back"),
        "id\n1\n"
    );
    assert!(
        s.list(&loc(&store.at("raw/**")))
            .await
            .expect("list")
            .is_empty(),
        "{kind:?}: moved"
    );
}

/// Rows of the large file (about 95 bytes each).
const BIG_ROWS: u64 = 1_600_000;

/// A CSV file larger than the worker's memory may grow (about 150 MB, gzip-compressed on S3)
/// streams from the store into Postgres: `weir tasks test` (a real process) loads every row,
/// and its peak resident size grows by less than half the file's size over the same load of a
/// one-row file.
async fn a_file_larger_than_memory_streams(kind: StoreKind) {
    use std::fmt::Write as _;
    let store = TestStore::new(kind);
    let s = stores(&store);
    let mut text = String::with_capacity(160 << 20);
    text.push_str("id,name,note,amount\n");
    for i in 1..=BIG_ROWS {
        let _ = writeln!(
            text,
            "{i},name {i},a note that makes the row longer {:0>40},{}.{:02}",
            i * 7,
            i % 1000,
            i % 100
        );
    }
    let ext = if kind == StoreKind::S3 {
        "csv.gz"
    } else {
        "csv"
    };
    let (big, small) = (format!("big/rows.{ext}"), format!("small/rows.{ext}"));
    let size = text.len();
    let first_row = text.find("\n2,").expect("row 2") + 1;
    if kind == StoreKind::Gcs {
        store.put_whole(&big, text.as_bytes());
        store.put_whole(&small, &text.as_bytes()[..first_row]);
    } else {
        put(&s, &store.at(&big), text.as_bytes()).await;
        put(&s, &store.at(&small), &text.as_bytes()[..first_row]).await;
    }
    drop(text);
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("dags");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!(
            "[connections.wh]\nurl = \"{}\"\n{}",
            data.url,
            store.toml("lake")
        ),
    )
    .expect("weir.toml");
    let mut dag = "id: big\ntasks:\n".to_owned();
    for (task, file) in [("big", &big), ("small", &small)] {
        let _ = write!(
            dag,
            "  {task}:\n    kind: load\n    source: {{file: \"{}\"}}\n    target: {{conn: wh, table: {task}}}\n    columns:\n      id: {{type: bigint}}\n      name: {{type: text}}\n      note: {{type: text}}\n      amount: {{type: numeric}}\n",
            store.at(file)
        );
    }
    std::fs::write(dir.path().join("dags/big.yaml"), dag).expect("dag");
    let peak_kb = |task: &str| {
        let out = std::process::Command::new("/usr/bin/time")
            .args([
                "-f",
                "max-rss-kb=%M",
                env!("CARGO_BIN_EXE_weir"),
                "tasks",
                "test",
                "big",
                task,
            ])
            .current_dir(dir.path())
            .env_remove("WEIR_DATABASE_URL")
            .output()
            .expect("/usr/bin/time (Debian's `time` package; scripts/test installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{kind:?} {task}: {stderr}");
        if !store.secret.is_empty() {
            assert!(
                !stderr.contains(&store.secret),
                "{kind:?}: the secret is in the output"
            );
        }
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix("max-rss-kb="))
            .next_back()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("max RSS")
    };
    let (small_kb, big_kb) = (peak_kb("small"), peak_kb("big"));
    assert_eq!(
        query_text(&data, "select count(*), sum(id) from big").await,
        vec![vec![
            Some(BIG_ROWS.to_string()),
            Some((BIG_ROWS * (BIG_ROWS + 1) / 2).to_string())
        ]],
        "{kind:?}"
    );
    let grew = big_kb.saturating_sub(small_kb) * 1024;
    eprintln!(
        "{kind:?}: a {} MB file: peak RSS {} MB, {} MB over a one-row file",
        size >> 20,
        big_kb >> 10,
        grew >> 20
    );
    assert!(size > 100 << 20, "the file is {size} bytes");
    assert!(
        grew < size / 2,
        "{kind:?}: loading a {} MB file took {} MB more memory than a one-row file",
        size >> 20,
        grew >> 20
    );
}

macro_rules! per_store {
    ($($test:ident),*) => {
        mod s3 { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(weir_testkit::stores::StoreKind::S3).await } )* }
        mod gcs { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(weir_testkit::stores::StoreKind::Gcs).await } )* }
        mod azure { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(weir_testkit::stores::StoreKind::Azure).await } )* }
        mod sftp { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(weir_testkit::stores::StoreKind::Sftp).await } )* }
    };
}

per_store!(
    files_load_from_and_export_to,
    a_failed_export_leaves_nothing,
    a_file_larger_than_memory_streams,
    a_sensor_and_claims_load_each_arrival_once,
    a_transfer_is_verified_and_resumes
);

/// What landed in the bucket equals what is in the table: `row_count` of a Parquet file set,
/// `compare_count` and `compare_checksum` between files and a table pass after an export; a
/// CSV set with one value changed and one row missing fails them, naming the keys (the other
/// rows are equal though written differently: `7.00` and `7`, a time at +02:00 and in UTC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_compares_files_with_tables() {
    let store = TestStore::new(StoreKind::S3);
    let s = stores(&store);
    put(
        &s,
        &store.at("landed/part-2.csv.gz"),
        b"id,name,amount,at\n3,Edsger,-0.50,2024-01-02T00:00:00Z\n",
    )
    .await;
    put(
        &s,
        &store.at("landed/part-1.csv.gz"),
        b"id,name,amount,at\n1,Ada,10.25,2024-01-01T10:00:00Z\n2,Grace Hopper,7.00,2024-01-01T11:00:00Z\n",
    )
    .await;
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dag = format!(
        r#"id: reconcile
tasks:
  schema:
    kind: sql
    conn: wh
    sql:
      - "create table people (id integer primary key, name text, amount numeric(10,2), at timestamptz)"
      - "insert into people values (1, 'Ada', 10.25, '2024-01-01 12:00:00+02'), (2, 'Grace', 7, '2024-01-01 11:00:00+00'), (3, 'Edsger', -0.5, '2024-01-02 00:00:00+00'), (4, 'Barbara', 1, '2024-01-03 00:00:00+00')"
  out:
    kind: export
    depends_on: [schema]
    conn: wh
    table: people
    to: "{parquet}"
  same:
    kind: validate
    depends_on: [out]
    checks:
      - row_count: {{file: "{parquet}", min: 4, max: 4}}
      - compare_count:
          source: {{conn: wh, table: people}}
          target: {{file: "{parquet}"}}
      - compare_checksum:
          source: {{conn: wh, table: people}}
          target: {{file: "{parquet}"}}
          key: [id]
  differs:
    kind: validate
    depends_on: [schema]
    checks:
      - compare_count:
          source: {{conn: wh, table: people}}
          target: {{file: "{landed}"}}
      - compare_checksum:
          source: {{conn: wh, query: "select id, name, amount, at from people"}}
          target: {{file: "{landed}"}}
          key: [id]
"#,
        parquet = store.at("lake/people.parquet"),
        landed = store.at("landed/*.csv.gz"),
    );
    let mut engine = engine_on(&store, &data, &meta, &[("reconcile.yaml", &dag)]).await;
    let run = engine.trigger("reconcile", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    let same = by_id("same");
    assert_eq!(
        same.state,
        TaskState::Success,
        "{:?} {:?}",
        same.error,
        same.outputs
    );
    let differs = by_id("differs");
    assert_eq!(differs.state, TaskState::Failed, "{:?}", differs.outputs);
    let out = differs.outputs.clone().expect("outputs");
    let checks = out["checks"].as_array().expect("checks");
    assert_eq!(
        checks[0]["observed"],
        serde_json::json!({"source": 4, "target": 3, "difference": 1, "allowed": 0}),
        "{out}"
    );
    assert_eq!(
        checks[1]["observed"],
        serde_json::json!({"source_rows": 4, "target_rows": 3, "missing": 1, "extra": 0, "changed": 1}),
        "{out}"
    );
    let problems: Vec<(String, String)> = checks[1]["samples"]
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
            ("4".to_owned(), "missing in target".to_owned()),
            ("2".to_owned(), "changed".to_owned())
        ]
    );
}

/// The cloud_migration example runs as the README's newcomer runs it, against a local S3
/// server and a Postgres warehouse: legacy table → Parquet in the bucket → verified transfer
/// → warehouse, reconciled three ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_migration_example_runs_against_a_local_s3() {
    let store = TestStore::new(StoreKind::S3);
    let bucket = store.url.trim_start_matches("s3://").to_owned();
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dir = crate::examples_copy();
    let env = [
        ("WEIR_CONN_DEMO_LAKE", store.url.clone()),
        (
            "WEIR_CONNECTIONS__DEMO_LAKE__ENDPOINT",
            store.options["endpoint"].clone(),
        ),
        (
            "WEIR_CONNECTIONS__DEMO_LAKE__SECRET_ACCESS_KEY",
            store.secret.clone(),
        ),
        ("WEIR_CONN_WAREHOUSE", data.url.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let standalone = crate::Standalone::start_with(dir.path(), &env, std::process::Stdio::null());
    let out = crate::weir_env(
        dir.path(),
        &[
            "trigger",
            "cloud_migration",
            "--param",
            &format!("bucket={bucket}"),
            "--wait",
            "--json",
        ],
        &env,
    );
    drop(standalone);
    let run: serde_json::Value = serde_json::from_str(&crate::stdout(&out)).unwrap_or_default();
    let tasks: Vec<(String, String)> = run["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["task_id"].as_str().unwrap_or("").to_owned(),
                t["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(run["state"], "success", "{tasks:?} {}", crate::stderr(&out));
    assert_eq!(tasks.len(), 5, "{tasks:?}");
    assert_eq!(
        query_text(&data, "select count(*) from employees_cloud").await,
        vec![vec![Some("950".to_owned())]]
    );
    let s = stores(&store);
    let lake = s
        .list(&loc(&store.at("lake/hr/**/*.parquet")))
        .await
        .expect("list");
    assert_eq!(lake.len(), 1, "{lake:?}");
}
