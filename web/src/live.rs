//! Server-Sent Events for the live parts of pages: the DAG grid and the run page (its state,
//! actions, dates, graph and tasks) are re-rendered on the server and sent when they change; a task's log sends its new lines
//! as they are stored. Each stream polls the database (the truth, whichever worker writes),
//! every [`POLL`], and ends when its client goes away or the server stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use weir_ops::actions as ops;

use crate::AppState;
use crate::auth::Caller;
use crate::error::WebError;
use crate::pages;

/// How often a live stream looks at the database.
const POLL: Duration = Duration::from_millis(1000);
/// Log lines sent per event at most.
const LOG_BATCH: i64 = 2000;

pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/live/dags/{dag_id}/grid", get(grid))
        .route("/live/runs/{run_id}", get(run))
        .route("/live/runs/{run_id}/tasks/{task_id}/log", get(log))
}

type Events = Sse<
    axum::response::sse::KeepAliveStream<
        std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>,
    >,
>;

/// An SSE response of `stream`, with keep-alives, ended when the server stops.
fn sse(
    hub: &crate::hub::Hub,
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Events {
    let boxed: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream.take_until(hub.closed()));
    Sse::new(boxed).keep_alive(KeepAlive::default())
}

/// A stream of a shared view (see [`crate::hub`]): its current HTML at once, then each
/// change, as `html` events, with `slot` replaced by this viewer's own text (its CSRF token);
/// an `error` event when the view cannot be rendered. Holds `ticket` while it is open.
fn shared(
    hub: &crate::hub::Hub,
    rx: tokio::sync::watch::Receiver<Option<crate::hub::Rendered>>,
    ticket: crate::hub::Ticket,
    slot: Option<(&'static str, String)>,
) -> Events {
    let stream = futures_util::stream::unfold(
        (rx, ticket, slot, true),
        |(mut rx, ticket, slot, first)| async move {
            loop {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let current = rx.borrow_and_update().clone();
                let event = match current {
                    Some(Ok(html)) => {
                        let html = match &slot {
                            Some((slot, text)) => html.replace(slot, text),
                            None => html,
                        };
                        Event::default().event("html").data(html)
                    }
                    Some(Err(message)) => Event::default().event("error").data(message),
                    None if first => {
                        // Not rendered yet: wait for the first rendering.
                        if rx.changed().await.is_err() {
                            return None;
                        }
                        continue;
                    }
                    None => continue,
                };
                return Some((Ok(event), (rx, ticket, slot, false)));
            }
        },
    );
    sse(hub, stream)
}

#[derive(Deserialize)]
struct GridQuery {
    runs: Option<i64>,
}

async fn grid(
    State(state): State<AppState>,
    caller: Caller,
    Path(dag_id): Path<String>,
    Query(q): Query<GridQuery>,
) -> Result<Events, WebError> {
    ops::latest_dag(&state.store, &dag_id).await?;
    let ticket = state.hub.admit(&caller.name)?;
    let runs = q.runs.unwrap_or(pages::GRID_RUNS).clamp(1, 365);
    let key = format!("grid\n{dag_id}\n{runs}");
    let view = state.clone();
    let rx = state.hub.watch(key, POLL, move || {
        let state = view.clone();
        let dag_id = dag_id.clone();
        async move {
            // The latest version each time: a new task shows up as a new row.
            let (_, dag) = ops::latest_dag(&state.store, &dag_id).await?;
            pages::grid_html(&state, &dag, runs).await
        }
    });
    Ok(shared(&state.hub, rx, ticket, None))
}

/// The run page's whole live part (state, actions, dates, graph, tasks): they change together.
/// One rendering per run and role serves every viewer; each gets its own CSRF token in it.
async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Events, WebError> {
    state.store.run(&run_id).await?;
    let ticket = state.hub.admit(&caller.name)?;
    let can_operate = caller.can_operate();
    let key = format!("run\n{run_id}\n{can_operate}");
    let view = state.clone();
    let rx = state.hub.watch(key, POLL, move || {
        let state = view.clone();
        let run_id = run_id.clone();
        async move {
            let run = state.store.run(&run_id).await?;
            pages::run_body_html(&state, can_operate, &run).await
        }
    });
    Ok(shared(
        &state.hub,
        rx,
        ticket,
        Some((pages::CSRF_SLOT, caller.csrf().to_owned())),
    ))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(rename = "try")]
    try_number: Option<i32>,
    map_index: Option<i32>,
    after: Option<i64>,
}

/// New log lines as `lines` events (a JSON list of `{id, stream, line, at}`); an `end` event
/// (with the instance's state) when the try is over and every line was sent.
async fn log(
    State(state): State<AppState>,
    caller: Caller,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Events, WebError> {
    let (ti, try_number) =
        crate::actions::log_target(&state, &run_id, &task_id, q.map_index, q.try_number).await?;
    let ticket = state.hub.admit(&caller.name)?;
    let after = q.after.unwrap_or(0);
    let hub = Arc::clone(&state.hub);
    let stream = futures_util::stream::unfold(Some((state, after, ticket)), move |s| async move {
        let (state, after, ticket) = s?;
        loop {
            let lines = match state.store.logs(ti.id, try_number, after, LOG_BATCH).await {
                Ok(l) => l,
                Err(e) => {
                    let event = Event::default()
                        .event("error")
                        .data(crate::error::WebError::from(e).message);
                    return Some((Ok(event), None));
                }
            };
            if let Some(last) = lines.last() {
                let next = last.id;
                let data: Vec<_> = lines
                    .iter()
                    .map(|l| serde_json::json!({"id": l.id, "stream": l.stream, "line": l.line, "at": crate::view::rfc(l.at)}))
                    .collect();
                let event = Event::default()
                    .event("lines")
                    .data(serde_json::Value::Array(data).to_string());
                return Some((Ok(event), Some((state, next, ticket))));
            }
            let now = match state.store.task_instance(ti.id).await {
                Ok(t) => t,
                Err(e) => {
                    let event = Event::default()
                        .event("error")
                        .data(crate::error::WebError::from(e).message);
                    return Some((Ok(event), None));
                }
            };
            if !now.still_logging(try_number) {
                let event = Event::default().event("end").data(now.state.as_str());
                return Some((Ok(event), None));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Ok(sse(&hub, stream))
}
