//! What the pages and the API show, computed from store rows once for both: DAG summaries
//! (recent runs, next run, schedule in words) and the grid. The JSON shapes of runs and tasks
//! (SPEC §5) are `weir_ops::json`'s, shared with the CLI.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use weir_model::{Dag, Schedule};
use weir_ops::versions::Versions;
use weir_store::{DagRow, GridCell, RunBrief, Store};

use crate::error::WebError;

pub(crate) use weir_ops::json::rfc;
pub use weir_ops::json::{RunJson, RunSummary, TaskJson, run_json};

/// A recent run as the DAG list's dots show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDot {
    /// Run id.
    pub run_id: String,
    /// Run state.
    pub state: String,
    /// RFC 3339 UTC.
    pub logical_date: String,
}

/// A DAG as the list shows it; the first six fields are SPEC §5's `dags list --json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DagSummary {
    /// DAG id.
    pub dag_id: String,
    /// Cron expression or alias, as written.
    pub schedule: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// Whether the scheduler skips it.
    pub paused: bool,
    /// The file it was read from.
    pub file: String,
    /// The file's import error, when its last read failed (the last good version still runs).
    pub import_error: Option<String>,
    /// Since when no file defines the DAG, RFC 3339 UTC: it gets no new runs and cannot be
    /// triggered; its history is kept.
    pub removed_at: Option<String>,
    /// The schedule in words.
    pub schedule_words: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// When the next scheduled run is due (none when paused or unscheduled), RFC 3339 UTC.
    pub next_run: Option<String>,
    /// The newest runs, newest first.
    pub recent_runs: Vec<RunDot>,
}

/// How many runs the DAG list shows as dots.
pub(crate) const DOTS: i64 = 10;

/// Every DAG, with its recent runs and next run; plus import errors of files without a DAG.
pub(crate) async fn dag_summaries(
    store: &Store,
    versions: &Versions,
    now: DateTime<Utc>,
) -> Result<(Vec<DagSummary>, Vec<weir_store::ImportErrorRow>), WebError> {
    let dags = store.list_dags().await?;
    let errors = store.import_errors().await?;
    let error_of = |d: &DagRow| {
        errors
            .iter()
            .find(|e| e.file == d.file)
            .map(|e| e.message.clone())
    };
    let summaries = futures_util::future::join_all(
        dags.iter()
            .map(|d| dag_summary(store, versions, d, error_of(d), now)),
    )
    .await;
    Ok((summaries.into_iter().collect::<Result<_, _>>()?, errors))
}

/// One DAG as the list shows it.
pub(crate) async fn dag_summary(
    store: &Store,
    versions: &Versions,
    d: &DagRow,
    import_error: Option<String>,
    now: DateTime<Utc>,
) -> Result<DagSummary, WebError> {
    let (recent, version) = tokio::try_join!(
        async { Ok::<_, WebError>(store.recent_runs(&d.dag_id, 0, DOTS).await?) },
        async { Ok::<_, WebError>(versions.get(store, d.version_id).await?) },
    )?;
    let dag = &version.dag;
    Ok(DagSummary {
        dag_id: d.dag_id.clone(),
        schedule: d.schedule.clone(),
        timezone: d.timezone.clone(),
        paused: d.paused,
        file: d.file.clone(),
        import_error,
        removed_at: d.removed_at.map(rfc),
        schedule_words: dag_schedule_words(dag),
        description: dag.spec.description.clone(),
        tags: dag.spec.tags.clone(),
        next_run: if d.paused || d.removed_at.is_some() {
            None
        } else {
            next_run(dag, now)
        },
        recent_runs: recent.into_iter().map(dot).collect(),
    })
}

/// When the scheduler next creates a run: the first cron tick after now (and not before the
/// start date), unless that is past the end date.
fn next_run(dag: &Dag, now: DateTime<Utc>) -> Option<String> {
    let Some(Schedule::Cron(c)) = dag.schedule() else {
        return None;
    };
    let next = match dag.start_date {
        Some(start) if start > now => c.align_to_next(dag.timezone, start),
        _ => c.next_after(dag.timezone, now),
    }?;
    dag.end_date
        .is_none_or(|end| next <= end)
        .then(|| rfc(next))
}

fn dot(r: RunBrief) -> RunDot {
    RunDot {
        run_id: r.run_id,
        state: r.state,
        logical_date: rfc(r.logical_date),
    }
}

/// A DAG's schedule as people read it: the cron in words (with the assets it also waits for),
/// or the rule's summary for one on assets or files; `None` without a schedule.
pub(crate) fn dag_schedule_words(dag: &weir_model::Dag) -> Option<String> {
    dag.schedule()
        .map(schedule_words)
        .map(|w| match dag.asset_condition() {
            Some(a) => format!("{w}, once {} of its assets were updated", a.mode()),
            None => w,
        })
        .or_else(|| dag.spec.schedule.as_ref().map(|s| s.summary()))
}

