//! `weir backfill --dry-run`: the data intervals a backfill would create runs for.

use std::io::Write;

use anyhow::{Result, bail};
use chrono::SecondsFormat;
use serde::Serialize;

use super::EXIT_OK;
use crate::args::BackfillArgs;
use crate::config::Config;
use weir_scheduler::folder::{find_dag, load_dag_files};

/// One interval of `weir backfill --dry-run --json` (SPEC §5).
#[derive(Serialize)]
struct IntervalRow {
    logical_date: String,
    data_interval_start: String,
    data_interval_end: String,
}

/// Lists the intervals whose logical date falls on `--from..=--to` (DAG time zone).
pub(crate) fn dry_run(config: &Config, args: &BackfillArgs) -> Result<u8> {
    let files = load_dag_files(
        std::slice::from_ref(&config.dags_folder),
        Some(&config.known()),
    )?;
    let (from, to) = super::runs::backfill_days(args)?;
    let (_, dag) = find_dag(&files, &args.dag)?;
    let intervals = match dag.plan_backfill(from, to) {
        Ok(i) => i,
        Err(e) => bail!("{e}"),
    };
    for note in dag.backfill_notes(from, to) {
        eprintln!("note: {note}");
    }
    print_intervals(dag, &intervals, args.json, Some((from, to)))
}

/// Prints intervals as `--dry-run` does (`--json`: a list of rows).
pub(crate) fn print_intervals(
    dag: &weir_model::Dag,
    intervals: &[weir_model::DataInterval],
    json: bool,
    days: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
) -> Result<u8> {
    let utc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<IntervalRow> = intervals
            .iter()
            .map(|i| IntervalRow {
                logical_date: utc(i.start),
                data_interval_start: utc(i.start),
                data_interval_end: utc(i.end),
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(EXIT_OK);
    }
    let tz = dag.timezone;
    let local = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
    };
    let range = days.map_or_else(String::new, |(from, to)| {
        format!(", logical dates {from} to {to}")
    });
    writeln!(
        out,
        "{} interval(s) of `{}` ({}){range}:",
        intervals.len(),
        dag.id(),
        tz.name(),
    )?;
    for i in intervals {
        writeln!(
            out,
            "  {}  [{} .. {})",
            utc(i.start),
            local(i.start),
            local(i.end)
        )?;
    }
    Ok(EXIT_OK)
}
