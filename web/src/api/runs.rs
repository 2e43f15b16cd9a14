//! Run routes: trigger, list, backfill, one run, clear, cancel, mark; each change through
//! `crate::actions` and `weir_ops::operator`.

use super::*;

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
