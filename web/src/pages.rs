//! The HTML pages and their forms. Pages are tera templates embedded in the binary; the
//! computing is done here and in `view`, templates only lay it out. Every form that changes
//! something is a POST carrying the session's CSRF token, checked with the caller's role
//! before anything changes; the buttons an operator would see are not rendered for a viewer.
//!
//! Over a thousand lines: the DAG pages, the run and task pages, and the forms are nouns that
//! the structural step (issue #15) splits into modules, as a move of its own.

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
use crate::api::{
    self, BackfillAnswer, BackfillBody, ClearBody, MarkBody, MarkState, RerunArg, TriggerBody,
};
use crate::auth::{self, Caller};
use crate::error::{PageError, WebError};
use crate::graph;
use crate::view::{self, rfc};

type PageResult = Result<Response, PageError>;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("dags.html", include_str!("../templates/dags.html")),
    ("dag.html", include_str!("../templates/dag.html")),
    ("grid.html", include_str!("../templates/grid.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("run_body.html", include_str!("../templates/run_body.html")),
    (
        "run_tasks.html",
        include_str!("../templates/run_tasks.html"),
    ),
    ("task.html", include_str!("../templates/task.html")),
    ("trigger.html", include_str!("../templates/trigger.html")),
    ("params.html", include_str!("../templates/params.html")),
    ("backfill.html", include_str!("../templates/backfill.html")),
    ("audit.html", include_str!("../templates/audit.html")),
    ("error.html", include_str!("../templates/error.html")),
];

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");

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

fn render(
    state: &AppState,
    caller: Option<&Caller>,
    name: &str,
    mut ctx: tera::Context,
) -> PageResult {
    ctx.insert("layout", &caller.map(|c| layout(state, c)));
    let html = state.templates.render(name, &ctx)?;
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

/// The login page's query: only where to go next. (An `error` text from the URL was shown
/// once: anyone could put words in weir's mouth on its own login page.)
#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only same-site paths are followed after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    // Parsed as the browser will parse it (the WHATWG URL standard: tabs and newlines dropped,
    // backslashes read as slashes, percent-decoding where browsers do), relative to this
    // server: only a result on this server's origin is kept, as its normalised path.
    let Ok(here) = url::Url::parse("http://weir.invalid/") else {
        return "/".to_owned();
    };
    match next.map(|n| here.join(n)) {
        Some(Ok(target)) if target.origin() == here.origin() => {
            let mut path = target.path().to_owned();
            if let Some(q) = target.query() {
                path.push('?');
                path.push_str(q);
            }
            path
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_server() {
        for (next, kept) in [
            (Some("/dags/etl?tab=runs"), "/dags/etl?tab=runs"),
            (Some("runs"), "/runs"),
            (None, "/"),
            (Some("//evil.example"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/\t/evil.example"), "/"),
            (Some("/\r\n/evil.example"), "/"),
            (Some("\t//evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/%2F/evil.example"), "/%2F/evil.example"),
        ] {
            assert_eq!(safe_next(next), kept, "{next:?}");
        }
    }
}

async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> PageResult {
    let mut ctx = tera::Context::new();
    ctx.insert("next", &safe_next(q.next.as_deref()));
    ctx.insert("error", &None::<String>);
    ctx.insert("name", "");
    render(&state, None, "login.html", ctx)
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let next = safe_next(form.next.as_deref());
    match auth::log_in(
        &state,
        form.name.trim(),
        &form.password,
        &peer.ip().to_string(),
    )
    .await
    {
        Ok(id) => Ok((
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    auth::session_cookie(Some(&id), state.config.secure_cookies()),
                ),
                (header::LOCATION, next),
            ],
        )
            .into_response()),
        Err(e)
            if e.status == StatusCode::UNAUTHORIZED
                || e.status == StatusCode::TOO_MANY_REQUESTS =>
        {
            let mut ctx = tera::Context::new();
            ctx.insert("next", &next);
            ctx.insert("error", &e.message);
            ctx.insert("name", form.name.trim());
            let mut res = render(&state, None, "login.html", ctx)?;
            *res.status_mut() = e.status;
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    caller.check_csrf(form.csrf.as_deref())?;
    auth::log_out(&state, &headers).await?;
    state
        .store
        .audit(
            &caller.name,
            "logout",
            &caller.name,
            &serde_json::json!({}),
            state.clock.now(),
        )
        .await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                auth::session_cookie(None, state.config.secure_cookies()),
            ),
            (header::LOCATION, "/login".to_owned()),
        ],
    )
        .into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    tag: Option<String>,
}

async fn dag_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, "/");
    let (dags, errors) =
        view::dag_summaries(&state.store, &state.versions, state.clock.now()).await?;
    let mut tags: Vec<String> = dags.iter().flat_map(|d| d.tags.iter().cloned()).collect();
    tags.sort();
    tags.dedup();
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let shown: Vec<_> = dags
        .into_iter()
        .filter(|d| {
            needle.is_empty()
                || d.dag_id.to_lowercase().contains(&needle)
                || d.description
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&needle)
        })
        .filter(|d| {
            q.tag
                .as_deref()
                .is_none_or(|t| t.is_empty() || d.tags.iter().any(|x| x == t))
        })
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("dags", &shown);
    ctx.insert(
        "errors",
        &errors
            .iter()
            .map(|e| (&e.file, &e.message))
            .collect::<Vec<_>>(),
    );
    ctx.insert("tags", &tags);
    ctx.insert("q", q.q.as_deref().unwrap_or(""));
    ctx.insert("tag", q.tag.as_deref().unwrap_or(""));
    render(&state, Some(&caller), "dags.html", ctx)
}

