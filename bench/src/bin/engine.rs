//! Engine benchmarks (release build, real scheduler and worker loops in one process, as
//! `weir standalone` runs them, against the database given):
//!
//!   engine chain DB_URL      a 100-task chain of `shell: true`: wall time from trigger to
//!                            success, and the gap between a task's end and its successor's start
//!   engine fanout DB_URL     1,000 independent `shell: true` tasks with the settings a user
//!                            gets: the DAG's default `max_active_tasks` (16) and a worker's
//!                            default concurrency (8): tasks per second
//!   engine fanout-wide DB_URL  the same DAG with `max_active_tasks: 10000`, 16 at once
//!   engine fanout-noop DB_URL  the default fan-out with `noop` tasks: the engine's own cost
//!   engine python-chain DB_URL a 20-task chain of `python` tasks sharing one (warm)
//!                            environment, next to `python3 -c pass` run 20 times here
//!
//! DB_URL: `sqlite://PATH` (a fresh file) or `postgres://...` (an empty database).

use std::sync::Arc;
use std::time::Duration;

use weir_model::clock::{Clock, SystemClock};
use weir_store::Store;
use weir_testkit::engine::{
    Services, dags_folder, python_setup, scheduler_config, trigger, worker_config,
};

#[tokio::main]
async fn main() {
    // Off unless asked for: `RUST_LOG=debug` shows where a slow gap went.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(what), Some(url)) = (args.first(), args.get(1)) else {
        eprintln!("usage: engine chain|fanout|fanout-wide|fanout-noop|python-chain DB_URL");
        std::process::exit(2);
    };
    let (dag, tasks, concurrency) = match what.as_str() {
        "chain" => (chain_dag(100), 100, 8),
        "fanout" => (fanout_dag(1000, r#"{kind: shell, run: "true"}"#), 1000, 8),
        "fanout-wide" => (
            fanout_dag(1000, r#"{kind: shell, run: "true"}"#)
                .replace("id: bench\n", "id: bench\nmax_active_tasks: 10000\n"),
            1000,
            16,
        ),
        // The engine's own cost: the same fan-out with no process per task.
        "fanout-noop" => (fanout_dag(1000, "{kind: noop}"), 1000, 8),
        "python-chain" => (python_chain_dag(20), 20, 8),
        other => {
            eprintln!("unknown benchmark `{other}`");
            std::process::exit(2);
        }
    };
    let store = Store::connect(url).await.expect("database");
    let warmup = fanout_dag(64, r#"{kind: shell, run: "true"}"#).replace("id: bench", "id: warmup");
    let dir = dags_folder(&[("bench.yaml", &dag), ("warmup.yaml", &warmup)]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The tests' configurations, as `weir standalone` runs by default otherwise: no pools, a
    // scan every second, `concurrency` tries at once.
    let mut scfg = scheduler_config(dir.path());
    scfg.pools = Default::default();
    scfg.scan_interval = Duration::from_secs(1);
    let mut wcfg = worker_config();
    wcfg.concurrency = concurrency;
    wcfg.python = python_setup();
    wcfg.poll_interval = Duration::from_millis(500);
    let mut sync = weir_scheduler::Scheduler::new(store.clone(), scfg.clone(), Arc::clone(&clock));
    sync.sync_folder_once().await.expect("sync");
    let services = Services::start(&store, scfg, wcfg, &clock);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A service that has been running: pools open, caches filled. Measured runs of a cold
    // process would count connection setup (a Postgres backend start per pooled connection).
    run_and_wait(&store, &*clock, "warmup").await;
    if what == "python-chain" {
        // The environment exists before the measured run (the figure is the warm path).
        run_and_wait(&store, &*clock, "bench").await;
    }
    let (run, triggered, ended) = run_and_wait(&store, &*clock, "bench").await;
    let wall = (ended - triggered)
        .to_std()
        .expect("ends after the trigger");
    let _ = services.stop().await;
    let tis = store.task_instances(&run.run_id).await.expect("tis");
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    match what.as_str() {
        "chain" => {
            let mut by_task: Vec<_> = tis.iter().collect();
            by_task.sort_by_key(|t| t.task_id.clone());
            let gaps_in_order: Vec<(f64, &str)> = by_task
                .windows(2)
                .filter_map(|p| {
                    let gap = (p[1].started_at? - p[0].ended_at?).num_microseconds()? as f64;
                    Some((gap / 1000.0, p[1].task_id.as_str()))
                })
                .collect();
            let slowest = gaps_in_order
                .iter()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map_or("", |g| g.1);
            let mut gaps: Vec<f64> = gaps_in_order.iter().map(|g| g.0).collect();
            gaps.sort_by(f64::total_cmp);
            let run_time = run_times(&tis);
            println!(
                "chain100 [{backend}]: trigger to success {:.3} s; gap end→next start median {:.2} ms (p90 {:.2} ms, max {:.2} ms, before {slowest}); task run median {:.2} ms",
                wall.as_secs_f64(),
                gaps[gaps.len() / 2],
                gaps[gaps.len() * 9 / 10],
                gaps[gaps.len() - 1],
                run_time[run_time.len() / 2],
            );
        }
        "python-chain" => {
            let run_time = run_times(&tis);
            // The interpreter itself, not a wrapper in front of it (pyenv's `python3` is a
            // shell script that costs ~50 ms before Python starts).
            let interpreter = std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .expect("python3");
            let mut bare: Vec<f64> = (0..20)
                .map(|_| {
                    let started = std::time::Instant::now();
                    let ok = std::process::Command::new(&interpreter)
                        .args(["-c", "pass"])
                        .status()
                        .is_ok_and(|s| s.success());
                    assert!(ok, "{interpreter} -c pass failed");
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            bare.sort_by(f64::total_cmp);
            let per_task = wall.as_secs_f64() * 1000.0 / tasks as f64;
            println!(
                "python-chain20 [{backend}]: trigger to success {:.3} s, {per_task:.1} ms a task; python task run median {:.1} ms; bare `{interpreter} -c pass` median {:.1} ms; overhead a task over it {:.1} ms (run), {:.1} ms (wall)",
                wall.as_secs_f64(),
                run_time[run_time.len() / 2],
                bare[bare.len() / 2],
                run_time[run_time.len() / 2] - bare[bare.len() / 2],
                per_task - bare[bare.len() / 2],
            );
        }
        _ => {
            let run_time = run_times(&tis);
            println!(
                "{what}{tasks} [{backend}]: {:.3} s, {:.0} tasks/s (concurrency {concurrency}); task run median {:.2} ms, p90 {:.2} ms",
                wall.as_secs_f64(),
                tasks as f64 / wall.as_secs_f64(),
                run_time[run_time.len() / 2],
                run_time[run_time.len() * 9 / 10],
            );
        }
    }
}

/// Triggers a manual run of `dag_id` and waits for its success; returns it with the trigger
/// time and the run's recorded end.
async fn run_and_wait(
    store: &Store,
    clock: &dyn Clock,
    dag_id: &str,
) -> (
    weir_store::RunRow,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
) {
    let triggered = chrono::Utc::now();
    let run = trigger(store, dag_id, &Default::default(), clock.now()).await;
    // Polled slowly so as not to load the machine under test; the run's own end time counts.
    let ended = loop {
        let r = store.run(&run.run_id).await.expect("run");
        if r.state.is_finished() {
            assert_eq!(
                r.state,
                weir_model::RunState::Success,
                "the {dag_id} run failed"
            );
            break r.ended_at.expect("a finished run has an end");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (run, triggered, ended)
}

fn chain_dag(n: usize) -> String {
    let mut s = String::from("id: bench\ntasks:\n");
    for i in 0..n {
        s.push_str(&format!("  t{i:03}:\n    kind: shell\n    run: \"true\"\n"));
        if i > 0 {
            s.push_str(&format!("    depends_on: [t{:03}]\n", i - 1));
        }
    }
    s
}

/// Each try's run (start to end) in milliseconds, sorted.
fn run_times(tis: &[weir_store::TaskInstanceRow]) -> Vec<f64> {
    let mut out: Vec<f64> = tis
        .iter()
        .filter_map(|t| Some((t.ended_at? - t.started_at?).num_microseconds()? as f64 / 1000.0))
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// A chain of `python` tasks with the same requirements (one environment), each a `pass`.
fn python_chain_dag(n: usize) -> String {
    let mut s = String::from("id: bench\ntasks:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  t{i:03}:\n    kind: python\n    requirements: [\"six==1.16.0\"]\n    script: pass\n"
        ));
        if i > 0 {
            s.push_str(&format!("    depends_on: [t{:03}]\n", i - 1));
        }
    }
    s
}

/// `step`: the flow-style body of each task.
fn fanout_dag(n: usize, step: &str) -> String {
    let mut s = String::from("id: bench\ntasks:\n");
    for i in 0..n {
        s.push_str(&format!("  t{i:04}: {step}\n"));
    }
    s
}
