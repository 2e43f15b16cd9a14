//! The JSON API under `/api/v1` (SPEC §7), mirroring the CLI. Every route is declared with
//! `#[utoipa::path]` and registered through utoipa-axum, so the OpenAPI document at
//! `/api/v1/openapi.json` is generated from the very routes and types that answer.
//!
//! Without credentials a route answers 401, with a role too low 403; a state-changing call
//! authenticated by the session cookie needs the `X-CSRF-Token` header (Bearer tokens do not).
//! Errors are `{"error": {"code", "message"}}`. Lists take `limit` (default 100, at most
//! 1000) and `offset`, and send `Link: <...>; rel="next"` while there is more.

use std::sync::OnceLock;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_model::{RunState, TaskState};
use weir_ops::actions as ops;
use weir_ops::operator::{self, Actor};
use weir_store::{AuditRow, Role, RunFilter};

use crate::AppState;
use crate::auth::Caller;
use crate::error::WebError;
use crate::view::{self, DagSummary, Grid, RunJson, RunSummary};

/// The header a cookie-authenticated state-changing call carries its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "weir API",
        version = "1",
        description = "Workflow orchestration: DAGs, runs, task instances, logs. Authenticate with `Authorization: Bearer <token>` (`weir users token NAME`) or the web UI's session cookie plus the `X-CSRF-Token` header on state-changing calls."
    ),
    servers((url = "/api/v1")),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
            c.add_security_scheme(
                "session",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                    crate::auth::SESSION_COOKIE,
                ))),
            );
        }
    }
}

/// The error body every route answers with.
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `csrf`, `not_found`, `conflict`,
    /// `too_many_requests`, `internal`.
    code: String,
    /// What went wrong.
    message: String,
}

/// The error answers a route may give, as one OpenAPI responses set (each an [`ErrorBody`]).
macro_rules! refusals {
    ($($name:ident: $($code:literal)+;)+) => {$(
        struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
                refusal_responses(&[$($code),+])
            }
        }
    )+};
}

refusals! {
    Unauthenticated: 401;
    ReadRefusals: 401 404;
    ListRefusals: 400 401;
    ChangeRefusals: 401 403 404;
    WriteRefusals: 400 401 403 404;
    CancelRefusals: 401 403 404 409;
    TriggerRefusals: 400 401 403 404 409 422;
    AdminRefusals: 401 403;
}

fn refusal_responses(
    codes: &[u16],
) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    codes
        .iter()
        .map(|code| {
            let description = match code {
                400 => "Bad request: the message names the field",
                401 => "No or bad credentials",
                403 => "Role too low, or no CSRF token with a session cookie",
                404 => "No such DAG, run or task",
                422 => "A param unknown to the DAG, of the wrong type or too large: the message names it",
                _ => "Conflicts with the current state",
            };
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build();
            (code.to_string(), response.into())
        })
        .collect()
}

fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_dags))
        .routes(routes!(get_dag))
        .routes(routes!(pause_dag))
        .routes(routes!(unpause_dag))
        .routes(routes!(trigger, list_runs))
        .routes(routes!(backfill))
        .routes(routes!(dag_grid))
        .routes(routes!(get_run))
        .routes(routes!(clear_run))
        .routes(routes!(cancel_run))
        .routes(routes!(mark_run))
        .routes(routes!(task_logs))
        .routes(routes!(audit_log))
}

/// The API's routes, with `/openapi.json`.
pub(crate) fn routes() -> axum::Router<AppState> {
    let (router, _) = router().split_for_parts();
    router.route(
        "/openapi.json",
        axum::routing::get(|| async { Json(openapi_document().clone()) }),
    )
}

/// The OpenAPI 3 document of the API (built once).
pub fn openapi_document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| router().split_for_parts().1)
}

/// A JSON body whose rejections answer in the API's error shape.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, WebError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e @ JsonRejection::MissingJsonContentType(_)) => Err(WebError::bad_request(
                format!("{e}: send Content-Type: application/json"),
            )),
            Err(e) => Err(WebError::bad_request(format!(
                "request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// An operator's state-changing call: role, then CSRF (cookie sessions only).
fn operator(caller: &Caller, headers: &HeaderMap) -> Result<(), WebError> {
    caller.operate(headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))
}

/// `limit` and `offset` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Paging {
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
    /// Skip this many.
    offset: Option<i64>,
}

impl Paging {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
    fn offset(&self) -> i64 {
        self.offset.unwrap_or(0).max(0)
    }

    /// A page from rows fetched with `limit() + 1`: the first `limit()`, mapped, and whether
    /// there were more.
    fn split<R, T>(&self, rows: Vec<R>, map: impl FnMut(R) -> T) -> (Vec<T>, bool) {
        let limit = usize::try_from(self.limit()).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        (rows.into_iter().take(limit).map(map).collect(), more)
    }
}

/// A list answer: the page, with a `Link: rel="next"` header when `more`.
fn page<T: Serialize>(
    items: Vec<T>,
    more: bool,
    path: &str,
    paging: &Paging,
    extra: &str,
) -> Response {
    let mut res = Json(items).into_response();
    if more {
        let next = format!(
            "</api/v1{path}?limit={}&offset={}{extra}>; rel=\"next\"",
            paging.limit(),
            paging.offset() + paging.limit()
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            res.headers_mut().insert(header::LINK, v);
        }
    }
    res
}

#[utoipa::path(get, path = "/dags", tag = "dags", params(Paging),
    responses((status = 200, description = "OK", body = Vec<DagSummary>), Unauthenticated))]