#[derive(Deserialize)]
struct DagQuery {
    tab: Option<String>,
    runs: Option<i64>,
    page: Option<i64>,
}

/// Runs the grid shows by default.
pub(crate) const GRID_RUNS: i64 = 25;

/// The grid's HTML (the DAG page's and the live update's).
pub(crate) async fn grid_html(state: &AppState, dag: &Dag, runs: i64) -> Result<String, WebError> {
    let grid = view::grid(&state.store, dag, runs, state.clock.now()).await?;
    let mut ctx = tera::Context::new();
    ctx.insert("grid", &grid);
    Ok(state.templates.render("grid.html", &ctx)?)
}

async fn dag_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    Query(q): Query<DagQuery>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &format!("/dags/{dag_id}"));
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    let row = state.store.dag(&dag_id).await?;
    let tab = q.tab.as_deref().unwrap_or("grid");
    let mut ctx = tera::Context::new();
    ctx.insert("dag_id", &dag_id);
    ctx.insert("tab", tab);
    ctx.insert("paused", &row.paused);
    ctx.insert("removed_at", &row.removed_at.map(view::rfc));
    ctx.insert("file", &row.file);
    ctx.insert("description", &dag.spec.description);
    ctx.insert("schedule", &row.schedule);
    ctx.insert("schedule_words", &dag.schedule().map(view::schedule_words));
    ctx.insert("timezone", &row.timezone);
    ctx.insert("tags", &dag.spec.tags);
    let runs = q.runs.unwrap_or(GRID_RUNS).clamp(1, 365);
    ctx.insert("runs", &runs);
    match tab {
        "graph" => {
            let svg = graph::dag_svg(&dag, &HashMap::new(), &|_| None);
            ctx.insert("svg", &svg);
        }
        "yaml" => {
            let source = state.store.dag_source(&dag_id).await?;
            ctx.insert("source", &source);
        }
        "runs" => {
            const PER_PAGE: i64 = 50;
            let page = q.page.unwrap_or(0).max(0);
            let briefs = state
                .store
                .recent_runs(&dag_id, page * PER_PAGE, PER_PAGE + 1)
                .await?;
            let more = briefs.len() as i64 > PER_PAGE;
            let now = state.clock.now();
            let rows: Vec<_> = briefs
                .iter()
                .take(PER_PAGE as usize)
                .map(|r| {
                    serde_json::json!({
                        "run_id": r.run_id, "state": r.state, "run_type": r.run_type,
                        "logical_date": rfc(r.logical_date),
                        "started_at": r.started_at.map(rfc),
                        "duration": r.started_at.map(|s| view::human_duration(r.ended_at.unwrap_or(now) - s)),
                    })
                })
                .collect();
            ctx.insert("history", &rows);
            ctx.insert("page", &page);
            ctx.insert("more", &more);
        }
        _ => {
            ctx.insert("grid_html", &grid_html(&state, &dag, runs).await?);
        }
    }
    render(&state, Some(&caller), "dag.html", ctx)
}

