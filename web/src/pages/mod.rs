//! The HTML pages and their forms. Pages are tera templates embedded in the binary; the
//! computing is done here and in `view`, templates only lay it out. Every form that changes
//! something is a POST carrying the session's CSRF token, checked with the caller's role
//! before anything changes; the buttons an operator would see are not rendered for a viewer.
//!
//! # Layout
//! - this module: templates, routes, the layout every page shares, the login redirect;
//! - `login`, `dags` (list, DAG page, trigger, backfill, pause), `runs` (run page and its
//!   forms), `tasks` (task page), `audit`.

use std::collections::{BTreeMap, HashMap};

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_model::Dag;
use weir_ops::actions as ops;
use weir_store::{Role, RunRow, TaskInstanceRow};

use weir_model::text::url_segment;

use crate::AppState;
use crate::actions::{
    self, BackfillAnswer, BackfillBody, ClearBody, MarkBody, MarkState, RerunArg, TriggerBody,
};
use crate::auth::{self, Caller};
use crate::error::{PageError, WebError};
use crate::graph;
use crate::view::{self, rfc};

type PageResult = Result<Response, PageError>;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("dags.html", include_str!("../../templates/dags.html")),
    ("dag.html", include_str!("../../templates/dag.html")),
    ("run.html", include_str!("../../templates/run.html")),
    (
        "run_body.html",
        include_str!("../../templates/run_body.html"),
    ),
    (
        "run_tasks.html",
        include_str!("../../templates/run_tasks.html"),
    ),
    ("task.html", include_str!("../../templates/task.html")),
    ("trigger.html", include_str!("../../templates/trigger.html")),
    ("params.html", include_str!("../../templates/params.html")),
    (
        "backfill.html",
        include_str!("../../templates/backfill.html"),
    ),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("assets.html", include_str!("../../templates/assets.html")),
    ("asset.html", include_str!("../../templates/asset.html")),
    ("error.html", include_str!("../../templates/error.html")),
];

const CSS: &str = include_str!("../../static/app.css");
const JS: &str = include_str!("../../static/app.js");

/// An error page in the site's layout; `hint` says what to do, `back` links to the form.
/// `None` only when the templates themselves fail.
pub(crate) fn error_page(
    status: u16,
    reason: &str,
    message: &str,
    hint: Option<&str>,
    back: Option<&str>,
) -> Option<String> {
    static TEMPLATES: std::sync::OnceLock<Option<tera::Tera>> = std::sync::OnceLock::new();
    let tera = TEMPLATES.get_or_init(|| templates().ok()).as_ref()?;
    let mut ctx = tera::Context::new();
    ctx.insert("status", &status);
    ctx.insert("reason", reason);
    ctx.insert("message", message);
    ctx.insert("hint", &hint);
    ctx.insert("back", &back);
    tera.render("error.html", &ctx).ok()
}

/// The embedded templates, parsed once per process.
pub(crate) fn templates() -> Result<tera::Tera, WebError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on([".html"]);
    tera.add_raw_templates(TEMPLATES.iter().copied())?;
    Ok(tera)
}

pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(dag_list))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dags/{dag_id}", get(dag_page))
        .route(
            "/dags/{dag_id}/trigger",
            get(trigger_page).post(trigger_form),
        )
        .route(
            "/dags/{dag_id}/backfill",
            get(backfill_page).post(backfill_form),
        )
        .route("/dags/{dag_id}/pause", post(pause_form))
        .route("/dags/{dag_id}/unpause", post(unpause_form))
        .route("/runs/{run_id}", get(run_page))
        .route("/runs/{run_id}/clear", post(clear_form))
        .route("/runs/{run_id}/cancel", post(cancel_form))
        .route("/runs/{run_id}/mark", post(mark_form))
        .route("/runs/{run_id}/tasks/{task_id}", get(task_page))
        .route("/audit", get(audit_page))
        .route("/assets", get(assets_page))
        .route("/assets/{key}", get(asset_page))
        .route(
            "/static/app.css",
            get(|| async { static_file("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", JS) }),
        )
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// What every page's layout needs.
#[derive(Serialize)]
struct Layout<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    can_operate: bool,
    is_admin: bool,
    no_auth: bool,
}

fn layout<'a>(state: &AppState, c: &'a Caller) -> Layout<'a> {
    Layout {
        user: &c.name,
        role: c.role.as_str(),
        csrf: c.csrf(),
        can_operate: c.can_operate(),
        is_admin: c.role >= Role::Admin,
        no_auth: state.config.no_auth,
    }
}

/// The page `name` in the site's layout.
fn page_html(
    state: &AppState,
    caller: Option<&Caller>,
    name: &str,
    mut ctx: tera::Context,
) -> Result<String, PageError> {
    ctx.insert("layout", &caller.map(|c| layout(state, c)));
    Ok(state.templates.render(name, &ctx)?)
}

fn render(state: &AppState, caller: Option<&Caller>, name: &str, ctx: tera::Context) -> PageResult {
    Ok(Html(page_html(state, caller, name, ctx)?).into_response())
}

/// [`render`], then the first `slot.0` in the page replaced by `slot.1` (HTML).
fn render_spliced(
    state: &AppState,
    caller: Option<&Caller>,
    name: &str,
    ctx: tera::Context,
    slot: (&str, &str),
) -> PageResult {
    let html = page_html(state, caller, name, ctx)?;
    let html = match html.split_once(slot.0) {
        Some((before, after)) => [before, slot.1, after].concat(),
        None => html,
    };
    Ok(Html(html).into_response())
}

/// A page for a logged-in caller; others go to the login page, then back here.
async fn page_caller(
    state: &AppState,
    headers: &HeaderMap,
    uri_path: &str,
) -> Result<Caller, Response> {
    match auth::authenticate(state, headers).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            Err(Redirect::to(&format!("/login?next={}", url_segment(uri_path))).into_response())
        }
        Err(e) => Err(PageError(e).into_response()),
    }
}

/// Unwraps the caller or returns the redirect to the login page.
macro_rules! caller_or_login {
    ($state:expr, $headers:expr, $path:expr) => {
        match page_caller(&$state, &$headers, $path).await {
            Ok(c) => c,
            Err(r) => return Ok(r),
        }
    };
}

mod assets;
mod audit;
mod dags;
mod login;
mod runs;
mod tasks;

use assets::*;
use audit::*;
use dags::*;
pub(crate) use dags::{GRID_RUNS, grid_html};
use login::*;
use runs::*;
pub(crate) use runs::{CSRF_SLOT, run_body_html};
use tasks::*;

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

/// A form's fields as ordered pairs (params are `param.<name>`).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
