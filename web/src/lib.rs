//! weir-web: the web UI, the JSON API under `/api/v1`, auth, `/metrics` and `/health`.
//!
//! Where it sits: reads and writes only through weir-store (and weir-scheduler's `ops` for
//! what operators ask for), so any number of web servers can run against one Postgres. The
//! DAGs it shows come from the database, never from a folder. Nothing it keeps in memory is
//! the truth: sessions, the audit log and login failures are rows; the rendered templates and
//! the metrics recorder are per-process caches.
//!
//! # Layout
//! - [`auth`]: sessions, API tokens, roles, CSRF, login and its rate limit, password hashes.
//! - `api`: the JSON API and its OpenAPI document.
//! - `pages`: the HTML pages and their forms.
//! - `view`: what pages and the API show, computed once: DAG summaries, the grid, durations.
//! - `graph`: the DAG's graph laid out in layers, as SVG; the run's Gantt chart.
//! - `live`: Server-Sent Events for log tails and state changes.
//! - `ops_metrics`: `/metrics` and `/health`.
//! - `error`: the error type, as a JSON body or an HTML page.

mod actions;
mod api;
pub mod auth;
mod error;
mod graph;
mod grid;
mod hub;
mod live;
mod ops_metrics;
mod pages;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_store::Store;

pub use api::openapi_document;
pub use error::WebError;

/// How a web server runs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// How users reach it (`https://...` makes cookies `Secure`).
    pub base_url: String,
    /// Every request acts as an admin: local development only (loopback binds only).
    pub no_auth: bool,
}

impl WebConfig {
    /// Whether session cookies must be `Secure` (the server is reached over https).
    #[must_use]
    pub fn secure_cookies(&self) -> bool {
        self.base_url.starts_with("https://")
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Store,
    pub(crate) config: Arc<WebConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) templates: Arc<tera::Tera>,
    /// Live views shared by their watchers, and the bounds on open streams.
    pub(crate) hub: Arc<hub::Hub>,
    /// Stored DAG versions, parsed once (the DAG list reads one per DAG on every request).
    pub(crate) versions: weir_ops::versions::Versions,
}

impl AppState {
    /// The state for a web server over `store`.
    ///
    /// # Errors
    /// `--no-auth` with a non-loopback bind address; templates that do not parse (a build
    /// defect, caught by every test).
    pub fn new(
        store: Store,
        config: WebConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, WebError> {
        if config.no_auth && !config.bind.ip().is_loopback() {
            return Err(WebError::bad_request(format!(
                "--no-auth serves every visitor as an admin: it only binds to loopback (127.0.0.1 or ::1), not {}",
                config.bind
            )));
        }
        Ok(AppState {
            store,
            config: Arc::new(config),
            clock,
            templates: Arc::new(pages::templates()?),
            versions: weir_ops::versions::Versions::default(),
            hub: Arc::default(),
        })
    }
}

use axum::http::HeaderValue;
use tower_http::set_header::SetResponseHeaderLayer;

/// Every route: pages, the API, metrics, health and the static assets.
pub fn router(state: AppState) -> Router {
    ops_metrics::install_recorder();
    let routes = Router::new()
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        .merge(live::routes())
        .merge(ops_metrics::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::same_origin,
        ));
    with_security_headers(routes)
        .layer(axum::middleware::from_fn(ops_metrics::access_log))
        .with_state(state)
}

/// The Content-Security-Policy: weir's pages load only their own script and stylesheet, send
/// forms and requests only to weir, and are never framed (clickjacking of "Clear" or "Mark
/// success"). No inline script or style is allowed, so an injected one would not run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers on every response (unless a handler set its own): the CSP, framing refused for
/// older browsers too, no content sniffing (task logs are text/plain), and no referrer sent
/// to other sites (run and task URLs name DAGs).
fn with_security_headers(router: Router<AppState>) -> Router<AppState> {
    use axum::http::header;
    [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ]
    .into_iter()
    .fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}

/// Only `/metrics` and `/health` (for `weir worker` and `weir scheduler`, whose process
/// figures only they know), with the same auth.
pub fn ops_router(state: AppState) -> Router {
    ops_metrics::install_recorder();
    Router::new()
        .merge(ops_metrics::routes())
        .layer(axum::middleware::from_fn(ops_metrics::access_log))
        .with_state(state)
}

/// Binds the configured address (port 0 picks a free one: see `local_addr`).
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission).
pub async fn bind(config: &WebConfig) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.bind).await
}

/// Serves on `listener` until `shutdown`.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let hub = Arc::clone(&state.hub);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            // Graceful shutdown waits for every open response, and a live stream lasts as
            // long as its browser tab: end them.
            hub.close();
        })
        .await
}

/// Serves `router` (from [`router`] or [`ops_router`]) on `listener` until `shutdown`.
///
/// # Errors
/// The listener fails.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