/// Every DAG with its schedule, paused flag, import error, recent runs and next run.
async fn list_dags(
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
struct TaskInfo {
    task_id: String,
    /// Step kind (`shell`, `sql`, `load`, ...).
    kind: String,
    depends_on: Vec<String>,
    trigger_rule: String,
    retries: u32,
}

/// A DAG in full.
#[derive(Serialize, ToSchema)]
struct DagDetail {
    #[serde(flatten)]
    summary: DagSummary,
    /// Params and their defaults.
    #[schema(value_type = Object)]
    params: serde_json::Value,
    /// Each param's declaration: `type` (`string`, `integer`, `number`, `boolean`, `list`,
    /// `object`; absent: any), and when declared `enum`, `pattern`, `max_length`, `min`, `max`,
    /// `description`.
    #[schema(value_type = Object)]
    param_declarations: serde_json::Value,
    tasks: Vec<TaskInfo>,
}

#[utoipa::path(get, path = "/dags/{dag_id}", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "OK", body = DagDetail), ReadRefusals))]
/// One DAG, with its tasks and params.
async fn get_dag(
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

/// A DAG's paused flag after a pause or unpause.
#[derive(Serialize, ToSchema)]
pub(crate) struct Paused {
    dag_id: String,
    paused: bool,
    /// Whether the call changed it.
    changed: bool,
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

#[utoipa::path(post, path = "/dags/{dag_id}/pause", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id")),
    responses((status = 200, description = "OK", body = Paused), ChangeRefusals))]
/// Pauses a DAG: the scheduler creates no runs for it (running ones finish).
async fn pause_dag(
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
async fn unpause_dag(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> Result<Json<Paused>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(set_paused(&state, &caller, &dag_id, false).await?))
}

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
async fn trigger(
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
struct RunsQuery {
    /// Only runs in this state.
    state: Option<String>,
}

#[utoipa::path(get, path = "/dags/{dag_id}/runs", tag = "runs",
    params(("dag_id" = String, Path, description = "DAG id"), RunsQuery, Paging),
    responses((status = 200, description = "OK", body = Vec<RunSummary>), ListRefusals))]
/// A DAG's runs, newest logical date first.
async fn list_runs(
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
async fn backfill(
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GridQuery {
    /// How many runs (default 25, at most 365).
    runs: Option<i64>,
}

#[utoipa::path(get, path = "/dags/{dag_id}/grid", tag = "dags",
    params(("dag_id" = String, Path, description = "DAG id"), GridQuery),
    responses((status = 200, description = "OK", body = Grid), ReadRefusals))]
/// The newest runs × the DAG's tasks.
async fn dag_grid(
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

#[utoipa::path(get, path = "/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, description = "Run id")),
    responses((status = 200, description = "OK", body = RunJson), ReadRefusals))]
/// A run with its task instances (the shape of `weir runs show --json`).
async fn get_run(
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
async fn clear_run(
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
async fn cancel_run(
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
async fn mark_run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    JsonBody(body): JsonBody<MarkBody>,
) -> Result<Json<Changed>, WebError> {
    operator(&caller, &headers)?;
    Ok(Json(do_mark(&state, &caller, &run_id, &body).await?))
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

/// Lines read from the store per chunk of a streamed log.
const LOG_CHUNK: i64 = 5000;

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

#[utoipa::path(get, path = "/runs/{run_id}/tasks/{task_id}/logs", tag = "runs",
    params(("run_id" = String, Path, description = "Run id"), ("task_id" = String, Path, description = "Task id"), LogQuery),
    responses((status = 200, description = "the log, one line per line", content_type = "text/plain", body = String), ReadRefusals))]
/// A try's log as text, streamed from the store a chunk at a time (a large log is never held
/// whole); `tail` reads only the last lines.
async fn task_logs(
    State(state): State<AppState>,
    _caller: Caller,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, WebError> {
    let (ti, try_number) = log_target(&state, &run_id, &task_id, q.map_index, q.try_number).await?;
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if let Some(n) = q.tail {
        let lines = state
            .store
            .log_tail(ti.id, try_number, n.clamp(1, 100_000))
            .await?;
        let mut text = String::new();
        for l in lines {
            text.push_str(&l.line);
            text.push('\n');
        }
        return Ok((headers, text).into_response());
    }
    let store = state.store.clone();
    let stream = futures_util::stream::unfold(Some(0_i64), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.logs(ti.id, try_number, after, LOG_CHUNK).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map(|l| l.id);
                    let mut text = String::new();
                    for l in &lines {
                        text.push_str(&l.line);
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(text), next))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

#[utoipa::path(get, path = "/audit", tag = "admin", params(Paging),
    responses((status = 200, description = "OK", body = Vec<AuditEntry>), AdminRefusals))]
/// The audit log, newest first (admins only).
async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, WebError> {
    caller.require(Role::Admin)?;
    // One more than asked tells whether there is a next page.
    let rows = state
        .store
        .audit_log(i64::MAX, paging.offset(), paging.limit() + 1)
        .await?;
    let (items, more) = paging.split(rows, AuditEntry::from);
    Ok(page(items, more, "/audit", &paging, ""))
}

/// An audit log entry.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    pub(crate) id: i64,
    /// RFC 3339 UTC.
    pub(crate) at: String,
    pub(crate) user: String,
    pub(crate) action: String,
    pub(crate) target: String,
    #[schema(value_type = Object)]
    pub(crate) detail: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> AuditEntry {
        AuditEntry {
            id: r.id,
            at: view::rfc(r.at),
            user: r.user_name,
            action: r.action,
            target: r.target,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::String(r.detail)),
        }
    }
}
