//! Run routes: trigger, list, backfill, one run, clear, cancel, mark; the `do_*` functions
//! the pages' forms share, each through `weir_ops::operator`.

use super::*;

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
    let (_, dag) = ops::latest_dag(&state.store, dag_id).await?;
    let logical_date = match &body.logical_date {
        Some(text) if !text.trim().is_empty() => Some(
            weir_model::date::parse_date(text.trim())
                .map(|d| d.resolve(dag.timezone))
                .map_err(|e| WebError::bad_request(format!("logical_date: {e}")))?,
        ),
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

#[utoipa::path(post, path = "/dags/{dag_id}/runs", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id")),
    request_body = TriggerBody,
    responses((status = 201, description = "Created", body = RunJson), TriggerRefusals))]
/// Triggers a manual run.
pub(super) async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    JsonBody(body): JsonBody<TriggerBody>,
) -> Result<(StatusCode, Json<RunJson>), WebError> {
    operator(&caller, &headers)?;
    Ok((
        StatusCode::CREATED,
        Json(do_trigger(&state, &caller, &dag_id, &body).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// Only runs in this state.
    pub(super) state: Option<String>,
}

#[utoipa::path(get, path = "/dags/{dag_id}/runs", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), RunsQuery, Paging),
    responses((status = 200, description = "OK", body = Vec<RunSummary>), ListRefusals))]
/// A DAG's runs, newest logical date first.
pub(super) async fn list_runs(
    State(state): State<AppState>,
    _caller: Caller,
    Path(dag_id): Path<String>,
    Query(q): Query<RunsQuery>,
    Query(paging): Query<Paging>,
) -> Result<Response, WebError> {
    state.store.dag(&dag_id).await?;
    let run_state = match q.state.as_deref() {
        Some(s) => Some(
            RunState::parse_or_list(s).map_err(|e| WebError::bad_request(format!("state {e}")))?,
        ),
        None => None,
    };
    // One more than asked tells whether there is a next page.
    let runs = state
        .store
        .list_runs(&RunFilter {
            dag_id: Some(dag_id.clone()),
            state: run_state,
            limit: paging.limit() + 1,
            offset: paging.offset(),
        })
        .await?;
    let (items, more) = paging.split(runs, |r| RunSummary::from(&r));
    let extra = q.state.map(|s| format!("&state={s}")).unwrap_or_default();
    Ok(page(
        items,
        more,
        &format!("/dags/{dag_id}/runs"),
        &paging,
        &extra,
    ))
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
    let intervals = dag
        .plan_backfill(body.from, body.to)
        .map_err(WebError::bad_request)?;
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

#[utoipa::path(post, path = "/dags/{dag_id}/backfills", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id")),
    request_body = BackfillBody,
    responses((status = 200, description = "dry run: the intervals", body = Vec<IntervalJson>),
        (status = 201, description = "the runs created or rerun", body = BackfillResult), WriteRefusals))]
/// Backfills the intervals whose logical dates fall on the days `from..=to`.
pub(super) async fn backfill(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    JsonBody(body): JsonBody<BackfillBody>,
) -> Result<Response, WebError> {
    operator(&caller, &headers)?;
    let answer = do_backfill(&state, &caller, &dag_id, &body).await?;
    let status = match answer {
        BackfillAnswer::DryRun(_) => StatusCode::OK,
        BackfillAnswer::Done(_) => StatusCode::CREATED,
    };
    Ok((status, Json(answer)).into_response())
}

#[utoipa::path(get, path = "/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "OK", body = RunJson), ReadRefusals))]
/// A run with its task instances (the shape of `weir runs show --json`).
pub(super) async fn get_run(
    State(state): State<AppState>,
    _caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Json<RunJson>, WebError> {
    let run = state.store.run(&run_id).await?;
    Ok(Json(view::run_json(&state.store, &run).await?))
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

#[utoipa::path(post, path = "/runs/{run_id}/clear", tag = "runs",
    params(("run_id" = String, Path, description = "Run id")),
    request_body = ClearBody,
    responses((status = 200, description = "OK", body = Changed), WriteRefusals))]
/// Clears task instances so they run again.
pub(super) async fn clear_run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    JsonBody(body): JsonBody<ClearBody>,
) -> Result<Json<Changed>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(do_clear(&state, &caller, &run_id, &body).await?))
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

#[utoipa::path(post, path = "/runs/{run_id}/cancel", tag = "runs",
    params(("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "OK", body = RunJson), CancelRefusals))]
/// Cancels a queued or running run: running tasks are stopped and failed, the rest skipped.
pub(super) async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Json<RunJson>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(do_cancel(&state, &caller, &run_id).await?))
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

#[utoipa::path(post, path = "/runs/{run_id}/mark", tag = "runs",
    params(("run_id" = String, Path, description = "Run id")),
    request_body = MarkBody,
    responses((status = 200, description = "OK", body = Changed), WriteRefusals))]
/// Marks task instances success or failed by hand; the scheduler then re-evaluates the run.
pub(super) async fn mark_run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    JsonBody(body): JsonBody<MarkBody>,
) -> Result<Json<Changed>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(do_mark(&state, &caller, &run_id, &body).await?))
}
