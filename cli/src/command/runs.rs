//! `weir trigger`, `weir backfill` (runs), `weir runs list|show`, `weir logs`, `weir clear`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use weir_model::{Dag, RunState, TaskState};
use weir_scheduler::SchedulerError;
use weir_scheduler::ops;
use weir_scheduler::plan::parse_param_overrides;
use weir_store::{RunFilter, RunRow, Store, TaskInstanceRow};
use weir_web::view::run_json;

use super::{EXIT_FAILED, EXIT_OK};
use crate::args::{BackfillArgs, ClearArgs, LogsArgs, TriggerArgs};
use crate::config::Config;
use crate::engine::{open_store, sync_dags};

/// How often `--wait` and `--follow` look at the database.
const POLL: Duration = Duration::from_millis(200);

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The DAG's latest version, from the store (synced from the folder first when it is here).
async fn latest_dag(store: &Store, config: &Config, dag_id: &str) -> Result<(i64, Dag)> {
    sync_dags(store, config).await?;
    ops::latest_dag(store, dag_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e} in {}", store.display_url()))
}

/// `--logical-date`: a date (midnight) or a date-time, in the DAG's time zone, or RFC 3339.
fn parse_logical_date(dag: &Dag, text: &str) -> Result<DateTime<Utc>> {
    weir_model::date::parse_date(text)
        .map(|d| d.resolve(dag.timezone))
        .map_err(|e| anyhow::anyhow!("--logical-date: {e}"))
}

