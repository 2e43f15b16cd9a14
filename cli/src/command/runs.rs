//! `weir trigger`, `weir backfill` (runs), `weir runs list|show`, `weir logs`, `weir clear`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use weir_model::{Dag, RunState, TaskState};
use weir_ops::OpsError;
use weir_ops::actions as ops;
use weir_ops::json::run_json;
use weir_ops::operator::{self, Actor};
use weir_ops::runs::parse_param_overrides;
use weir_store::{RunFilter, RunRow, Store, TaskInstanceRow};

use super::{EXIT_FAILED, EXIT_OK};
use crate::args::{BackfillArgs, ClearArgs, LogsArgs, Page, TriggerArgs};
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
    let actor = crate::audit::actor();
    let triggered = operator::trigger(
        &store,
        Actor(&actor),
        dag.id(),
        &overrides,
        logical_date,
        args.rerun,
        now,
    )
    .await
    .map_err(|e| match e {
        OpsError::Conflict(m) => anyhow::anyhow!("{m}: pass --rerun to run it again"),
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

/// Polls a run until it is finished, printing task state changes when `verbose`, in the order
/// they happened.
async fn wait_for(store: &Store, run_id: &str, verbose: bool) -> Result<RunRow> {
    let mut seen: std::collections::HashMap<(String, i32), TaskState> =
        std::collections::HashMap::new();
    loop {
        let run = store.run(run_id).await?;
        if verbose {
            let mut changes: Vec<(Option<DateTime<Utc>>, String, TaskState)> = Vec::new();
            for t in store.task_instances(run_id).await? {
                let key = (t.task_id.clone(), t.map_index);
                if seen.get(&key) != Some(&t.state) {
                    // When the instance reached its state, as far as the row tells.
                    let at = t.ended_at.or(t.started_at).or(t.queued_at);
                    changes.push((at, label(&t.task_id, t.map_index), t.state));
                    seen.insert(key, t.state);
                }
            }
            changes.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
            for (_, label, state) in changes {
                eprintln!("  {label}: {state}");
            }
        }
        if run.state.is_finished() {
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `task` or `task[3]` for an instance of a mapped task.
pub(crate) fn label(task_id: &str, map_index: i32) -> String {
    if map_index >= 0 {
        format!("{task_id}[{map_index}]")
    } else {
        task_id.to_owned()
    }
}

async fn print_run(store: &Store, run: &RunRow) -> Result<()> {
    let tasks = store.task_instances(&run.run_id).await?;
    let lines = tasks
        .into_iter()
        .map(|t| TaskLine {
            label: label(&t.task_id, t.map_index),
            task_id: t.task_id,
            state: t.state.as_str().to_owned(),
            try_number: i64::from(t.try_number),
            started: t.started_at,
            ended: t.ended_at,
            error: t.error,
        })
        .collect();
    write_run(
        &RunHeader {
            run_id: run.run_id.clone(),
            state: run.state.as_str().to_owned(),
            dag_id: run.dag_id.clone(),
            run_type: run.run_type.as_str().to_owned(),
            logical_date: run.logical_date,
            timezone: run.timezone.clone(),
            started: run.started_at,
            ended: run.ended_at,
        },
        lines,
    )
}

/// A run's first line (`runs show`, `trigger --wait`, local or remote).
pub(crate) struct RunHeader {
    pub(crate) run_id: String,
    pub(crate) state: String,
    pub(crate) dag_id: String,
    pub(crate) run_type: String,
    pub(crate) logical_date: DateTime<Utc>,
    pub(crate) timezone: String,
    pub(crate) started: Option<DateTime<Utc>>,
    pub(crate) ended: Option<DateTime<Utc>>,
}

/// A task instance's line under a run.
pub(crate) struct TaskLine {
    pub(crate) task_id: String,
    pub(crate) label: String,
    pub(crate) state: String,
    pub(crate) try_number: i64,
    pub(crate) started: Option<DateTime<Utc>>,
    pub(crate) ended: Option<DateTime<Utc>>,
    pub(crate) error: Option<String>,
}

/// A logical date as the CLI shows it: in the DAG's zone, with UTC beside it.
pub(crate) fn logical(t: DateTime<Utc>, timezone: &str) -> String {
    match timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) if tz != chrono_tz::Tz::UTC => format!(
            "{} ({})",
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
            rfc(t)
        ),
        _ => rfc(t),
    }
}

/// How long something took, or has been running.
pub(crate) fn took(started: Option<DateTime<Utc>>, ended: Option<DateTime<Utc>>) -> String {
    match (started, ended) {
        (Some(s), Some(e)) => words((e - s).to_std().unwrap_or_default()),
        (Some(s), None) => format!(
            "{} so far",
            words((Utc::now() - s).to_std().unwrap_or_default())
        ),
        _ => String::new(),
    }
}

/// Prints a run, then a line a task in the order they started; a failed run ends with how
/// to read the failed tasks' logs.
pub(crate) fn write_run(run: &RunHeader, mut tasks: Vec<TaskLine>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}  {}  {} ({}), logical date {}{}",
        run.run_id,
        run.state,
        run.dag_id,
        run.run_type,
        logical(run.logical_date, &run.timezone),
        match took(run.started, run.ended) {
            t if t.is_empty() => String::new(),
            t => format!(", took {t}"),
        }
    )?;
    tasks.sort_by(|a, b| {
        (a.started.is_none(), a.started, &a.label).cmp(&(b.started.is_none(), b.started, &b.label))
    });
    let width = tasks.iter().map(|t| t.label.len()).max().unwrap_or(0);
    for t in &tasks {
        let error = t
            .error
            .as_ref()
            .map(|e| format!("  {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<width$}  {:<15}  try {}  {}{error}",
            t.label,
            t.state,
            t.try_number,
            took(t.started, t.ended)
        )?;
    }
    let failed: Vec<&TaskLine> = tasks.iter().filter(|t| t.state == "failed").collect();
    if !failed.is_empty() {
        writeln!(out, "logs of what failed:")?;
        for t in failed {
            writeln!(out, "  weir logs {} {}", run.run_id, t.task_id)?;
        }
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

/// `weir runs list [DAG] [--state S] [--limit N] [--offset N] [--json]`.
pub(crate) async fn list(
    config: &Config,
    dag: Option<&str>,
    state: Option<&str>,
    page: &Page,
    json: bool,
) -> Result<u8> {
    let state = match state {
        Some(s) => Some(RunState::parse_or_list(s).map_err(|e| anyhow::anyhow!("--state {e}"))?),
        None => None,
    };
    let store = open_store(config).await?;
    if let Some(dag) = dag {
        // An unknown DAG is an error, as everywhere, not an empty list.
        latest_dag(&store, config, dag).await?;
    }
    let filter = RunFilter {
        dag_id: dag.map(str::to_owned),
        state,
        limit: i64::from(page.limit.max(1)),
        offset: i64::from(page.offset),
    };
    let (runs, total) = tokio::try_join!(store.list_runs(&filter), store.count_runs(&filter))?;
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.run_id, "dag_id": r.dag_id, "state": r.state.as_str(), "run_type": r.run_type.as_str(),
                    "logical_date": rfc(r.logical_date), "data_interval_start": rfc(r.data_interval_start),
                    "data_interval_end": rfc(r.data_interval_end),
                    "started_at": r.started_at.map(rfc), "ended_at": r.ended_at.map(rfc),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        let rows: Vec<RunListLine> = runs
            .iter()
            .map(|r| RunListLine {
                run_id: r.run_id.clone(),
                state: r.state.as_str().to_owned(),
                run_type: r.run_type.as_str().to_owned(),
                logical: logical(r.logical_date, &r.timezone),
                started: r.started_at.map(rfc).unwrap_or_default(),
                took: took(r.started_at, r.ended_at),
            })
            .collect();
        write_run_list(&mut out, &rows)?;
    }
    say_page(runs.len(), total, page);
    Ok(EXIT_OK)
}

/// One line of `runs list`.
pub(crate) struct RunListLine {
    pub(crate) run_id: String,
    pub(crate) state: String,
    pub(crate) run_type: String,
    pub(crate) logical: String,
    pub(crate) started: String,
    pub(crate) took: String,
}

/// The runs as aligned columns under a header.
pub(crate) fn write_run_list(out: &mut impl Write, rows: &[RunListLine]) -> Result<()> {
    let w = |f: &dyn Fn(&RunListLine) -> usize, min: usize| {
        rows.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (id, logical, started) = (
        w(&|r| r.run_id.len(), 6),
        w(&|r| r.logical.len(), 12),
        w(&|r| r.started.len(), 7),
    );
    writeln!(
        out,
        "{:<id$}  {:<9}  {:<9}  {:<logical$}  {:<started$}  DURATION",
        "RUN ID", "STATE", "TYPE", "LOGICAL DATE", "STARTED"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<id$}  {:<9}  {:<9}  {:<logical$}  {:<started$}  {}",
            r.run_id, r.state, r.run_type, r.logical, r.started, r.took
        )?;
    }
    Ok(())
}

/// Says on stderr which rows a page shows, and how to get the next.
pub(crate) fn say_page(shown: usize, total: i64, page: &Page) {
    let first = i64::from(page.offset) + 1;
    let last = i64::from(page.offset) + shown as i64;
    if shown == 0 {
        eprintln!(
            "no runs{}",
            if total > 0 {
                format!(" past --offset {} ({total} in all)", page.offset)
            } else {
                String::new()
            }
        );
    } else if last < total {
        eprintln!("runs {first}-{last} of {total}, newest first; the next page: --offset {last}");
    } else {
        eprintln!("runs {first}-{last} of {total}, newest first");
    }
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
        bail!("no task `{}` in run `{}`", args.task, run.run_id);
    }
    let instances: Vec<TaskInstanceRow> = match args.map_index {
        Some(m) => {
            let one: Vec<TaskInstanceRow> =
                instances.into_iter().filter(|t| t.map_index == m).collect();
            if one.is_empty() {
                bail!(
                    "no instance {m} of task `{}` in run `{}`",
                    args.task,
                    run.run_id
                );
            }
            one
        }
        None => instances,
    };
    if let Some(n) = args.try_number
        && let Some(ti) = instances
            .iter()
            .find(|t| i64::from(n) > i64::from(t.try_number.max(1)))
    {
        bail!(
            "no try {n} of task `{}` in run `{}`: it has had {}",
            label(&ti.task_id, ti.map_index),
            run.run_id,
            ti.try_number
        );
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
    let actor = crate::audit::actor();
    let now = crate::engine::clock().now();
    if args.reset_state {
        let task = args.task.as_deref();
        let forgotten =
            operator::reset_incremental(&store, Actor(&actor), &args.dag, task, now).await?;
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
    let cleared = operator::clear(&store, Actor(&actor), &run, &selection, now).await?;
    println!("cleared {cleared} task instance(s) of {}", run.run_id);
    Ok(EXIT_OK)
}

/// `--from`/`--to` of a backfill: whole days, read by the one date parser every command uses
/// (a time of day is refused: a backfill covers days).
pub(crate) fn parse_day(flag: &str, text: &str) -> Result<NaiveDate> {
    match weir_model::date::parse_date(text) {
        Ok(weir_model::date::DateSpec::Date(d)) => Ok(d),
        Ok(_) => bail!(
            "{flag}: `{text}` has a time of day; a backfill covers whole days: write `2024-03-01`"
        ),
        Err(e) => bail!("{flag}: {e}"),
    }
}

/// The days of a backfill, `--from` to `--to`.
pub(crate) fn backfill_days(args: &BackfillArgs) -> Result<(NaiveDate, NaiveDate)> {
    Ok((
        parse_day("--from", &args.from)?,
        parse_day("--to", &args.to)?,
    ))
}

/// `weir backfill DAG --from D --to D` (not dry-run): creates a backfill run per interval.
pub(crate) async fn backfill(config: &Config, args: &BackfillArgs) -> Result<u8> {
    let (from, to) = backfill_days(args)?;
    if args.max_active_runs.is_some() && !args.wait {
        bail!("--max-active-runs paces a backfill as it runs: use it with --wait");
    }
    let store = open_store(config).await?;
    let (version_id, dag) = latest_dag(&store, config, &args.dag).await?;
    let params = parse_param_overrides(&dag, &args.params)?;
    let mut intervals = dag
        .plan_backfill(from, to)
        .map_err(|e| anyhow::anyhow!(e))?;
    for note in dag.backfill_notes(from, to) {
        eprintln!("note: {note}");
    }
    if args.missing {
        let all = intervals.len();
        intervals = ops::missing_intervals(&store, &dag, &intervals).await?;
        eprintln!(
            "{} of {all} interval(s) never materialized",
            intervals.len()
        );
        if args.dry_run {
            super::backfill::print_intervals(&dag, &intervals, args.json, Some((from, to)))?;
            store.close().await;
            return Ok(EXIT_OK);
        }
    }
    let limit = args.max_active_runs.map_or(usize::MAX, |n| {
        usize::try_from(n.max(1)).unwrap_or(usize::MAX)
    });
    let bar = if args.wait && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(intervals.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} runs finished  {msg}  {elapsed} elapsed, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let rerun = if args.rerun_all {
        ops::Rerun::All
    } else if args.rerun_failed || args.missing {
        ops::Rerun::Failed
    } else {
        ops::Rerun::None
    };
    let started = std::time::Instant::now();
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
            &params,
            now,
        )
        .await?;
        done.created += one.created;
        done.rerun += one.rerun;
        done.kept += one.kept;
        pending.extend(one.run_ids.iter().cloned());
        done.run_ids.extend(one.run_ids);
    }
    let (created, reran, kept, all) = (done.created, done.rerun, done.kept, done.run_ids);
    let request = operator::BackfillRequest {
        from,
        to,
        rerun,
        params: &params,
    };
    let actor = crate::audit::actor();
    let now = crate::engine::clock().now();
    operator::record_backfill(&store, Actor(&actor), dag.id(), &request, all.len(), now).await?;
    eprintln!(
        "backfill of `{}`: {} interval(s): {created} run(s) created, {reran} rerun, {kept} existing kept",
        dag.id(),
        intervals.len()
    );
    if args.wait {
        while !pending.is_empty() {
            pending = still_active(&store, pending, &bar, &mut failed).await?;
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
    }
    if args.json {
        let mut runs = Vec::new();
        for id in &all {
            runs.push(run_json(&store, &store.run(id).await?).await?);
        }
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    if !args.wait {
        return Ok(EXIT_OK);
    }
    eprintln!(
        "{} run(s) finished in {}, {failed} failed",
        all.len(),
        words(started.elapsed())
    );
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// A duration in words: `850ms`, `12.4s`, `3m 05s`, `2h 10m`.
pub(crate) fn words(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", d.as_secs_f64()),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms / 1_000) % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
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
