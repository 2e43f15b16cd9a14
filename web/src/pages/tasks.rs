//! The task page: a try's rendered step, its checks and outputs, its log and its tries.

use super::*;

#[derive(Deserialize)]
pub(super) struct TaskQuery {
    #[serde(rename = "try")]
    pub(super) try_number: Option<i32>,
    pub(super) map_index: Option<i32>,
}

/// Lines the task page shows before following.
pub(crate) const LOG_TAIL: i64 = 500;

#[derive(Serialize)]
pub(super) struct TryView {
    pub(super) try_number: i32,
    pub(super) first: Option<String>,
    pub(super) last: Option<String>,
    pub(super) last_line: Option<String>,
    pub(super) href: String,
}

pub(super) async fn task_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(q): Query<TaskQuery>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &format!("/runs/{run_id}/tasks/{task_id}"));
    let run = state.store.run(&run_id).await?;
    let (ti, try_number) =
        actions::log_target(&state, &run_id, &task_id, q.map_index, q.try_number).await?;
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
pub(super) fn rendered_fields(step: &weir_model::Step) -> Vec<(String, String)> {
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