/// A schedule in words, for the common shapes of cron; anything else as its expression.
pub(crate) fn schedule_words(s: &Schedule) -> String {
    let expr = match s {
        Schedule::Once => return "once, at the start date".to_owned(),
        Schedule::Cron(c) => c.expr.as_str(),
    };
    let alias = match expr {
        "@hourly" => Some("0 * * * *"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@monthly" => Some("0 0 1 * *"),
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        _ => None,
    };
    let fields: Vec<&str> = alias.unwrap_or(expr).split_whitespace().collect();
    let [min, hour, dom, month, dow] = fields[..] else {
        return expr.to_owned();
    };
    let num = |f: &str| f.parse::<u32>().ok();
    let at = match (num(min), num(hour)) {
        (Some(m), Some(h)) => Some(format!("at {h:02}:{m:02}")),
        _ => None,
    };
    let words = match (min, hour, dom, month, dow, &at) {
        (_, "*", "*", "*", "*", _) if num(min).is_some() => {
            Some(format!("every hour at minute {min}"))
        }
        (m, "*", "*", "*", "*", _) if m.starts_with("*/") => {
            Some(format!("every {} minutes", &m[2..]))
        }
        (_, _, "*", "*", "*", Some(at)) => Some(format!("every day {at}")),
        (_, _, "*", "*", "1-5", Some(at)) => Some(format!("every weekday {at}")),
        (_, _, "*", "*", d, Some(at)) if num(d).is_some_and(|d| d <= 7) => {
            const DAYS: [&str; 8] = [
                "Sunday",
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ];
            num(d).map(|d| format!("every {} {at}", DAYS[d as usize]))
        }
        (_, _, d, "*", "*", Some(at)) if num(d).is_some() => {
            Some(format!("on day {d} of every month {at}"))
        }
        (_, _, d, m, "*", Some(at)) if num(d).is_some() && num(m).is_some() => {
            Some(format!("every year on {m}/{d} (month/day) {at}"))
        }
        _ => None,
    };
    words.unwrap_or_else(|| format!("cron {expr}"))
}

/// How long ago `t` was at `now`, as people read it (`4m 05s ago`).
pub(crate) fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!("{} ago", human_duration(now - t))
}

/// A duration as people read it: `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub(crate) fn human_duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        // Tenths of a second, rounded (integer arithmetic: a float's formatting was 5 % of
        // a 3,000-cell grid's time).
        let tenths = (ms + 50) / 100;
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// How bad a task state is, for showing one state for a mapped task's instances (the worst).
fn badness(s: &str) -> u8 {
    match s {
        "failed" => 9,
        "upstream_failed" => 8,
        "up_for_retry" => 7,
        "running" => 6,
        "queued" => 5,
        "scheduled" => 4,
        "skipped" => 3,
        "success" => 2,
        _ => 1,
    }
}

/// The grid: runs (oldest left) × tasks (in dependency order).
#[derive(Debug, Serialize, ToSchema)]
pub struct Grid {
    /// Columns.
    pub runs: Vec<GridRun>,
    /// Rows.
    pub rows: Vec<GridRow>,
}

/// A grid column.
#[derive(Debug, Serialize, ToSchema)]
pub struct GridRun {
    /// Run id.
    pub run_id: String,
    /// Run state.
    pub state: String,
    /// Run type.
    pub run_type: String,
    /// RFC 3339 UTC.
    pub logical_date: String,
    /// The logical date as the column's label, in the DAG's time zone: `03-01` for a run at
    /// midnight, `03-01 06:00` otherwise.
    pub label: String,
    /// How long it took (or has been running), in words.
    pub duration: Option<String>,
}

/// A grid row: one task across the runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct GridRow {
    /// Task id.
    pub task_id: String,
    /// Its dependency depth (for indentation).
    pub level: usize,
    /// One per run, in the columns' order.
    pub cells: Vec<GridCellView>,
}

/// A grid cell.
#[derive(Debug, Serialize, ToSchema)]
pub struct GridCellView {
    /// Run id.
    pub run_id: String,
    /// The task's state in that run (the worst of a mapped task's instances); `none` when
    /// the run has no such task (it pinned another version).
    pub state: String,
    /// Try number (the highest of a mapped task's instances).
    pub try_number: i32,
    /// Instances (more than 1 for a mapped task).
    pub instances: usize,
    /// Duration in words.
    pub duration: Option<String>,
}