/// A param's form field, typed by its declaration.
#[derive(Serialize)]
struct ParamField {
    name: String,
    /// `string`, `integer`, `number`, `boolean`, `choice` (an `enum`) or `json`.
    kind: &'static str,
    value: String,
    /// An `enum`'s values, as the field shows and sends them.
    options: Vec<String>,
    max_length: Option<usize>,
    description: Option<String>,
}

/// A value as a form field holds it: a string as it is, anything else as JSON.
fn field_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn param_fields(dag: &Dag) -> Vec<ParamField> {
    use weir_model::param::ParamType;
    dag.params
        .iter()
        .map(|(name, p)| {
            let kind = match (&p.allowed, p.ty) {
                (Some(_), _) => "choice",
                (None, Some(ParamType::String)) => "string",
                (None, Some(ParamType::Integer)) => "integer",
                (None, Some(ParamType::Number)) => "number",
                (None, Some(ParamType::Boolean)) => "boolean",
                (None, _) => "json",
            };
            ParamField {
                name: name.clone(),
                kind,
                value: field_text(&p.default),
                options: p.allowed.iter().flatten().map(field_text).collect(),
                max_length: p.max_length,
                description: p.description.clone(),
            }
        })
        .collect()
}

async fn trigger_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &format!("/dags/{dag_id}/trigger"));
    caller.require(Role::Operator)?;
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    ops::ensure_active(&state.store, &dag_id).await?;
    let mut ctx = tera::Context::new();
    ctx.insert("dag_id", &dag_id);
    ctx.insert("timezone", &dag.timezone.name());
    ctx.insert("params", &param_fields(&dag));
    render(&state, Some(&caller), "trigger.html", ctx)
}

/// A form's fields as ordered pairs (params are `param.<name>`).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads the params of a trigger form by their types (a string as typed, other types as
/// JSON; an `enum`'s choice as the value it stands for); an empty field keeps the default.
///
/// # Errors
/// A field that does not parse as its param's type: 422 `invalid_param`, as the API answers.
fn form_params(dag: &Dag, fields: &Fields) -> Result<serde_json::Map<String, Value>, WebError> {
    use weir_model::param::ParamType;
    let mut out = serde_json::Map::new();
    for (name, p) in &dag.params {
        let Some(text) = field(fields, &format!("param.{name}")) else {
            continue;
        };
        let chosen = p.allowed.iter().flatten().find(|v| field_text(v) == text);
        let value = match (chosen, p.ty) {
            (Some(v), _) => v.clone(),
            (None, Some(ParamType::String)) => Value::String(text.to_owned()),
            _ if text.trim().is_empty() => continue,
            (None, None) => {
                serde_json::from_str(text.trim()).unwrap_or_else(|_| Value::String(text.to_owned()))
            }
            (None, Some(ty)) => serde_json::from_str(text.trim()).map_err(|_| {
                WebError::invalid_param(format!(
                    "param `{name}` is {}; `{text}` is not one",
                    ty.described()
                ))
            })?,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

async fn trigger_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    caller.operate(field(&fields, "csrf"))?;
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    let body = TriggerBody {
        params: form_params(&dag, &fields)?,
        logical_date: field(&fields, "logical_date").map(str::to_owned),
        rerun: field(&fields, "rerun").is_some(),
    };
    let run = match api::do_trigger(&state, &caller, &dag_id, &body).await {
        Ok(run) => run,
        // A run at that date already: say how to rerun it, in the layout, with a way back.
        Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
            let hint = "To run it again, tick \"If a run exists at that date, clear and rerun it\" on the trigger form, or clear it from its run page.";
            let page = error_page(
                409,
                "Conflict",
                &e.message,
                Some(hint),
                Some(&format!("/dags/{}/trigger", url_segment(&dag_id))),
            )
            .ok_or(PageError(e))?;
            return Ok((axum::http::StatusCode::CONFLICT, Html(page)).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Redirect::to(&format!("/runs/{}", url_segment(&run.run.run_id))).into_response())
}

async fn backfill_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &format!("/dags/{dag_id}/backfill"));
    caller.require(Role::Operator)?;
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    let mut ctx = tera::Context::new();
    ctx.insert("dag_id", &dag_id);
    ctx.insert("timezone", &dag.timezone.name());
    ctx.insert("from", "");
    ctx.insert("to", "");
    ctx.insert("rerun", "none");
    ctx.insert("params", &param_fields(&dag));
    ctx.insert("notes", &Vec::<String>::new());
    render(&state, Some(&caller), "backfill.html", ctx)
}

async fn backfill_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    caller.operate(field(&fields, "csrf"))?;
    let date = |name: &str| {
        let text = field(&fields, name).unwrap_or("").trim();
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            WebError::bad_request(format!("{name}: `{text}` is not a YYYY-MM-DD date"))
        })
    };
    let rerun_text = field(&fields, "rerun").unwrap_or("none");
    let rerun = match rerun_text {
        "failed" => RerunArg::Failed,
        "all" => RerunArg::All,
        _ => RerunArg::None,
    };
    let preview = field(&fields, "action") != Some("run");
    let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
    let body = BackfillBody {
        from: date("from")?,
        to: date("to")?,
        dry_run: preview,
        rerun,
        params: form_params(&dag, &fields)?,
    };
    match api::do_backfill(&state, &caller, &dag_id, &body).await? {
        BackfillAnswer::DryRun(intervals) => {
            let mut ctx = tera::Context::new();
            ctx.insert("dag_id", &dag_id);
            ctx.insert("timezone", &dag.timezone.name());
            ctx.insert("from", &body.from.to_string());
            ctx.insert("to", &body.to.to_string());
            ctx.insert("rerun", rerun_text);
            ctx.insert("preview", &intervals);
            ctx.insert("notes", &dag.backfill_notes(body.from, body.to));
            // The form keeps what was typed.
            let mut params = param_fields(&dag);
            for p in &mut params {
                if let Some(v) = field(&fields, &format!("param.{}", p.name)) {
                    p.value = v.to_owned();
                }
            }
            ctx.insert("params", &params);
            render(&state, Some(&caller), "backfill.html", ctx)
        }
        BackfillAnswer::Done(_) => {
            Ok(Redirect::to(&format!("/dags/{dag_id}?tab=grid")).into_response())
        }
    }
}

