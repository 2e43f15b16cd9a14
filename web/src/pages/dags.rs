//! The DAG pages: the list, a DAG's page with its grid, and its forms (trigger with params,
//! backfill, pause and unpause).

use super::*;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) q: Option<String>,
    pub(super) tag: Option<String>,
}

pub(super) async fn dag_list(
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
pub(super) struct DagQuery {
    pub(super) tab: Option<String>,
    pub(super) runs: Option<i64>,
    pub(super) page: Option<i64>,
}

/// Runs the grid shows by default.
pub(crate) const GRID_RUNS: i64 = 25;

/// The grid's HTML (the DAG page's and the live update's).
pub(crate) async fn grid_html(state: &AppState, dag: &Dag, runs: i64) -> Result<String, WebError> {
    let grid = view::grid(&state.store, dag, runs, state.clock.now()).await?;
    Ok(crate::grid::grid_html(&grid))
}

pub(super) async fn dag_page(
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
    ctx.insert("schedule_words", &view::dag_schedule_words(&dag));
    // The assets it reads, writes and runs on (from what its runs recorded, and its schedule).
    let lineage = state
        .store
        .lineage(weir_store::LineageOf::Dag(&dag_id))
        .await?;
    let assets_of = |access: &str| -> Vec<Value> {
        lineage
            .iter()
            .filter(|e| e.access == access)
            .map(|e| serde_json::json!({"key": e.asset_key, "href": format!("/assets/{}", url_segment(&e.asset_key))}))
            .collect()
    };
    let (intervals, missing) = interval_strip(&state, &dag).await?;
    ctx.insert("intervals", &intervals);
    ctx.insert("intervals_missing", &missing);
    ctx.insert("assets_read", &assets_of("read"));
    ctx.insert("assets_written", &assets_of("write"));
    ctx.insert("assets_trigger", &assets_of("trigger"));
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
            // Spliced in after rendering: a page-sized fragment passed through tera is copied
            // into its values and out again.
            let grid = grid_html(&state, &dag, runs).await?;
            ctx.insert("grid_html", GRID_SLOT);
            return render_spliced(&state, Some(&caller), "dag.html", ctx, (GRID_SLOT, &grid));
        }
    }
    render(&state, Some(&caller), "dag.html", ctx)
}

/// Where the grid goes in the rendered DAG page (the template writes it unescaped; any text
/// from a DAG or a user is escaped, so it cannot hold this).
const GRID_SLOT: &str = "<!--weir:grid-->";

/// A param's form field, typed by its declaration.
#[derive(Serialize)]
pub(super) struct ParamField {
    pub(super) name: String,
    /// `string`, `integer`, `number`, `boolean`, `choice` (an `enum`) or `json`.
    pub(super) kind: &'static str,
    pub(super) value: String,
    /// An `enum`'s values, as the field shows and sends them.
    pub(super) options: Vec<String>,
    pub(super) max_length: Option<usize>,
    pub(super) description: Option<String>,
}

/// A value as a form field holds it: a string as it is, anything else as JSON.
pub(super) fn field_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn param_fields(dag: &Dag) -> Vec<ParamField> {
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

pub(super) async fn trigger_page(
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

/// Reads the params of a trigger form by their types (a string as typed, other types as
/// JSON; an `enum`'s choice as the value it stands for); an empty field keeps the default.
///
/// # Errors
/// A field that does not parse as its param's type: 422 `invalid_param`, as the API answers.
pub(super) fn form_params(
    dag: &Dag,
    fields: &Fields,
) -> Result<serde_json::Map<String, Value>, WebError> {
    use weir_model::param::ParamType;
    let mut out = serde_json::Map::new();
    for (name, p) in &dag.params {
        let Some(text) = field(fields, &format!("param.{name}")) else {
            continue;
        };
        let chosen = p.allowed.iter().flatten().find(|v| field_text(v) == text);
        let value = match chosen {
            Some(v) => v.clone(),
            None if text.trim().is_empty() && p.ty != Some(ParamType::String) => continue,
            None => weir_ops::runs::param_from_text(name, p.ty, text)
                .map_err(WebError::invalid_param)?,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

pub(super) async fn trigger_form(
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
    let run = match actions::do_trigger(&state, &caller, &dag_id, &body).await {
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

pub(super) async fn backfill_page(
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

pub(super) async fn backfill_form(
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
        missing: rerun_text == "missing",
        rerun,
        params: form_params(&dag, &fields)?,
    };
    match actions::do_backfill(&state, &caller, &dag_id, &body).await? {
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

pub(super) async fn pause_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    paused_form(&state, &caller, &dag_id, &form, true).await
}

pub(super) async fn unpause_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    paused_form(&state, &caller, &dag_id, &form, false).await
}

pub(super) async fn paused_form(
    state: &AppState,
    caller: &Caller,
    dag_id: &str,
    form: &CsrfForm,
    paused: bool,
) -> PageResult {
    caller.operate(form.csrf.as_deref())?;
    actions::set_paused(state, caller, dag_id, paused).await?;
    Ok(Redirect::to(&format!("/dags/{dag_id}")).into_response())
}

/// The latest 30 scheduled intervals of a cron DAG, each with its run's state or `none` (a
/// gap: never ran), and how many are gaps or failed.
async fn interval_strip(state: &AppState, dag: &Dag) -> Result<(Vec<Value>, usize), WebError> {
    const SHOWN: usize = 30;
    if dag.schedule().is_none() {
        return Ok((Vec::new(), 0));
    }
    let now = state.clock.now();
    let today = now.with_timezone(&dag.timezone).date_naive();
    let mut planned = Vec::new();
    // A span wide enough for 30 intervals of the schedule, found by widening.
    for days in [2, 35, 400] {
        let from = today - chrono::Duration::days(days);
        match dag.plan_backfill(from, today) {
            Ok(i) => planned = i,
            Err(_) => break,
        }
        planned.retain(|i| i.end <= now);
        if planned.len() >= SHOWN {
            break;
        }
    }
    let first = planned.len().saturating_sub(SHOWN);
    let planned = &planned[first..];
    // The runs at those intervals only (not the newest N, which manual runs could crowd out).
    let runs = match (planned.first(), planned.last()) {
        (Some(first), Some(last)) => {
            state
                .store
                .runs_between(dag.id(), first.start, last.start)
                .await?
        }
        _ => Vec::new(),
    };
    let mut missing = 0;
    let cells = planned
        .iter()
        .map(|i| {
            let run = runs.iter().find(|r| r.logical_date == i.start);
            let state = run.map_or("none", |r| r.state.as_str());
            if matches!(state, "none" | "failed") {
                missing += 1;
            }
            serde_json::json!({
                "start": rfc(i.start),
                "state": state,
                "href": run.map(|r| format!("/runs/{}", url_segment(&r.run_id))),
            })
        })
        .collect();
    Ok((cells, missing))
}
