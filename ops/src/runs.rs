//! The rows a new run starts with, and the params it takes: a DAG's declared params with a
//! trigger's overrides, each checked against its declaration. Pure.

use weir_model::param::ParamType;
use weir_model::schedule::DataInterval;
use weir_model::{Dag, RunType};
use weir_store::{NewRun, NewTaskInstance};

use crate::error::{OpsError, Result};

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
        triggered_by: None,
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
            return Err(OpsError::InvalidParam(format!(
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
            return Err(OpsError::InvalidParam(format!(
                "param `{key}` is {size} bytes; a param may hold at most {} KiB (a command line cannot take much more): pass large data through a file or a table",
                MAX_PARAM_BYTES / 1024
            )));
        }
        param.check(value).map_err(|e| {
            let mut shown = value.to_string();
            if shown.chars().count() > 80 {
                shown = shown.chars().take(80).collect::<String>() + "…";
            }
            OpsError::InvalidParam(format!("param `{key}` {e}, got {shown}"))
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
            return Err(OpsError::Invalid(format!(
                "--param `{pair}` is not key=value"
            )));
        };
        let value = match type_of(key) {
            None => serde_json::Value::String(text.to_owned()),
            Some(ty) => param_from_text(key, ty, text).map_err(OpsError::Invalid)?,
        };
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// A param's value from text (a `--param`, a form field), by the param's type: a string as
/// it is; a number, boolean, list or object as JSON; a param of any type (`None`) as JSON when
/// it parses, else as text.
///
/// # Errors
/// Text that is not a value of the type, naming the param.
pub fn param_from_text(
    key: &str,
    ty: Option<ParamType>,
    text: &str,
) -> Result<serde_json::Value, String> {
    match ty {
        Some(ParamType::String) => Ok(serde_json::Value::String(text.to_owned())),
        None => Ok(serde_json::from_str(text)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))),
        Some(ty) => serde_json::from_str(text)
            .map_err(|_| format!("param `{key}` is {}; `{text}` is not one", ty.described())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_testkit::dag;

    const DAILY: &str = "id: d\nschedule: \"0 6 * * *\"\nstart_date: 2024-01-01\ncatchup: true\nparams: {n: 1, name: x, full: false}\ntasks:\n  a: {kind: noop}\n";

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