async fn pause_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    paused_form(&state, &caller, &dag_id, &form, true).await
}

async fn unpause_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    paused_form(&state, &caller, &dag_id, &form, false).await
}

async fn paused_form(
    state: &AppState,
    caller: &Caller,
    dag_id: &str,
    form: &CsrfForm,
    paused: bool,
) -> PageResult {
    caller.operate(form.csrf.as_deref())?;
    api::set_paused(state, caller, dag_id, paused).await?;
    Ok(Redirect::to(&format!("/dags/{dag_id}")).into_response())
}

/// A task instance row of the run page.
#[derive(Serialize)]
struct TaskRowView {
    task_id: String,
    map_index: i32,
    state: String,
    try_number: i32,
    max_tries: i32,
    started_at: Option<String>,
    ended_at: Option<String>,
    duration: Option<String>,
    error: Option<String>,
    href: String,
}

fn task_href(run_id: &str, t: &TaskInstanceRow) -> String {
    let mut href = format!(
        "/runs/{}/tasks/{}",
        url_segment(run_id),
        url_segment(&t.task_id)
    );
    if t.map_index >= 0 {
        href.push_str(&format!("?map_index={}", t.map_index));
    }
    href
}

/// The run page's task table (the page's and the live update's).
pub(crate) async fn run_tasks_html(state: &AppState, run: &RunRow) -> Result<String, WebError> {
    let now = state.clock.now();
    let version = state.versions.get(&state.store, run.version_id).await?;
    let dag = &version.dag;
    let mut tasks = state.store.task_instances(&run.run_id).await?;
    // In the DAG's order (as written), a mapped task's instances by index.
    tasks.sort_by_key(|t| {
        (
            dag.tasks.get_index_of(&t.task_id).unwrap_or(usize::MAX),
            t.map_index,
        )
    });
    let rows: Vec<TaskRowView> = tasks
        .iter()
        .map(|t| TaskRowView {
            task_id: t.task_id.clone(),
            map_index: t.map_index,
            state: t.state.as_str().to_owned(),
            try_number: t.try_number,
            max_tries: t.max_tries,
            started_at: t.started_at.map(rfc),
            ended_at: t.ended_at.map(rfc),
            duration: t
                .started_at
                .map(|s| view::human_duration(t.ended_at.unwrap_or(now) - s)),
            error: t.error.clone(),
            href: task_href(&run.run_id, t),
        })
        .collect();
    let bars: Vec<graph::Bar> = tasks
        .iter()
        .filter_map(|t| {
            let start = t.started_at?;
            Some(graph::Bar {
                label: if t.map_index >= 0 {
                    format!("{}[{}]", t.task_id, t.map_index)
                } else {
                    t.task_id.clone()
                },
                state: t.state.as_str().to_owned(),
                start,
                end: t.ended_at.unwrap_or(now).max(start),
                href: task_href(&run.run_id, t),
            })
        })
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("tasks", &rows);
    ctx.insert("run_state", run.state.as_str());
    ctx.insert("gantt", &graph::gantt_svg(&bars));
    Ok(state.templates.render("run_tasks.html", &ctx)?)
}