/// Creates a manual run; with `--wait`, follows it to its end (exit 1 when it failed).
pub(crate) async fn trigger(config: &Config, args: &TriggerArgs) -> Result<u8> {
    let store = open_store(config).await?;
    let (_, dag) = latest_dag(&store, config, &args.dag).await?;
    let overrides = parse_param_overrides(&dag, &args.params)?;
    let now = crate::engine::clock().now();
    let logical_date = match &args.logical_date {
        Some(text) => Some(parse_logical_date(&dag, text)?),
        None => None,
    };
    let triggered = ops::trigger(&store, dag.id(), &overrides, logical_date, args.rerun, now)
        .await
        .map_err(|e| match e {
            SchedulerError::Conflict(m) => anyhow::anyhow!("{m}: pass --rerun to run it again"),
            other => other.into(),
        })?;
    let run = triggered.run;
    if triggered.rerun && !args.json {
        eprintln!("rerunning {}", run.run_id);
    }
    if !args.json {
        eprintln!(
            "triggered {} (logical date {})",
            run.run_id,
            rfc(run.logical_date)
        );
    }
    let run = if args.wait {
        wait_for(&store, &run.run_id, !args.json).await?
    } else {
        run
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run_json(&store, &run).await?)?
        );
    } else if args.wait {
        print_run(&store, &run).await?;
    }
    Ok(if args.wait && run.state != RunState::Success {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// Polls a run until it is finished, printing task state changes when `verbose`.
async fn wait_for(store: &Store, run_id: &str, verbose: bool) -> Result<RunRow> {
    let mut seen: std::collections::HashMap<(String, i32), TaskState> =
        std::collections::HashMap::new();
    loop {
        let run = store.run(run_id).await?;
        if verbose {
            for t in store.task_instances(run_id).await? {
                let key = (t.task_id.clone(), t.map_index);
                if seen.get(&key) != Some(&t.state) {
                    let label = if t.map_index >= 0 {
                        format!("{}[{}]", t.task_id, t.map_index)
                    } else {
                        t.task_id.clone()
                    };
                    eprintln!("  {label}: {}", t.state);
                    seen.insert(key, t.state);
                }
            }
        }
        if run.state.is_finished() {
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn print_run(store: &Store, run: &RunRow) -> Result<()> {
    let tasks = store.task_instances(&run.run_id).await?;
    let lines = tasks.into_iter().map(|t| TaskLine {
        took: match (t.started_at, t.ended_at) {
            (Some(s), Some(e)) => format!("{:.2}s", (e - s).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        },
        label: if t.map_index >= 0 {
            format!("{}[{}]", t.task_id, t.map_index)
        } else {
            t.task_id
        },
        state: t.state.as_str().to_owned(),
        try_number: i64::from(t.try_number),
        error: t.error,
    });
    let header = [
        run.run_id.as_str(),
        run.state.as_str(),
        run.dag_id.as_str(),
        run.run_type.as_str(),
        &rfc(run.logical_date),
    ];
    write_run(header, lines.collect())
}

/// A task instance's line under a run (`runs show`, `trigger --wait`, local or remote).
pub(crate) struct TaskLine {
    pub(crate) label: String,
    pub(crate) state: String,
    pub(crate) try_number: i64,
    /// How long its try took, in words (empty when unknown).
    pub(crate) took: String,
    pub(crate) error: Option<String>,
}

/// Prints a run: `[run_id, state, dag_id, run_type, logical_date]`, then a line a task.
pub(crate) fn write_run(header: [&str; 5], tasks: Vec<TaskLine>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let [run_id, state, dag_id, run_type, logical_date] = header;
    writeln!(
        out,
        "{run_id}  {state}  {dag_id} ({run_type}), logical date {logical_date}"
    )?;
    let width = tasks.iter().map(|t| t.label.len()).max().unwrap_or(0) + 4;
    for t in tasks {
        let error = t.error.map(|e| format!("  {e}")).unwrap_or_default();
        writeln!(
            out,
            "  {:<width$}  {:<15}  try {}  {}{error}",
            t.label, t.state, t.try_number, t.took
        )?;
    }
    Ok(())
}

/// `weir runs show RUN [--json]`.
pub(crate) async fn show(config: &Config, run_id: &str, json: bool) -> Result<u8> {
    let store = open_store(config).await?;
    let run = store.run(run_id).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run_json(&store, &run).await?)?
        );
    } else {
        print_run(&store, &run).await?;
    }
    Ok(EXIT_OK)
}

/// `weir runs list [DAG] [--state S] [--json]`.
pub(crate) async fn list(
    config: &Config,
    dag: Option<&str>,
    state: Option<&str>,
    json: bool,
) -> Result<u8> {
    let store = open_store(config).await?;
    let state = match state {
        Some(s) => Some(RunState::parse_or_list(s).map_err(|e| anyhow::anyhow!("--state {e}"))?),
        None => None,
    };
    let runs = store
        .list_runs(&RunFilter {
            dag_id: dag.map(str::to_owned),
            state,
            limit: 100,
            ..RunFilter::default()
        })
        .await?;
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.run_id, "dag_id": r.dag_id, "state": r.state.as_str(), "run_type": r.run_type.as_str(),
                    "logical_date": rfc(r.logical_date), "data_interval_start": rfc(r.data_interval_start),
                    "data_interval_end": rfc(r.data_interval_end),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(EXIT_OK);
    }
    for r in runs {
        writeln!(
            out,
            "{:<48}  {:<9}  {:<9}  {}",
            r.run_id,
            r.state.as_str(),
            r.run_type.as_str(),
            rfc(r.logical_date)
        )?;
    }
    Ok(EXIT_OK)
}

/// `weir logs RUN TASK [--try N] [--follow]`.
pub(crate) async fn logs(config: &Config, args: &LogsArgs) -> Result<u8> {
    let store = open_store(config).await?;
    let run = store.run(&args.run).await?;
    let instances: Vec<TaskInstanceRow> = store
        .task_instances(&run.run_id)
        .await?
        .into_iter()
        .filter(|t| t.task_id == args.task)
        .collect();
    if instances.is_empty() {
        bail!("run {} has no task `{}`", run.run_id, args.task);
    }
    let many = instances.len() > 1;
    let mut out = std::io::stdout().lock();
    for ti in instances {
        let try_number = args.try_number.map_or(ti.try_number.max(1), |n| {
            i32::try_from(n).unwrap_or(i32::MAX)
        });
        if many {
            writeln!(out, "== {}[{}] try {try_number}", ti.task_id, ti.map_index)?;
        }
        let mut after = 0;
        loop {
            let lines = store.logs(ti.id, try_number, after, 1000).await?;
            for l in &lines {
                writeln!(out, "{}", l.line)?;
                after = l.id;
            }
            out.flush()?;
            if !lines.is_empty() {
                continue;
            }
            let now = store.task_instance(ti.id).await?;
            if !args.follow || !now.still_logging(try_number) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(EXIT_OK)
}

/// `weir clear DAG --run RUN [--task T] [--downstream] [--failed-only]`.
pub(crate) async fn clear(config: &Config, args: &ClearArgs) -> Result<u8> {
    let store = open_store(config).await?;
    if args.reset_state {
        let forgotten = store
            .reset_incremental(&args.dag, args.task.as_deref())
            .await?;
        println!("forgot {forgotten} incremental cursor(s) of {}", args.dag);
    }
    let run = store.run(&args.run).await?;
    if run.dag_id != args.dag {
        bail!(
            "run {} belongs to DAG `{}`, not `{}`",
            run.run_id,
            run.dag_id,
            args.dag
        );
    }
    let selection = ops::ClearSelection {
        task_ids: args.task.iter().cloned().collect(),
        downstream: args.downstream,
        failed_only: args.failed_only,
        latest_version: args.latest_version,
    };
    let cleared = ops::clear(&store, &run, &selection).await?;
    println!("cleared {cleared} task instance(s) of {}", run.run_id);
    Ok(EXIT_OK)
}

/// `weir backfill DAG --from D --to D` (not dry-run): creates a backfill run per interval.
pub(crate) async fn backfill(config: &Config, args: &BackfillArgs) -> Result<u8> {
    let store = open_store(config).await?;
    let (version_id, dag) = latest_dag(&store, config, &args.dag).await?;
    let intervals = dag
        .plan_backfill(args.from, args.to)
        .map_err(|e| anyhow::anyhow!(e))?;
    if args.max_active_runs.is_some() && !args.wait {
        bail!("--max-active-runs paces a backfill as it runs: use it with --wait");
    }
    let limit = args.max_active_runs.map_or(usize::MAX, |n| {
        usize::try_from(n.max(1)).unwrap_or(usize::MAX)
    });
    let bar = if args.wait && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(intervals.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs finished  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let rerun = if args.rerun_all {
        ops::Rerun::All
    } else if args.rerun_failed {
        ops::Rerun::Failed
    } else {
        ops::Rerun::None
    };
    let mut pending: Vec<String> = Vec::new();
    let mut failed = 0;
    let mut done = ops::Backfilled::default();
    for interval in &intervals {
        while args.wait && pending.len() >= limit {
            pending = still_active(&store, pending, &bar, &mut failed).await?;
        }
        let now = crate::engine::clock().now();
        let one = ops::backfill(
            &store,
            &dag,
            version_id,
            std::slice::from_ref(interval),
            rerun,
            now,
        )
        .await?;
        done.created += one.created;
        done.rerun += one.rerun;
        done.kept += one.kept;
        pending.extend(one.run_ids.iter().cloned());
        done.run_ids.extend(one.run_ids);
    }
    let (created, rerun, kept, all) = (done.created, done.rerun, done.kept, done.run_ids);
    eprintln!(
        "backfill of `{}`: {} interval(s): {created} run(s) created, {rerun} rerun, {kept} existing kept",
        dag.id(),
        intervals.len()
    );
    if !args.wait {
        return Ok(EXIT_OK);
    }
    while !pending.is_empty() {
        pending = still_active(&store, pending, &bar, &mut failed).await?;
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    if args.json {
        let mut runs = Vec::new();
        for id in &all {
            runs.push(run_json(&store, &store.run(id).await?).await?);
        }
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    eprintln!("{} run(s) finished, {failed} failed", all.len());
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

async fn still_active(
    store: &Store,
    pending: Vec<String>,
    bar: &Option<indicatif::ProgressBar>,
    failed: &mut usize,
) -> Result<Vec<String>> {
    tokio::time::sleep(POLL).await;
    let mut left = Vec::new();
    for id in pending {
        let run = store.run(&id).await?;
        if run.state.is_finished() {
            if run.state != RunState::Success {
                *failed += 1;
            }
            if let Some(bar) = bar {
                bar.inc(1);
                bar.set_message(format!("{failed} failed"));
            }
        } else {
            left.push(id);
        }
    }
    Ok(left)
}

/// `--date` of `tasks test`: a date in the DAG's time zone, default today.
pub(crate) fn parse_test_date(dag: &Dag, text: Option<&str>) -> Result<DateTime<Utc>> {
    match text {
        Some(t) => weir_model::date::parse_date(t)
            .map(|d| d.resolve(dag.timezone))
            .map_err(|e| anyhow::anyhow!("--date: {e}")),
        None => {
            let today: NaiveDate = Utc::now().with_timezone(&dag.timezone).date_naive();
            Ok(weir_model::schedule::start_of_day(dag.timezone, today))
        }
    }
}
