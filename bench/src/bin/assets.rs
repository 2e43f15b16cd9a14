//! Asset scheduling benchmark (release build, the real scheduler and worker loops in one
//! process as `weir standalone` runs them, against the database given):
//!
//!   assets latency DB_URL   1,000 assets, 200 DAGs each scheduled on 5 of them (`any`), 10,000
//!                           asset events already recorded; then 200 events, one at a time, each
//!                           on an asset some DAG waits for: the wall time from recording the
//!                           event (the API's call) until the consumer's run can be read from
//!                           the database, polled every millisecond (median, p95, max)
//!   assets latency-apart DB_URL  the same with the events recorded (and the runs read) through
//!                           another connection pool (Postgres only): woken by `NOTIFY`
//!   assets pass DB_URL      a full scheduler pass (`Scheduler::run_once`), median of 50, over
//!                           200 DAGs: unscheduled (the baseline), on cron, then scheduled on
//!                           assets with the 10,000 events
//!
//! DB_URL: `sqlite://PATH` (a fresh file) or `postgres://...` (an empty database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_model::clock::{Clock, SystemClock};
use weir_store::{ExternalEvent, Store};
use weir_testkit::engine::{Services, dags_folder, scheduler_config, worker_config};

const ASSETS: usize = 1000;
const DAGS: usize = 200;
const PER_DAG: usize = 5;
const HISTORY: usize = 10_000;
const SAMPLES: usize = 200;

fn key(i: usize) -> String {
    format!("wh.public.t{i:04}")
}

/// The assets DAG `d` waits for: 5 spread over the 1,000 (so most assets have one consumer).
fn assets_of(d: usize) -> Vec<usize> {
    (0..PER_DAG).map(|j| (d * PER_DAG + j) % ASSETS).collect()
}

/// DAG `d`: scheduled on its assets, on cron, or not at all (`manual`).
fn dag(d: usize, how: &str) -> String {
    let schedule = match how {
        "assets" => {
            let keys: Vec<String> = assets_of(d).into_iter().map(key).collect();
            format!("schedule: {{assets: {{any: [{}]}}}}\n", keys.join(", "))
        }
        "cron" => "schedule: \"@daily\"\nstart_date: 2030-01-01\n".to_owned(),
        _ => String::new(),
    };
    format!("id: consumer_{d:03}\n{schedule}max_active_runs: 1000\ntasks:\n  t: {{kind: noop}}\n")
}

async fn history(store: &Store, clock: &dyn Clock) {
    for i in 0..HISTORY {
        let e = ExternalEvent {
            key: key(i % ASSETS),
            source: "api",
            ..Default::default()
        };
        store
            .record_external_event(&e, clock.now())
            .await
            .expect("event");
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(what), Some(url)) = (args.first(), args.get(1)) else {
        eprintln!("usage: assets latency|pass DB_URL");
        std::process::exit(2);
    };
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let store = Store::connect(url).await.expect("database");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match what.as_str() {
        "latency" => latency(&store, &store, &clock, backend).await,
        // The events from another process's connection pool: the scheduler hears of them
        // through Postgres' NOTIFY, as it does from workers and web servers elsewhere.
        "latency-apart" if backend == "postgres" => {
            let apart = Store::connect(url).await.expect("database");
            latency(&store, &apart, &clock, "postgres, events from another pool").await;
        }
        "pass" => pass(&store, &clock, backend).await,
        other => {
            eprintln!("unknown benchmark `{other}`");
            std::process::exit(2);
        }
    }
}

async fn latency(store: &Store, events: &Store, clock: &Arc<dyn Clock>, backend: &str) {
    // The history first: events from before the DAGs named the assets queue nothing.
    history(store, &**clock).await;
    let files: Vec<(String, String)> = (0..DAGS)
        .map(|d| (format!("consumer_{d:03}.yaml"), dag(d, "assets")))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = dags_folder(&files);
    let mut scfg = scheduler_config(dir.path());
    scfg.pools = Default::default();
    scfg.scan_interval = Duration::from_secs(1);
    let mut wcfg = worker_config();
    wcfg.concurrency = 16;
    wcfg.poll_interval = Duration::from_millis(500);
    let mut sync = weir_scheduler::Scheduler::new(store.clone(), scfg.clone(), Arc::clone(clock));
    sync.sync_folder_once().await.expect("sync");
    let services = Services::start(store, scfg, wcfg, clock);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ms = Vec::with_capacity(SAMPLES);
    for s in 0..SAMPLES {
        let d = (s * 7) % DAGS;
        let asset = assets_of(d)[s % PER_DAG];
        let before = store
            .list_runs(&weir_store::RunFilter {
                dag_id: Some(format!("consumer_{d:03}")),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .expect("runs")
            .len();
        let e = ExternalEvent {
            key: key(asset),
            source: "api",
            ..Default::default()
        };
        let sent = Instant::now();
        events
            .record_external_event(&e, clock.now())
            .await
            .expect("event");
        let started = Instant::now();
        let created = loop {
            let runs = events
                .list_runs(&weir_store::RunFilter {
                    dag_id: Some(format!("consumer_{d:03}")),
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .expect("runs");
            if runs.len() > before {
                break sent.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no run of consumer_{d:03} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        ms.push(created.as_secs_f64() * 1000.0);
        // Events apart, as they come in practice: each measured on its own.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = services.stop().await;
    ms.sort_by(f64::total_cmp);
    println!(
        "[{backend}] asset event recorded -> consumer run readable: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({SAMPLES} events; {ASSETS} assets, {DAGS} DAGs x {PER_DAG}, {HISTORY} events before)",
        pct(&ms, 0.5),
        pct(&ms, 0.95),
        ms.last().copied().unwrap_or(0.0)
    );
}

async fn pass(store: &Store, clock: &Arc<dyn Clock>, backend: &str) {
    let mut medians = Vec::new();
    for how in ["manual", "cron", "assets"] {
        let on_assets = how == "assets";
        let files: Vec<(String, String)> = (0..DAGS)
            .map(|d| (format!("consumer_{d:03}.yaml"), dag(d, how)))
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = dags_folder(&files);
        let mut scfg = scheduler_config(dir.path());
        scfg.pools = Default::default();
        let mut scheduler = weir_scheduler::Scheduler::new(store.clone(), scfg, Arc::clone(clock));
        // The history is recorded before the DAGs name the assets: it is history, not a
        // queue of runs to make.
        if on_assets {
            history(store, &**clock).await;
        }
        scheduler.run_once().await.expect("pass");
        let mut ms = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            scheduler.run_once().await.expect("pass");
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        medians.push(pct(&ms, 0.5));
    }
    println!(
        "[{backend}] full scheduler pass, {DAGS} DAGs: unscheduled {:.2} ms, on cron {:.2} ms, on assets with {HISTORY} events {:.2} ms (median of 50)",
        medians[0], medians[1], medians[2]
    );
}