async fn run_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &format!("/runs/{run_id}"));
    let run = state.store.run(&run_id).await?;
    let mut ctx = tera::Context::new();
    ctx.insert("run_id", &run_id);
    let body = run_body_html(&state, caller.can_operate(), &run).await?;
    ctx.insert("body", &body.replace(CSRF_SLOT, caller.csrf()));
    render(&state, Some(&caller), "run.html", ctx)
}

/// Where the run page's live part carries the viewer's CSRF token: the part is rendered once
/// for all its viewers (of one role), and each stream writes its own token in.
pub(crate) const CSRF_SLOT: &str = "__weir_csrf_slot__";

/// The run page's live part for viewers who may operate or not (the actions shown): state,
/// actions, dates, version, graph and tasks, with [`CSRF_SLOT`] where the viewer's token
/// goes. The page and its live stream render it alike, so everything on it moves on together.
pub(crate) async fn run_body_html(
    state: &AppState,
    can_operate: bool,
    run: &RunRow,
) -> Result<String, WebError> {
    let version = state.versions.get(&state.store, run.version_id).await?;
    let dag = &version.dag;
    let tasks = state.store.task_instances(&run.run_id).await?;
    let mut states: HashMap<String, String> = HashMap::new();
    for t in &tasks {
        states.insert(t.task_id.clone(), t.state.as_str().to_owned());
    }
    let href_run = run.run_id.clone();
    let svg = graph::dag_svg(dag, &states, &|task| {
        Some(format!(
            "/runs/{}/tasks/{}",
            url_segment(&href_run),
            url_segment(task)
        ))
    });
    let mut ctx = tera::Context::new();
    ctx.insert("run", &view::RunSummary::from(run));
    ctx.insert("finished", &run.state.is_finished());
    ctx.insert("params", &run.params.to_string());
    ctx.insert("svg", &svg);
    ctx.insert("tasks_html", &run_tasks_html(state, run).await?);
    ctx.insert("version_id", &run.version_id);
    let current = state.store.dag(&run.dag_id).await?.version_id;
    ctx.insert("current_version_id", &current);
    if current != run.version_id {
        let (old, new) = tokio::try_join!(
            state.store.dag_version(run.version_id),
            state.store.dag_version(current)
        )?;
        ctx.insert("version_diff", &version_diff(&old, &new));
    }
    ctx.insert(
        "layout",
        &serde_json::json!({"can_operate": can_operate, "csrf": CSRF_SLOT}),
    );
    Ok(state.templates.render("run_body.html", &ctx)?)
}

/// One line of a version diff: `+`, `-` or ` ` and the text.
#[derive(serde::Serialize)]
struct DiffLine {
    sign: &'static str,
    text: String,
}

/// What changed between two versions of a DAG, as unified-diff lines (three lines of context)
/// over their specs and the files they read, each written as indented JSON.
fn version_diff(old: &weir_store::DagVersion, new: &weir_store::DagVersion) -> Vec<DiffLine> {
    let text = |v: &weir_store::DagVersion| {
        let mut out = serde_json::to_string_pretty(&v.spec).unwrap_or_default();
        for (path, body) in &v.files {
            out.push_str(&format!("\n--- file {path}\n{body}"));
        }
        out.push('\n');
        out
    };
    let (old, new) = (text(old), text(new));
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut lines = Vec::new();
    for group in diff.grouped_ops(3) {
        if !lines.is_empty() {
            lines.push(DiffLine {
                sign: "…",
                text: String::new(),
            });
        }
        for op in group {
            for change in diff.iter_changes(&op) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                lines.push(DiffLine {
                    sign,
                    text: change.value().trim_end_matches('\n').to_owned(),
                });
            }
        }
    }
    lines
}

