//! DAGs scheduled on files: each arrived object makes one run, with the object in the run's
//! context, across a scheduler restart and with two schedulers at once; on a local folder
//! (both metadata backends) and on the local S3 server.

use std::sync::Arc;

use weir_model::clock::Clock;
use weir_model::{RunState, RunType};
use weir_scheduler::Scheduler;
use weir_store::RunRow;
use weir_testkit::engine::{Engine, scheduler_config};
use weir_testkit::per_backend;
use weir_testkit::stores::{StoreKind, TestStore};

use crate::stores::{put, stores};

fn dag(id: &str, files: &str, batch: bool) -> String {
    format!(
        r#"id: {id}
schedule: {{files: "{files}", poll: 1s, batch: {batch}}}
tasks:
  show:
    kind: shell
    run: |
      echo "files={{% for f in trigger.files %}}{{{{ f.location }}}};{{% endfor %}}" >> "$WEIR_OUTPUT"
"#
    )
}

/// A DAG's runs (at most 100), oldest logical date first.
pub(crate) async fn runs_of(store: &weir_store::Store, dag_id: &str) -> Vec<RunRow> {
    let mut runs = store
        .list_runs(&weir_store::RunFilter {
            dag_id: Some(dag_id.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("runs");
    runs.sort_by_key(|r| r.logical_date);
    runs
}

/// The files each run was made for, sorted.
async fn files_of(engine: &mut Engine, dag_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in runs_of(&engine.store, dag_id).await {
        assert_eq!(run.run_type, RunType::Files);
        let done = engine.drive(&run.run_id).await;
        assert_eq!(done.state, RunState::Success);
        let tis = engine.tasks(&run.run_id).await;
        let files = tis[0].outputs.as_ref().expect("outputs")["files"]
            .as_str()
            .expect("text")
            .to_owned();
        out.push(files);
    }
    out.sort();
    out
}

/// One pass of the engine's scheduler after the poll is due.
async fn poll(engine: &mut Engine) {
    engine.clock.advance(chrono::Duration::seconds(3));
    engine.scheduler.run_once().await.expect("pass");
}

per_backend!(each_local_file_makes_one_run, |db: TestDb| {
    let landing = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| landing.path().join(name).display().to_string();
    std::fs::write(at("a.csv"), "1\n").expect("a");
    std::fs::write(at("b.csv"), "2\n").expect("b");
    std::fs::write(at("skip.txt"), "not matched").expect("txt");
    let glob = format!("{}/*.csv", landing.path().display());
    let text = dag("landing", &glob, false);
    let mut engine = Engine::new(&db, &[("landing.yaml", &text)]).await;
    poll(&mut engine).await;
    assert_eq!(runs_of(&engine.store, "landing").await.len(), 2);
    poll(&mut engine).await;
    assert_eq!(runs_of(&engine.store, "landing").await.len(), 2);

    // A scheduler started afresh (its polling cache empty) finds nothing new.
    let mut restarted = Scheduler::new(
        engine.store.clone(),
        scheduler_config(engine.dir.path()),
        Arc::clone(&engine.clock) as Arc<dyn Clock>,
    );
    restarted.run_once().await.expect("pass");
    assert_eq!(runs_of(&engine.store, "landing").await.len(), 2);

    // Two schedulers looking at once: a new file makes one run.
    std::fs::write(at("c.csv"), "3\n").expect("c");
    engine.clock.advance(chrono::Duration::seconds(3));
    let mut other = Scheduler::new(
        engine.store.clone(),
        scheduler_config(engine.dir.path()),
        Arc::clone(&engine.clock) as Arc<dyn Clock>,
    );
    let (a, b) = tokio::join!(restarted.run_once(), other.run_once());
    a.expect("pass");
    b.expect("pass");
    assert_eq!(runs_of(&engine.store, "landing").await.len(), 3);

    // A file written again is a new arrival.
    std::fs::write(at("a.csv"), "1\n10\n").expect("a again");
    poll(&mut engine).await;
    let files = files_of(&mut engine, "landing").await;
    assert_eq!(
        files,
        [
            at("a.csv") + ";",
            at("a.csv") + ";",
            at("b.csv") + ";",
            at("c.csv") + ";"
        ]
    );
});

per_backend!(
    a_batch_makes_one_run_for_what_one_look_found,
    |db: TestDb| {
        let landing = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| landing.path().join(name).display().to_string();
        std::fs::write(at("a.csv"), "1\n").expect("a");
        std::fs::write(at("b.csv"), "2\n").expect("b");
        let glob = format!("{}/*.csv", landing.path().display());
        let text = dag("batched", &glob, true);
        let mut engine = Engine::new(&db, &[("batched.yaml", &text)]).await;
        poll(&mut engine).await;
        poll(&mut engine).await;
        assert_eq!(
            files_of(&mut engine, "batched").await,
            [format!("{};{};", at("a.csv"), at("b.csv"))]
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_in_a_bucket_makes_one_run() {
    let store = TestStore::new(StoreKind::S3);
    let s = stores(&store);
    put(&s, &store.at("landing/a.csv"), b"id\n1\n").await;
    put(&s, &store.at("landing/b.csv"), b"id\n2\n").await;
    put(&s, &store.at("landing/notes.txt"), b"no").await;
    let db = weir_testkit::TestDb::postgres().await;
    let text = dag("bucket", &store.at("landing/*.csv"), false);
    let mut engine = Engine::new(&db, &[("bucket.yaml", &text)]).await;
    let scheduler = |engine: &Engine| {
        let mut cfg = scheduler_config(engine.dir.path());
        cfg.stores = s.clone();
        Scheduler::new(
            engine.store.clone(),
            cfg,
            Arc::clone(&engine.clock) as Arc<dyn Clock>,
        )
    };
    let mut first = scheduler(&engine);
    first.run_once().await.expect("pass");
    assert_eq!(runs_of(&engine.store, "bucket").await.len(), 2);
    // Restarted, and two at once with a new object: one more run.
    let mut second = scheduler(&engine);
    second.run_once().await.expect("pass");
    assert_eq!(runs_of(&engine.store, "bucket").await.len(), 2);
    put(&s, &store.at("landing/c.csv"), b"id\n3\n").await;
    engine.clock.advance(chrono::Duration::seconds(3));
    let mut third = scheduler(&engine);
    let (a, b) = tokio::join!(second.run_once(), third.run_once());
    a.expect("pass");
    b.expect("pass");
    let files = files_of(&mut engine, "bucket").await;
    assert_eq!(
        files,
        [
            store.at("landing/a.csv") + ";",
            store.at("landing/b.csv") + ";",
            store.at("landing/c.csv") + ";"
        ]
    );
}
