//! What a request asks of weir, shared by the API's handlers and the pages' forms: the
//! bodies they accept, and the calls into `weir_ops::operator` they make (each writing its
//! audit row there). Which task log a request means is here too, for the API, the pages and
//! the live log.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_model::TaskState;
use weir_ops::actions as ops;
use weir_ops::operator::{self, Actor};

use crate::AppState;
use crate::auth::Caller;
use crate::error::WebError;
use crate::view::{self, RunJson};

/// `POST /dags/{dag_id}/runs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerBody {
    /// Overrides of the DAG's params, each of its default's JSON type.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(crate) params: serde_json::Map<String, serde_json::Value>,
    /// A date (`2024-03-01`, midnight) or date-time in the DAG's time zone, or RFC 3339;
    /// default now.
    pub(crate) logical_date: Option<String>,
    /// When the DAG already has a run at that date: clear and rerun it (else 409).
    #[serde(default)]
    pub(crate) rerun: bool,
}

pub(crate) async fn do_trigger(
    state: &AppState,
    caller: &Caller,
    dag_id: &str,
    body: &TriggerBody,
) -> Result<RunJson, WebError> {
    let logical_date = match &body.logical_date {
        Some(text) if !text.trim().is_empty() => {
            // A date without a zone is in the DAG's (read only then: the trigger reads it too).
            let (_, dag) = ops::latest_dag(&state.store, dag_id).await?;
            Some(
                weir_model::date::parse_date(text.trim())
                    .map(|d| d.resolve(dag.timezone))
                    .map_err(|e| WebError::bad_request(format!("logical_date: {e}")))?,
            )
        }
        _ => None,
    };
    let now = state.clock.now();
    let t = operator::trigger(
        &state.store,
        Actor(&caller.name),
        dag_id,
        &body.params,
        logical_date,
        body.rerun,
        now,
    )
    .await?;
    Ok(view::run_json(&state.store, &t.run).await?)
}

/// `POST /dags/{dag_id}/backfills`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackfillBody {
    /// First day (YYYY-MM-DD, in the DAG's time zone), inclusive.
    pub(crate) from: NaiveDate,
    /// Last day, inclusive.
    pub(crate) to: NaiveDate,
    /// Only list the intervals.
    #[serde(default)]
    pub(crate) dry_run: bool,
    /// Only the intervals the DAG never materialized (no run there succeeded); failed runs
    /// among them are rerun. Takes no `rerun`.
    #[serde(default)]
    pub(crate) missing: bool,
    /// `none` (keep existing runs), `failed` (rerun their failed tasks) or `all`.
    #[serde(default)]
    pub(crate) rerun: RerunArg,
    /// Param overrides for the runs it creates.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(crate) params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RerunArg {
    #[default]
    None,
    Failed,
    All,
}

/// One interval of a backfill (`--dry-run --json`'s shape).
#[derive(Serialize, ToSchema)]
pub(crate) struct IntervalJson {
    pub(crate) logical_date: String,
    pub(crate) data_interval_start: String,
    pub(crate) data_interval_end: String,
}

/// What a backfill did.
#[derive(Serialize, ToSchema)]
pub(crate) struct BackfillResult {
    /// Each interval's run, in order.
    pub(crate) run_ids: Vec<String>,
    pub(crate) created: usize,
    pub(crate) rerun: usize,
    pub(crate) kept: usize,
}

/// A backfill's answer: the intervals (dry run) or what was done.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum BackfillAnswer {
    DryRun(Vec<IntervalJson>),
    Done(BackfillResult),
}

pub(crate) async fn do_backfill(
    state: &AppState,
    caller: &Caller,
    dag_id: &str,
    body: &BackfillBody,
) -> Result<BackfillAnswer, WebError> {
    let (version_id, dag) = ops::latest_dag(&state.store, dag_id).await?;
    let mut intervals = dag
        .plan_backfill(body.from, body.to)
        .map_err(WebError::bad_request)?;
    if body.missing {
        if !matches!(body.rerun, RerunArg::None) {
            return Err(WebError::bad_request(
                "`missing` reruns the failed runs it finds: it takes no `rerun`",
            ));
        }
        intervals = ops::missing_intervals(&state.store, &dag, &intervals).await?;
    }
    if body.dry_run {
        return Ok(BackfillAnswer::DryRun(
            intervals
                .iter()
                .map(|i| IntervalJson {
                    logical_date: view::rfc(i.start),
                    data_interval_start: view::rfc(i.start),
                    data_interval_end: view::rfc(i.end),
                })
                .collect(),
        ));
    }
    let rerun = match body.rerun {
        RerunArg::None if body.missing => ops::Rerun::Failed,
        RerunArg::None => ops::Rerun::None,
        RerunArg::Failed => ops::Rerun::Failed,
        RerunArg::All => ops::Rerun::All,
    };
    let now = state.clock.now();
    let request = operator::BackfillRequest {
        from: body.from,
        to: body.to,
        rerun,
        params: &body.params,
    };
    let done = operator::backfill(
        &state.store,
        Actor(&caller.name),
        &dag,
        version_id,
        &intervals,
        &request,
        now,
    )
    .await?;
    Ok(BackfillAnswer::Done(BackfillResult {
        run_ids: done.run_ids,
        created: done.created,
        rerun: done.rerun,
        kept: done.kept,
    }))
}