async fn clear_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    caller.operate(field(&fields, "csrf"))?;
    let body = ClearBody {
        task_ids: field(&fields, "task_id")
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect(),
        downstream: field(&fields, "downstream").is_some(),
        failed_only: field(&fields, "failed_only").is_some(),
        latest_version: field(&fields, "latest_version").is_some(),
    };
    api::do_clear(&state, &caller, &run_id, &body).await?;
    Ok(Redirect::to(&back(&fields, &run_id)).into_response())
}

async fn cancel_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    caller.operate(form.csrf.as_deref())?;
    api::do_cancel(&state, &caller, &run_id).await?;
    Ok(Redirect::to(&format!("/runs/{}", url_segment(&run_id))).into_response())
}

async fn mark_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    caller.operate(field(&fields, "csrf"))?;
    let to = match field(&fields, "state") {
        Some("success") => MarkState::Success,
        Some("failed") => MarkState::Failed,
        other => {
            return Err(WebError::bad_request(format!(
                "state must be success or failed, not {other:?}"
            ))
            .into());
        }
    };
    let body = MarkBody {
        task_ids: field(&fields, "task_id")
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect(),
        downstream: field(&fields, "downstream").is_some(),
        state: to,
    };
    api::do_mark(&state, &caller, &run_id, &body).await?;
    Ok(Redirect::to(&back(&fields, &run_id)).into_response())
}

/// Where a run form returns to: the task page it came from, or the run page.
fn back(fields: &Fields, run_id: &str) -> String {
    match field(fields, "back") {
        Some(b) if b.starts_with("/runs/") => b.to_owned(),
        _ => format!("/runs/{}", url_segment(run_id)),
    }
}

#[derive(Deserialize)]
struct TaskQuery {
    #[serde(rename = "try")]
    try_number: Option<i32>,
    map_index: Option<i32>,
}

/// Lines the task page shows before following.
pub(crate) const LOG_TAIL: i64 = 500;

#[derive(Serialize)]
struct TryView {
    try_number: i32,
    first: Option<String>,
    last: Option<String>,
    last_line: Option<String>,
    href: String,
}

