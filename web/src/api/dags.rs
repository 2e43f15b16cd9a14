//! DAG routes: the list, one DAG with its tasks and params, pause and unpause, the grid.

use super::*;

#[utoipa::path(get, path = "/dags", tag = "dags", params(Paging),
    responses((status = 200, description = "OK", body = Vec<DagSummary>), Unauthenticated))]
/// Every DAG with its schedule, paused flag, import error, recent runs and next run.
pub(super) async fn list_dags(
    State(state): State<AppState>,
    _caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, WebError> {
    let (dags, _) = view::dag_summaries(&state.store, &state.versions, state.clock.now()).await?;
    let total = dags.len();
    let start = usize::try_from(paging.offset())
        .unwrap_or(usize::MAX)
        .min(total);
    let end = start
        .saturating_add(usize::try_from(paging.limit()).unwrap_or(usize::MAX))
        .min(total);
    let items: Vec<DagSummary> = dags.into_iter().skip(start).take(end - start).collect();
    Ok(page(items, end < total, "/dags", &paging, ""))
}

/// A DAG's task as the API describes it.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskInfo {
    pub(super) task_id: String,
    /// Step kind (`shell`, `sql`, `load`, ...).
    pub(super) kind: String,
    pub(super) depends_on: Vec<String>,
    pub(super) trigger_rule: String,
    pub(super) retries: u32,
}

/// A DAG in full.
#[derive(Serialize, ToSchema)]
pub(super) struct DagDetail {
    #[serde(flatten)]
    pub(super) summary: DagSummary,
    /// Params and their defaults.
    #[schema(value_type = Object)]
    pub(super) params: serde_json::Value,
    /// Each param's declaration: `type` (`string`, `integer`, `number`, `boolean`, `list`,
    /// `object`; absent: any), and when declared `enum`, `pattern`, `max_length`, `min`, `max`,
    /// `description`.
    #[schema(value_type = Object)]
    pub(super) param_declarations: serde_json::Value,
    pub(super) tasks: Vec<TaskInfo>,
}

#[utoipa::path(get, path = "/dags/{dag_id}", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "OK", body = DagDetail), ReadRefusals))]
/// One DAG, with its tasks and params.
pub(super) async fn get_dag(
    State(state): State<AppState>,
    _caller: Caller,
    Path(dag_id): Path<String>,
) -> Result<Json<DagDetail>, WebError> {
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    let row = state.store.dag(&dag_id).await?;
    let import_error = state
        .store
        .import_errors()
        .await?
        .into_iter()
        .find(|e| e.file == row.file)
        .map(|e| e.message);
    let summary = view::dag_summary(
        &state.store,
        &state.versions,
        &row,
        import_error,
        state.clock.now(),
    )
    .await?;
    let tasks = dag
        .tasks
        .values()
        .map(|t| TaskInfo {
            task_id: t.id.clone(),
            kind: t.step.kind().to_owned(),
            depends_on: t.depends_on.clone(),
            trigger_rule: t.trigger_rule.as_str().to_owned(),
            retries: t.retry.retries,
        })
        .collect();
    Ok(Json(DagDetail {
        summary,
        params: dag
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.default.clone()))
            .collect(),
        param_declarations: dag
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.declaration()))
            .collect(),
        tasks,
    }))
}

#[utoipa::path(post, path = "/dags/{dag_id}/pause", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "OK", body = Paused), ChangeRefusals))]
/// Pauses a DAG: the scheduler creates no runs for it (running ones finish).
pub(super) async fn pause_dag(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> Result<Json<Paused>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(set_paused(&state, &caller, &dag_id, true).await?))
}

#[utoipa::path(post, path = "/dags/{dag_id}/unpause", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "OK", body = Paused), ChangeRefusals))]
/// Unpauses a DAG.
pub(super) async fn unpause_dag(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> Result<Json<Paused>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(set_paused(&state, &caller, &dag_id, false).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct GridQuery {
    /// How many runs (default 25, at most 365).
    pub(super) runs: Option<i64>,
}

#[utoipa::path(get, path = "/dags/{dag_id}/grid", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id"), GridQuery),
    responses((status = 200, description = "OK", body = Grid), ReadRefusals))]
/// The newest runs × the DAG's tasks.
pub(super) async fn dag_grid(
    State(state): State<AppState>,
    _caller: Caller,
    Path(dag_id): Path<String>,
    Query(q): Query<GridQuery>,
) -> Result<Json<Grid>, WebError> {
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    let limit = q.runs.unwrap_or(25).clamp(1, 365);
    Ok(Json(
        view::grid(&state.store, &dag, limit, state.clock.now()).await?,
    ))
}
