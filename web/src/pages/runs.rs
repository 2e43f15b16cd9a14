//! The run page: its tasks, its live body (state, actions, graph, version diff), and its forms
//! (clear, cancel, mark).

use super::*;

/// A task instance row of the run page.
#[derive(Serialize)]
pub(super) struct TaskRowView {
    pub(super) task_id: String,
    pub(super) map_index: i32,
    pub(super) state: String,
    pub(super) try_number: i32,
    pub(super) max_tries: i32,
    pub(super) started_at: Option<String>,
    pub(super) ended_at: Option<String>,
    pub(super) duration: Option<String>,
    pub(super) error: Option<String>,
    pub(super) href: String,
}

pub(super) fn task_href(run_id: &str, t: &TaskInstanceRow) -> String {
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

pub(super) async fn run_page(
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
    ctx.insert("deadline_missed_at", &run.deadline_missed_at.map(rfc));
    // What made a run from assets or files: the events' assets and runs, or the objects.
    let trigger: Vec<Value> = match &run.triggered_by {
        Some(t) if t["kind"] == "assets" => t["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| serde_json::json!({
                "asset": e["asset_key"],
                "asset_href": e["asset_key"].as_str().map(|k| format!("/assets/{}", url_segment(k))),
                "run_id": e["run_id"],
                "run_href": e["run_id"].as_str().map(|r| format!("/runs/{}", url_segment(r))),
            }))
            .collect(),
        Some(t) => t["files"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| serde_json::json!({"asset": f["location"]}))
            .collect(),
        None => Vec::new(),
    };
    ctx.insert("trigger", &trigger);
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
pub(super) struct DiffLine {
    pub(super) sign: &'static str,
    pub(super) text: String,
}

/// What changed between two versions of a DAG, as unified-diff lines (three lines of context)
/// over their specs and the files they read, each written as indented JSON.
pub(super) fn version_diff(
    old: &weir_store::DagVersion,
    new: &weir_store::DagVersion,
) -> Vec<DiffLine> {
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

pub(super) async fn clear_form(
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
    actions::do_clear(&state, &caller, &run_id, &body).await?;
    Ok(Redirect::to(&back(&fields, &run_id)).into_response())
}

pub(super) async fn cancel_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    caller.operate(form.csrf.as_deref())?;
    actions::do_cancel(&state, &caller, &run_id).await?;
    Ok(Redirect::to(&format!("/runs/{}", url_segment(&run_id))).into_response())
}

pub(super) async fn mark_form(
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
    actions::do_mark(&state, &caller, &run_id, &body).await?;
    Ok(Redirect::to(&back(&fields, &run_id)).into_response())
}

/// Where a run form returns to: the task page it came from, or the run page.
pub(super) fn back(fields: &Fields, run_id: &str) -> String {
    match field(fields, "back") {
        Some(b) if b.starts_with("/runs/") => b.to_owned(),
        _ => format!("/runs/{}", url_segment(run_id)),
    }
}