async fn task_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(q): Query<TaskQuery>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &format!("/runs/{run_id}/tasks/{task_id}"));
    let run = state.store.run(&run_id).await?;
    let (ti, try_number) =
        api::log_target(&state, &run_id, &task_id, q.map_index, q.try_number).await?;
    let version = state.versions.get(&state.store, run.version_id).await?;
    let dag = &version.dag;
    let instances: Vec<_> = state
        .store
        .task_instances(&run_id)
        .await?
        .into_iter()
        .filter(|t| t.task_id == task_id)
        .map(|t| serde_json::json!({"map_index": t.map_index, "state": t.state.as_str(), "href": task_href(&run_id, &t)}))
        .collect();
    let base = task_href(&run_id, &ti);
    let sep = if base.contains('?') { '&' } else { '?' };
    let tries: Vec<TryView> = state
        .store
        .try_spans(ti.id, ti.try_number)
        .await?
        .into_iter()
        .map(|s| TryView {
            try_number: s.try_number,
            first: s.first.map(rfc),
            last: s.last.as_ref().map(|(t, _)| rfc(*t)),
            last_line: s.last.map(|(_, l)| l),
            href: format!("{base}{sep}try={}", s.try_number),
        })
        .collect();
    let rendered = match dag.tasks.get(&task_id) {
        Some(task) => {
            let ctx =
                weir_ops::context::try_context(&state.store, &run, &ti, dag, &BTreeMap::new())
                    .await?;
            weir_model::template::Renderer::new(&ctx)
                .and_then(|r| {
                    weir_ops::context::render_with_files(
                        &r,
                        &task.step,
                        &version.files,
                        weir_ops::context::Rendering::Reading,
                    )
                })
                .map(|step| rendered_fields(&step))
                .map_err(|e| {
                    format!("cannot render here: {e} (the worker renders with its own environment)")
                })
        }
        None => Err("the DAG version this run pinned has no such task".to_owned()),
    };
    let outputs = ti.outputs.clone().unwrap_or_else(|| serde_json::json!({}));
    let checks = outputs.get("checks").and_then(Value::as_array).map(|checks| {
        checks
            .iter()
            .map(|c| {
                let text = |k: &str| match c.get(k) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(a)) if a.is_empty() => String::new(),
                    Some(other) => other.to_string(),
                };
                serde_json::json!({
                    "check": text("check"), "passed": c.get("passed").and_then(Value::as_bool).unwrap_or(false),
                    "severity": text("severity"), "observed": text("observed"), "samples": text("samples"),
                })
            })
            .collect::<Vec<_>>()
    });
    let mut shown_outputs = outputs.clone();
    if let Some(o) = shown_outputs.as_object_mut() {
        o.remove("checks");
    }
    let log_lines = state.store.log_tail(ti.id, try_number, LOG_TAIL).await?;
    let after = log_lines.last().map_or(0, |l| l.id);
    let log: Vec<_> = log_lines
        .iter()
        .map(|l| serde_json::json!({"stream": l.stream, "line": l.line, "at": rfc(l.at)}))
        .collect();
    let live = ti.still_logging(try_number);
    let mut ctx = tera::Context::new();
    ctx.insert("run", &view::RunSummary::from(&run));
    ctx.insert("task_id", &task_id);
    ctx.insert("ti", &serde_json::json!({
        "state": ti.state.as_str(), "map_index": ti.map_index, "try_number": ti.try_number,
        "max_tries": ti.max_tries, "queue": ti.queue, "pool": ti.pool, "worker_id": ti.worker_id,
        "started_at": ti.started_at.map(rfc), "ended_at": ti.ended_at.map(rfc), "error": ti.error,
        "map_item": ti.map_item.as_ref().map(Value::to_string),
    }));
    ctx.insert("instances", &instances);
    ctx.insert("tries", &tries);
    ctx.insert("try_number", &try_number);
    ctx.insert("rendered", &rendered.as_ref().ok());
    ctx.insert("render_error", &rendered.as_ref().err());
    ctx.insert(
        "outputs",
        &serde_json::to_string_pretty(&shown_outputs).unwrap_or_default(),
    );
    ctx.insert(
        "has_outputs",
        &shown_outputs.as_object().is_some_and(|o| !o.is_empty()),
    );
    ctx.insert("checks", &checks);
    ctx.insert("log", &log);
    ctx.insert("log_truncated", &(log_lines.len() as i64 >= LOG_TAIL));
    ctx.insert("after", &after);
    ctx.insert("live", &live);
    ctx.insert("back", &base);
    ctx.insert(
        "log_url",
        &format!(
            "/api/v1/runs/{}/tasks/{}/logs?try={try_number}&map_index={}",
            url_segment(&run_id),
            url_segment(&task_id),
            ti.map_index
        ),
    );
    ctx.insert(
        "live_url",
        &format!(
            "/live/runs/{}/tasks/{}/log?try={try_number}&map_index={}&after={after}",
            url_segment(&run_id),
            url_segment(&task_id),
            ti.map_index
        ),
    );
    render(&state, Some(&caller), "task.html", ctx)
}

/// A rendered step's fields as (name, text) pairs: strings as they are (a script reads as a
/// script), anything else as JSON.
fn rendered_fields(step: &weir_model::Step) -> Vec<(String, String)> {
    let value = serde_json::to_value(step).unwrap_or_default();
    let Value::Object(fields) = value else {
        return vec![("step".to_owned(), value.to_string())];
    };
    fields
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => serde_json::to_string_pretty(&other).unwrap_or_default(),
            };
            (k, text)
        })
        .collect()
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
}

async fn audit_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    const PER_PAGE: i64 = 100;
    let caller = caller_or_login!(state, headers, "/audit");
    caller.require(Role::Admin)?;
    let rows = state
        .store
        .audit_log(q.before.unwrap_or(i64::MAX), 0, PER_PAGE)
        .await?;
    let next = (rows.len() as i64 == PER_PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| serde_json::json!({"at": rfc(r.at), "user": r.user_name, "action": r.action, "target": r.target, "detail": r.detail}))
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("entries", &entries);
    ctx.insert("next", &next);
    render(&state, Some(&caller), "audit.html", ctx)
}
