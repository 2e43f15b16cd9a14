//! The JSON API under `/api/v1` (SPEC §7), mirroring the CLI. Every route is declared with
//! `#[utoipa::path]` and registered through utoipa-axum, so the OpenAPI document at
//! `/api/v1/openapi.json` is generated from the very routes and types that answer.
//!
//! # Layout
//! - this module: the OpenAPI document, the router, refusals, JSON bodies, paging;
//! - `dags`, `runs`, `logs`, `audit`: the routes of each resource; what a request asks of
//!   weir (bodies, the calls into `weir_ops::operator`) is in `crate::actions`, which the
//!   pages' forms share.
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
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_model::RunState;
use weir_ops::actions as ops;
use weir_store::{AuditRow, Role, RunFilter};

use crate::AppState;
use crate::actions::*;
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
        .routes(routes!(list_assets))
        .routes(routes!(record_asset_event, list_asset_events))
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

mod assets;
mod audit;
mod dags;
mod logs;
mod runs;

pub(crate) use assets::*;
pub(crate) use audit::*;
pub(crate) use dags::*;
pub(crate) use logs::*;
pub(crate) use runs::*;