/// The newest `limit` runs of a DAG as a grid, tasks in the order of `dag`'s levels.
pub(crate) async fn grid(
    store: &Store,
    dag: &Dag,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Grid, WebError> {
    let (briefs, cells) = tokio::try_join!(
        store.recent_runs(dag.id(), 0, limit),
        store.grid_cells(dag.id(), limit)
    )?;
    let runs: Vec<GridRun> = briefs
        .iter()
        .rev()
        .map(|r| GridRun {
            run_id: r.run_id.clone(),
            state: r.state.clone(),
            run_type: r.run_type.clone(),
            logical_date: rfc(r.logical_date),
            label: {
                let local = r.logical_date.with_timezone(&dag.timezone);
                if local.time() == chrono::NaiveTime::MIN {
                    local.format("%m-%d").to_string()
                } else {
                    local.format("%m-%d %H:%M").to_string()
                }
            },
            duration: r
                .started_at
                .map(|s| human_duration(r.ended_at.unwrap_or(now) - s)),
        })
        .collect();
    let column: HashMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.run_id.as_str(), i))
        .collect();
    let mut by_task: HashMap<&str, Vec<Option<Vec<&GridCell>>>> = HashMap::new();
    for c in &cells {
        if let Some(&col) = column.get(c.run_id.as_str()) {
            let row = by_task
                .entry(c.task_id.as_str())
                .or_insert_with(|| vec![None; runs.len()]);
            row[col].get_or_insert_with(Vec::new).push(c);
        }
    }
    let mut rows = Vec::with_capacity(dag.tasks.len());
    for (level, ids) in dag.levels().iter().enumerate() {
        for id in ids {
            let slots = by_task.remove(id).unwrap_or_else(|| vec![None; runs.len()]);
            let cells = slots
                .into_iter()
                .zip(&runs)
                .map(|(slot, run)| cell_view(&run.run_id, slot.as_deref(), now))
                .collect();
            rows.push(GridRow {
                task_id: (*id).to_owned(),
                level,
                cells,
            });
        }
    }
    Ok(Grid { runs, rows })
}

fn cell_view(run_id: &str, instances: Option<&[&GridCell]>, now: DateTime<Utc>) -> GridCellView {
    let Some(instances) = instances.filter(|i| !i.is_empty()) else {
        return GridCellView {
            run_id: run_id.to_owned(),
            state: "none".to_owned(),
            try_number: 0,
            instances: 0,
            duration: None,
        };
    };
    let worst = instances
        .iter()
        .max_by_key(|c| badness(&c.state))
        .map_or("none", |c| c.state.as_str());
    let started = instances.iter().filter_map(|c| c.started_at).min();
    let ended = if instances.iter().all(|c| c.ended_at.is_some()) {
        instances.iter().filter_map(|c| c.ended_at).max()
    } else {
        None
    };
    GridCellView {
        run_id: run_id.to_owned(),
        state: worst.to_owned(),
        try_number: instances.iter().map(|c| c.try_number).max().unwrap_or(0),
        instances: instances.len(),
        duration: started.map(|s| human_duration(ended.unwrap_or(now) - s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(expr: &str) -> String {
        schedule_words(&weir_model::schedule::parse_schedule(expr).expect("schedule"))
    }

    #[test]
    fn common_schedules_read_as_words() {
        assert_eq!(words("@daily"), "every day at 00:00");
        assert_eq!(words("30 6 * * *"), "every day at 06:30");
        assert_eq!(words("0 9 * * 1"), "every Monday at 09:00");
        assert_eq!(words("0 9 * * 1-5"), "every weekday at 09:00");
        assert_eq!(words("15 * * * *"), "every hour at minute 15");
        assert_eq!(words("*/10 * * * *"), "every 10 minutes");
        assert_eq!(words("0 2 1 * *"), "on day 1 of every month at 02:00");
        assert_eq!(words("0 2 1,15 * *"), "cron 0 2 1,15 * *");
    }

    #[test]
    fn the_next_run_respects_start_and_end_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T05:00:00Z")
            .expect("now")
            .with_timezone(&Utc);
        let dag = |extra: &str| {
            weir_testkit::dag(&format!(
                "id: d\nschedule: '0 6 * * *'\ntimezone: Europe/Paris\n{extra}tasks:\n  a: {{kind: noop}}\n"
            ))
        };
        // 06:00 in Paris is now: the next tick is tomorrow's.
        assert_eq!(
            next_run(&dag("start_date: 2024-01-01\n"), now).as_deref(),
            Some("2026-11-23T05:00:00Z")
        );
        assert_eq!(
            next_run(&dag("start_date: 2030-01-01\n"), now).as_deref(),
            Some("2030-01-01T05:00:00Z")
        );
        assert_eq!(
            next_run(&dag("start_date: 2020-01-01\nend_date: 2021-01-01\n"), now),
            None
        );
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(human_duration(chrono::Duration::milliseconds(850)), "850ms");
        assert_eq!(
            human_duration(chrono::Duration::milliseconds(12_340)),
            "12.3s"
        );
        for (ms, words) in [
            (1_000, "1.0s"),
            (1_049, "1.0s"),
            (1_050, "1.1s"),
            (59_999, "60.0s"),
        ] {
            assert_eq!(human_duration(chrono::Duration::milliseconds(ms)), words);
        }
        assert_eq!(human_duration(chrono::Duration::seconds(245)), "4m 05s");
        assert_eq!(human_duration(chrono::Duration::seconds(7380)), "2h 03m");
    }
}
