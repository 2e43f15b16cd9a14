//! Planning runs: which cron intervals are due, and the rows a new run starts with. Pure.

use chrono::{DateTime, Utc};
use weir_model::param::ParamType;
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

/// The DAG's params with `overrides` applied; an override must name a param and be a value
/// the param's declaration allows (its type: the default's or `type`; `enum`, `pattern`,
/// `max_length`, `min`, `max`).
///
/// # Errors
/// An unknown param, a value the param does not allow or one over [`MAX_PARAM_BYTES`],
/// naming it.
pub fn apply_params(
    dag: &Dag,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut params: serde_json::Map<String, serde_json::Value> = dag
        .params
        .iter()
        .map(|(k, p)| (k.clone(), p.default.clone()))
        .collect();
    for (key, value) in overrides {
        let Some(param) = dag.params.get(key) else {
            let known: Vec<&str> = dag.params.keys().map(String::as_str).collect();
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
        param.check(value).map_err(|e| {
            let mut shown = value.to_string();
            if shown.chars().count() > 80 {
                shown = shown.chars().take(80).collect::<String>() + "…";
            }
            SchedulerError::InvalidParam(format!("param `{key}` {e}, got {shown}"))
        })?;
        params.insert(key.clone(), value.clone());
    }
    Ok(serde_json::Value::Object(params))
}

/// Parses `--param key=value` text by the param's type: strings as they are; numbers,
/// booleans, lists and objects as JSON; a param of any type as JSON when it parses, else as
/// text.
///
/// # Errors
/// A malformed pair or a value that does not parse as the param's type.
pub fn parse_param_overrides(
    dag: &Dag,
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    parse_param_pairs(|key| dag.params.get(key).map(|p| p.ty), pairs)
}

/// [`parse_param_overrides`] with the params' types looked up by `type_of` (a remote DAG's,
/// read from the API): `None` for a name the DAG does not have (taken as text: the server
/// refuses it by name), `Some(None)` for a param of any type.
///
/// # Errors
/// A malformed pair or a value that does not parse as the param's type.
pub fn parse_param_pairs(
    type_of: impl Fn(&str) -> Option<Option<ParamType>>,
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let Some((key, text)) = pair.split_once('=') else {
            return Err(SchedulerError::Invalid(format!(
                "--param `{pair}` is not key=value"
            )));
        };
        let value = match type_of(key) {
            None | Some(Some(ParamType::String)) => serde_json::Value::String(text.to_owned()),
            Some(None) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
            Some(Some(ty)) => serde_json::from_str(text).map_err(|_| {
                SchedulerError::Invalid(format!(
                    "param `{key}` is {}; `{text}` is not one",
                    ty.described()
                ))
            })?,
        };
        out.insert(key.to_owned(), value);
    }
    Ok(out)
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
