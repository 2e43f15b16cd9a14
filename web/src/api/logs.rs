//! Task logs: the whole log of a try, streamed in chunks, or its tail.

use super::*;

/// Lines read from the store per chunk of a streamed log.
pub(super) const LOG_CHUNK: i64 = 5000;

#[utoipa::path(get, path = "/runs/{run_id}/tasks/{task_id}/logs", tag = "runs",
    params(("run_id" = String, Path, description = "Run id"), ("task_id" = String, Path, description = "Task id"), LogQuery),
    responses((status = 200, description = "the log, one line per line", content_type = "text/plain", body = String), ReadRefusals))]
/// A try's log as text, streamed from the store a chunk at a time (a large log is never held
/// whole); `tail` reads only the last lines.
pub(super) async fn task_logs(
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
                // The body ends early; the cause goes to the log, not to the client.
                Err(e) => Some((
                    Err(std::io::Error::other(
                        crate::error::WebError::from(e).message,
                    )),
                    None,
                )),
            }
        }
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}
