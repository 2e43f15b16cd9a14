//! The JSON shapes of runs and task instances (SPEC §5): what `weir runs show --json` prints
//! and the API answers, from one definition.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use weir_store::{RunRow, Store, TaskInstanceRow};

/// RFC 3339 UTC, seconds.
pub fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 UTC with milliseconds: when tries start and end (a task's duration is often
/// under a second).
pub fn rfc_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A run as `weir runs show --json` prints it (SPEC §5): the run's fields (with its start
/// and end, which SPEC §5 allows to add) and its task instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunJson {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Its task instances, in the DAG's order.
    pub tasks: Vec<TaskJson>,
}

/// A task instance in a [`RunJson`].
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskJson {
    /// Task id.
    pub task_id: String,
    /// -1 unless it is one instance of a `foreach` task.
    pub map_index: i32,
    /// Task instance state.
    pub state: String,
    /// The try running or last run (0 before the first).
    pub try_number: i32,
    /// RFC 3339 UTC, with milliseconds.
    pub started_at: Option<String>,
    /// RFC 3339 UTC, with milliseconds.
    pub ended_at: Option<String>,
    /// Outputs of the last successful try.
    #[schema(value_type = Object)]
    pub outputs: serde_json::Value,
    /// Why the last try failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The DAG version its last try ran (none before the first try).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<i64>,
}

impl From<TaskInstanceRow> for TaskJson {
    fn from(t: TaskInstanceRow) -> TaskJson {
        TaskJson {
            task_id: t.task_id,
            map_index: t.map_index,
            state: t.state.as_str().to_owned(),
            try_number: t.try_number,
            started_at: t.started_at.map(rfc_ms),
            ended_at: t.ended_at.map(rfc_ms),
            outputs: t.outputs.unwrap_or_else(|| serde_json::json!({})),
            error: t.error,
            version_id: t.version_id,
        }
    }
}

/// A run without its tasks (run lists).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// DAG id.
    pub dag_id: String,
    /// Run state.
    pub state: String,
    /// Run type.
    pub run_type: String,
    /// RFC 3339 UTC.
    pub logical_date: String,
    /// RFC 3339 UTC.
    pub data_interval_start: String,
    /// RFC 3339 UTC.
    pub data_interval_end: String,
    /// RFC 3339 UTC, with milliseconds.
    pub started_at: Option<String>,
    /// RFC 3339 UTC, with milliseconds.
    pub ended_at: Option<String>,
    /// The DAG version the run pins (a clear on the latest version moves it).
    pub version_id: i64,
    /// The DAG's IANA time zone: `ds` is the logical date's day in it.
    pub timezone: String,
}

impl From<&RunRow> for RunSummary {
    fn from(r: &RunRow) -> RunSummary {
        RunSummary {
            run_id: r.run_id.clone(),
            dag_id: r.dag_id.clone(),
            state: r.state.as_str().to_owned(),
            run_type: r.run_type.as_str().to_owned(),
            logical_date: rfc(r.logical_date),
            data_interval_start: rfc(r.data_interval_start),
            data_interval_end: rfc(r.data_interval_end),
            started_at: r.started_at.map(rfc_ms),
            ended_at: r.ended_at.map(rfc_ms),
            version_id: r.version_id,
            timezone: r.timezone.clone(),
        }
    }
}

/// The run with its task instances, as SPEC §5 shapes it.
pub async fn run_json(store: &Store, run: &RunRow) -> Result<RunJson, weir_store::StoreError> {
    let tasks = store.task_instances(&run.run_id).await?;
    Ok(RunJson {
        run: RunSummary::from(run),
        tasks: tasks.into_iter().map(TaskJson::from).collect(),
    })
}
