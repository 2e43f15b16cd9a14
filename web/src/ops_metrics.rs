//! Operations: `/metrics` (Prometheus text), `/health`, and the access log.
//!
//! Counts that are the truth for the whole deployment (runs and task instances by state,
//! queue depth, worker slots in use, the active scheduler's loop latency) are read from the
//! database at each scrape, so every web server reports the same. Figures only a process
//! knows (its task durations and loaded rows when it runs a worker, its HTTP latencies) come
//! from the `metrics` recorder installed once per process.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use weir_store::Role;

use crate::AppState;
use crate::auth::Caller;
use crate::error::WebError;

/// A scheduler whose heartbeat is older than this is reported stale by `/health`.
const STALE_SCHEDULER: chrono::Duration = chrono::Duration::seconds(30);

fn handle() -> &'static Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            900.0, 3600.0,
        ];
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &buckets)
            .and_then(PrometheusBuilder::install_recorder);
        match built {
            Ok(h) => Some(h),
            Err(e) => {
                // Another recorder is installed (an embedding program's): keep serving the
                // database figures.
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    })
}

/// Installs this process's metrics recorder (once; later calls do nothing).
pub(crate) fn install_recorder() {
    let _ = handle();
}

pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
}

tokio::task_local! {
    /// The id of the request being answered (see [`access_log`]); an internal error names it.
    pub(crate) static REQUEST_ID: String;
}

/// A new request id: 16 hex digits.
pub(crate) fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Gives each request an id (logged with everything the request logs, answered in
/// `X-Request-Id`), logs it (method, path, status, milliseconds) and records its latency.
pub(crate) async fn access_log(req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = new_request_id();
    let span = tracing::info_span!("request", request_id = %id);
    let mut res = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", value);
    }
    let took = started.elapsed();
    let status = res.status().as_u16();
    tracing::info!(target: "weir::access", %method, path, status, request_id = %id, ms = took.as_secs_f64() * 1000.0, "request");
    // The route's kind, not its path: paths carry ids and would explode the label set.
    let kind = if path.starts_with("/api/") {
        "api"
    } else if path.starts_with("/static/") {
        "static"
    } else if path.starts_with("/live/") {
        "live"
    } else {
        "page"
    };
    metrics::histogram!("weir_http_request_duration_seconds", "kind" => kind, "status" => status.to_string())
        .record(took.as_secs_f64());
    res
}

/// One gauge in the Prometheus text format: its help and type lines, then a sample per row,
/// labelled `label`. Names, help and label values are written by the exporter's formatting
/// helpers, which escape what the format requires (queue and worker names come from YAML and
/// the command line).
fn gauge(out: &mut String, name: &str, help: &str, label: &str, rows: &[(String, f64)]) {
    use metrics_exporter_prometheus::formatting::{
        sanitize_label_key, sanitize_label_value, write_help_line, write_type_line,
    };
    use std::fmt::Write as _;
    write_help_line(out, name, None, None, help);
    write_type_line(out, name, None, None, "gauge");
    let label = sanitize_label_key(label);
    for (value, n) in rows {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{}\"}} {n}",
            sanitize_label_value(value)
        );
    }
}

/// Rows of counts as gauge samples.
fn counts(rows: &[(String, i64)]) -> Vec<(String, f64)> {
    rows.iter().map(|(k, n)| (k.clone(), *n as f64)).collect()
}

