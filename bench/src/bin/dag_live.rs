//! How soon a new DAG file is live (release build): the active scheduler running as in `weir
//! standalone` (scans every second), a DAG file written, and the time until the store has it
//! (what the API's trigger and the UI read), polled every millisecond. 20 files, each written
//! at a different moment of the scan cycle; with the folder watched (the default) and, as the
//! baseline in the same run, with the scan alone.
//!
//!   dag_live DB_URL       `sqlite://PATH` (a fresh file) or `postgres://...` (an empty database)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_model::clock::{Clock, SystemClock};
use weir_store::Store;
use weir_testkit::engine::{dags_folder, scheduler_config};

#[tokio::main]
async fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: dag_live DB_URL");
        std::process::exit(2);
    };
    let store = Store::connect(&url).await.expect("database");
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    for (watch, label) in [(false, "scan alone (baseline)"), (true, "watched")] {
        let mut ms = measure(&store, watch, label).await;
        ms.sort_by(f64::total_cmp);
        println!(
            "new DAG live [{backend}], {label}: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} files)",
            ms[ms.len() / 2],
            ms[ms.len() * 95 / 100],
            ms[ms.len() - 1],
            ms.len()
        );
    }
}

async fn measure(store: &Store, watch: bool, label: &str) -> Vec<f64> {
    let dir = dags_folder(&[]);
    let mut cfg = scheduler_config(dir.path());
    cfg.scan_interval = Duration::from_secs(1);
    cfg.watch_folder = watch;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(weir_scheduler::run(
        store.clone(),
        cfg,
        clock,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = Vec::new();
    for i in 0..20 {
        // Spread over the scan cycle: 0, 53, 106, ... ms after the previous one went live.
        tokio::time::sleep(Duration::from_millis((i * 53) % 1000)).await;
        let id = format!("live_{}_{i}", if watch { "w" } else { "s" });
        let written = Instant::now();
        std::fs::write(
            dir.path().join(format!("dags/{id}.yaml")),
            format!("id: {id}\ntasks:\n  t:\n    kind: noop\n"),
        )
        .expect("write");
        while store.dag(&id).await.is_err() {
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "{label}: {id} never went live"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    shutdown.cancel();
    let _ = scheduler.await;
    out
}