/// `POST /runs/{run_id}/clear`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClearBody {
    /// These tasks (every task when empty).
    #[serde(default)]
    pub(crate) task_ids: Vec<String>,
    /// And everything downstream of them.
    #[serde(default)]
    pub(crate) downstream: bool,
    /// Only failed and upstream-failed instances.
    #[serde(default)]
    pub(crate) failed_only: bool,
    /// Rerun on the DAG's current version (default: the run's pinned version).
    #[serde(default)]
    pub(crate) latest_version: bool,
}

/// How many task instances a clear or mark changed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Changed {
    pub(crate) run_id: String,
    pub(crate) changed: u64,
}

pub(crate) async fn do_clear(
    state: &AppState,
    caller: &Caller,
    run_id: &str,
    body: &ClearBody,
) -> Result<Changed, WebError> {
    let run = state.store.run(run_id).await?;
    let selection = ops::ClearSelection {
        task_ids: body.task_ids.clone(),
        downstream: body.downstream,
        failed_only: body.failed_only,
        latest_version: body.latest_version,
    };
    let now = state.clock.now();
    let changed = operator::clear(&state.store, Actor(&caller.name), &run, &selection, now).await?;
    Ok(Changed {
        run_id: run_id.to_owned(),
        changed,
    })
}

pub(crate) async fn do_cancel(
    state: &AppState,
    caller: &Caller,
    run_id: &str,
) -> Result<RunJson, WebError> {
    let now = state.clock.now();
    let run = operator::cancel(&state.store, Actor(&caller.name), run_id, now).await?;
    Ok(view::run_json(&state.store, &run).await?)
}

/// `POST /runs/{run_id}/mark`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarkBody {
    /// These tasks (every task when empty).
    #[serde(default)]
    pub(crate) task_ids: Vec<String>,
    /// And everything downstream of them.
    #[serde(default)]
    pub(crate) downstream: bool,
    /// `success` or `failed`.
    pub(crate) state: MarkState,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MarkState {
    Success,
    Failed,
}

pub(crate) async fn do_mark(
    state: &AppState,
    caller: &Caller,
    run_id: &str,
    body: &MarkBody,
) -> Result<Changed, WebError> {
    let run = state.store.run(run_id).await?;
    let to = match body.state {
        MarkState::Success => TaskState::Success,
        MarkState::Failed => TaskState::Failed,
    };
    let now = state.clock.now();
    let changed = operator::mark(
        &state.store,
        Actor(&caller.name),
        &run,
        &body.task_ids,
        body.downstream,
        to,
        now,
    )
    .await?;
    Ok(Changed {
        run_id: run_id.to_owned(),
        changed,
    })
}

/// A DAG's paused flag after a pause or unpause.
#[derive(Serialize, ToSchema)]
pub(crate) struct Paused {
    pub(super) dag_id: String,
    pub(super) paused: bool,
    /// Whether the call changed it.
    pub(super) changed: bool,
}

pub(crate) async fn set_paused(
    state: &AppState,
    caller: &Caller,
    dag_id: &str,
    paused: bool,
) -> Result<Paused, WebError> {
    let now = state.clock.now();
    let changed =
        operator::set_paused(&state.store, Actor(&caller.name), dag_id, paused, now).await?;
    Ok(Paused {
        dag_id: dag_id.to_owned(),
        paused,
        changed,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Try number (default the latest).
    #[serde(rename = "try")]
    #[param(rename = "try")]
    pub(crate) try_number: Option<i32>,
    /// The instance of a mapped task (default -1, or the first).
    pub(crate) map_index: Option<i32>,
    /// Only the last N lines.
    pub(crate) tail: Option<i64>,
}

/// The task instance a log request means, and the try.
pub(crate) async fn log_target(
    state: &AppState,
    run_id: &str,
    task_id: &str,
    map_index: Option<i32>,
    try_number: Option<i32>,
) -> Result<(weir_store::TaskInstanceRow, i32), WebError> {
    let instances: Vec<_> = state
        .store
        .task_instances(run_id)
        .await?
        .into_iter()
        .filter(|t| t.task_id == task_id)
        .collect();
    if instances.is_empty() {
        return Err(WebError::not_found(format!(
            "no task `{task_id}` in run `{run_id}`"
        )));
    }
    let ti = match map_index {
        Some(m) => instances
            .into_iter()
            .find(|t| t.map_index == m)
            .ok_or_else(|| {
                WebError::not_found(format!(
                    "no instance {m} of task `{task_id}` in run `{run_id}`"
                ))
            })?,
        None => instances
            .into_iter()
            .next()
            .ok_or_else(|| WebError::not_found(format!("no task `{task_id}` in run `{run_id}`")))?,
    };
    let try_number = try_number.unwrap_or(ti.try_number).max(1);
    if try_number > ti.try_number.max(1) {
        return Err(WebError::not_found(format!(
            "no try {try_number} of task `{task_id}` in run `{run_id}`: it has had {}",
            ti.try_number
        )));
    }
    Ok((ti, try_number))
}