/// `GET /metrics`: Prometheus text format (a viewer or an API token may scrape).
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, WebError> {
    use std::fmt::Write;
    caller.require(Role::Viewer)?;
    let store = &state.store;
    let now = state.clock.now();
    let (runs, tasks, queues, running, workers, schedulers) = tokio::try_join!(
        store.run_counts(),
        store.task_counts(),
        store.queue_depths(),
        store.running_by_worker(),
        store.live_workers(),
        store.schedulers(now - STALE_SCHEDULER),
    )?;
    let (freshness, misses) = tokio::try_join!(store.freshness(), store.deadline_misses())?;
    let mut out = String::new();
    gauge(
        &mut out,
        "weir_runs",
        "DAG runs by state.",
        "state",
        &counts(&runs),
    );
    gauge(
        &mut out,
        "weir_task_instances",
        "Task instances by state.",
        "state",
        &counts(&tasks),
    );
    gauge(
        &mut out,
        "weir_queue_depth",
        "Queued task instances by worker queue.",
        "queue",
        &counts(&queues),
    );
    gauge(
        &mut out,
        "weir_worker_slots_used",
        "Running task instances by worker.",
        "worker",
        &counts(&running),
    );
    let slots: Vec<(String, f64)> = workers
        .iter()
        .map(|w| (w.worker_id.clone(), f64::from(w.concurrency)))
        .collect();
    gauge(
        &mut out,
        "weir_worker_slots",
        "Slots of each live worker.",
        "worker",
        &slots,
    );
    let stale: Vec<(String, f64)> = freshness
        .iter()
        .map(|f| {
            let late = f.stale_since.map_or(0.0, |since| {
                (now - since).num_milliseconds().max(0) as f64 / 1000.0
            });
            (f.asset_key.clone(), late)
        })
        .collect();
    gauge(
        &mut out,
        "weir_asset_late_seconds",
        "How long each asset declared with `freshness` has been stale (0: fresh).",
        "asset",
        &stale,
    );
    gauge(
        &mut out,
        "weir_deadline_misses",
        "Runs that missed their DAG's deadline, by DAG.",
        "dag_id",
        &counts(&misses),
    );
    let loops: Vec<(String, f64)> = schedulers
        .iter()
        .filter(|s| s.leader)
        .map(|s| (s.scheduler_id.clone(), s.loop_ms / 1000.0))
        .collect();
    gauge(
        &mut out,
        "weir_scheduler_loop_seconds",
        "The active scheduler's last pass.",
        "scheduler",
        &loops,
    );
    let _ = writeln!(
        out,
        "# HELP weir_live_streams Live page streams open on this web server.\n# TYPE weir_live_streams gauge\nweir_live_streams {}\n# HELP weir_live_views Live views polled for them (one poll each, however many watch).\n# TYPE weir_live_views gauge\nweir_live_views {}",
        state.hub.open_streams(),
        state.hub.views()
    );
    if let Some(h) = handle() {
        out.push_str(&h.render());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

#[derive(Serialize)]
struct Health {
    /// `ok`, or `degraded` (no live scheduler, or the database unreachable: this process
    /// keeps running and reconnects by itself).
    status: &'static str,
    database: String,
    scheduler: Option<SchedulerHealth>,
}

#[derive(Serialize)]
struct SchedulerHealth {
    id: String,
    heartbeat_age_seconds: f64,
    stale: bool,
}

/// `GET /health` (no login): 200 while the database answers, 503 when it does not.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let now = state.clock.now();
    match state
        .store
        .schedulers(now - chrono::Duration::days(1))
        .await
    {
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "degraded",
                database: format!("unreachable: {e}"),
                scheduler: None,
            }),
        ),
        Ok(schedulers) => {
            let active = schedulers.iter().find(|s| s.leader);
            let scheduler = active.map(|s| {
                let age = now - s.heartbeat_at;
                SchedulerHealth {
                    id: s.scheduler_id.clone(),
                    heartbeat_age_seconds: age.num_milliseconds() as f64 / 1000.0,
                    stale: age > STALE_SCHEDULER,
                }
            });
            let status = match &scheduler {
                Some(s) if !s.stale => "ok",
                _ => "degraded",
            };
            (
                StatusCode::OK,
                Json(Health {
                    status,
                    database: "ok".to_owned(),
                    scheduler,
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_yaml_are_escaped() {
        let mut out = String::new();
        gauge(
            &mut out,
            "weir_queue_depth",
            "Queued task instances by worker queue.",
            "queue",
            &[("a\"b\\c\nd".to_owned(), 2.0)],
        );
        assert_eq!(
            out,
            "# HELP weir_queue_depth Queued task instances by worker queue.\n\
             # TYPE weir_queue_depth gauge\n\
             weir_queue_depth{queue=\"a\\\"b\\\\c\\nd\"} 2\n"
        );
    }
}
