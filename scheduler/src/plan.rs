//! Planning runs: which cron intervals are due, and the rows a new run starts with. Pure.

use chrono::{DateTime, Utc};
use weir_model::schedule::DataInterval;
use weir_model::{Dag, RunType, Schedule};
use weir_store::{NewRun, NewTaskInstance};

use crate::error::{Result, SchedulerError};

/// The most runs one scheduler pass creates for one DAG (catchup over a long gap proceeds over
/// several passes instead of one huge transaction).
pub const MAX_RUNS_PER_PASS: usize = 200;

/// The scheduled intervals of `dag` that are due at `now` and not yet created, given the
/// logical date of its last scheduled run: every one since then with `catchup`, else only the
/// latest. An interval is due once its end has passed (Airflow's data-interval semantics).
pub fn due_intervals(
    dag: &Dag,
    last_scheduled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DataInterval> {
    let (Some(schedule), Some(start_date)) = (dag.schedule(), dag.start_date) else {
        return Vec::new();
    };
    let cron = match schedule {
        Schedule::Once => {
            let due = last_scheduled.is_none()
                && start_date <= now
                && dag.end_date.is_none_or(|e| start_date <= e);
            return if due {
                vec![DataInterval {
                    start: start_date,
                    end: start_date,
                }]
            } else {
                Vec::new()
            };
        }
        Schedule::Cron(cron) => cron,
    };
    let tz = dag.timezone;
    let first = match last_scheduled {
        Some(last) => cron.next_after(tz, last),
        None => cron.align_to_next(tz, start_date),
    };
    let Some(first) = first else {
        return Vec::new();
    };
    let within_end = |t: DateTime<Utc>| dag.end_date.is_none_or(|e| t <= e);
    if dag.spec.catchup {
        // At most `max_catchup_runs` missed intervals, the latest ones.
        let first = cron.catchup_start(tz, first, now, dag.spec.max_catchup_runs as usize);
        let mut out = Vec::new();
        let mut tick = Some(first);
        while let Some(start) = tick.filter(|t| within_end(*t)) {
            let Some(end) = cron.next_after(tz, start).filter(|e| *e <= now) else {
                break;
            };
            out.push(DataInterval { start, end });
            if out.len() == MAX_RUNS_PER_PASS {
                break;
            }
            tick = Some(end);
        }
        return out;
    }
    // Without catchup only the latest complete interval counts. Look back over a window that
    // doubles until it holds one, so a long gap costs a few steps, not one per missed tick.
    let mut window = chrono::Duration::hours(1);
    loop {
        let from = (now - window).max(first);
        let mut latest = None;
        let mut tick = cron.align_to_next(tz, from);
        while let Some(start) = tick {
            match cron.next_after(tz, start) {
                Some(end) if end <= now => {
                    latest = Some(DataInterval { start, end });
                    tick = Some(end);
                }
                _ => break,
            }
        }
        if let Some(latest) = latest.filter(|i| within_end(i.start)) {
            return vec![latest];
        }
        if from <= first || window > chrono::Duration::days(800) {
            return Vec::new();
        }
        window = window * 2;
    }
}

/// The rows of a new run of `dag` pinned to `version_id`: one instance per task.
///
/// # Errors
/// Param overrides that do not fit the DAG's params.
pub fn new_run(
    dag: &Dag,
    version_id: i64,
    run_type: RunType,
    interval: DataInterval,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<NewRun> {
    let params = apply_params(dag, overrides)?;
    let tasks = dag.tasks.values().map(new_instance).collect();
    Ok(NewRun {
        dag_id: dag.id().to_owned(),
        version_id,
        run_type,
        logical_date: interval.start,
        data_interval_start: interval.start,
        data_interval_end: interval.end,
        params,
        timezone: dag.timezone.name().to_owned(),
        tasks,
    })
}

/// A new instance of `task` (all its tries ahead).
pub fn new_instance(task: &weir_model::Task) -> NewTaskInstance {
    NewTaskInstance {
        task_id: task.id.clone(),
        max_tries: i32::try_from(task.retry.retries)
            .unwrap_or(i32::MAX - 1)
            .saturating_add(1),
        queue: task.queue.clone(),
        pool: task.pool.clone(),
        priority: task.priority,
    }
}

/// The largest value one param may take (as JSON): rendered into a command line, a larger one
/// would fail the try with `Argument list too long` (Linux takes 128 KiB per argument).
pub const MAX_PARAM_BYTES: usize = 64 * 1024;

/// The DAG's params with `overrides` applied; an override must name a param and have its
/// default's type (a number where the default is a number, ...).
///
/// # Errors
/// An unknown param, a value of the wrong type or one over [`MAX_PARAM_BYTES`], naming it.
pub fn apply_params(
    dag: &Dag,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut params: serde_json::Map<String, serde_json::Value> = dag
        .spec
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in overrides {
        let Some(default) = params.get(key) else {
            let known: Vec<&str> = dag.spec.params.keys().map(String::as_str).collect();
            let hint = weir_model::suggest::did_you_mean(key, known.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(SchedulerError::InvalidParam(format!(
                "DAG `{}` has no param `{key}`{hint}; its params: {}",
                dag.id(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        };
        let size = value.to_string().len();
        if size > MAX_PARAM_BYTES {
            return Err(SchedulerError::InvalidParam(format!(
                "param `{key}` is {size} bytes; a param may hold at most {} KiB (a command line cannot take much more): pass large data through a file or a table",
                MAX_PARAM_BYTES / 1024
            )));
        }
        if json_type(default) != json_type(value) && !default.is_null() {
            return Err(SchedulerError::InvalidParam(format!(
                "param `{key}` is {} (its default is {default}), got {value}",
                json_type(default)
            )));
        }
        params.insert(key.clone(), value.clone());
    }
    Ok(serde_json::Value::Object(params))
}

/// Parses `--param key=value` text by the type of the param's default: numbers, booleans,
/// lists and objects as JSON, strings as they are.
///
/// # Errors
/// A malformed pair or a value that does not parse as the default's type.
pub fn parse_param_overrides(
    dag: &Dag,
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    parse_param_pairs(|key| dag.spec.params.get(key), pairs)
}

/// [`parse_param_overrides`] with the params' defaults looked up by `default_of` (a remote
/// DAG's, read from the API).
///
/// # Errors
/// A malformed pair or a value that does not parse as the default's type.
pub fn parse_param_pairs<'a>(
    default_of: impl Fn(&str) -> Option<&'a serde_json::Value>,
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let Some((key, text)) = pair.split_once('=') else {
            return Err(SchedulerError::Invalid(format!(
                "--param `{pair}` is not key=value"
            )));
        };
        let value = match default_of(key) {
            Some(serde_json::Value::String(_)) | None => serde_json::Value::String(text.to_owned()),
            Some(default) => serde_json::from_str(text).map_err(|_| {
                SchedulerError::Invalid(format!(
                    "param `{key}` is {} (its default is {default}); `{text}` is not one",
                    json_type(default)
                ))
            })?,
        };
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_testkit::dag;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    const DAILY: &str = "id: d\nschedule: \"0 6 * * *\"\nstart_date: 2024-01-01\ncatchup: true\nparams: {n: 1, name: x, full: false}\ntasks:\n  a: {kind: noop}\n";

    #[test]
    fn catchup_creates_every_missed_interval_once_it_has_ended() {
        let d = dag(DAILY);
        let due = due_intervals(&d, None, t("2024-01-04T05:00:00Z"));
        assert_eq!(
            due.iter().map(|i| i.start).collect::<Vec<_>>(),
            [t("2024-01-01T06:00:00Z"), t("2024-01-02T06:00:00Z")]
        );
        let next = due_intervals(
            &d,
            Some(t("2024-01-02T06:00:00Z")),
            t("2024-01-04T06:00:00Z"),
        );
        assert_eq!(
            next.iter().map(|i| i.start).collect::<Vec<_>>(),
            [t("2024-01-03T06:00:00Z")]
        );
    }

    #[test]
    fn without_catchup_only_the_latest_interval_is_created() {
        let d = dag(&DAILY.replace("catchup: true", "catchup: false"));
        let due = due_intervals(&d, None, t("2024-06-10T12:00:00Z"));
        assert_eq!(
            due,
            vec![DataInterval {
                start: t("2024-06-09T06:00:00Z"),
                end: t("2024-06-10T06:00:00Z")
            }]
        );
        let hourly = dag(
            "id: h\nschedule: \"@hourly\"\nstart_date: 2020-01-01\ntasks:\n  a: {kind: noop}\n",
        );
        let due = due_intervals(
            &hourly,
            Some(t("2020-01-01T00:00:00Z")),
            t("2024-06-10T12:30:00Z"),
        );
        assert_eq!(
            due,
            vec![DataInterval {
                start: t("2024-06-10T11:00:00Z"),
                end: t("2024-06-10T12:00:00Z")
            }]
        );
    }

    #[test]
    fn param_overrides_are_typed_by_their_defaults() {
        let d = dag(DAILY);
        let o = parse_param_overrides(&d, &["n=5".into(), "name=7".into(), "full=true".into()])
            .expect("parse");
        let params = apply_params(&d, &o).expect("apply");
        assert_eq!(
            params,
            serde_json::json!({"n": 5, "name": "7", "full": true})
        );
        assert!(parse_param_overrides(&d, &["n=five".into()]).is_err());
        let err = apply_params(
            &d,
            &serde_json::Map::from_iter([("nme".to_owned(), serde_json::json!("y"))]),
        )
        .expect_err("unknown");
        assert!(err.to_string().contains("did you mean `name`"), "{err}");
    }
}
