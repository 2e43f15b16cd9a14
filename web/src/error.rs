//! One error type for the API (a JSON body `{"error": {"code", "message"}}`) and the pages
//! (the same facts as a small HTML page, see [`PageError`]).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use weir_ops::OpsError;
use weir_store::StoreError;

/// An error answer: HTTP status, a stable machine code and a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WebError {
    /// HTTP status.
    pub status: StatusCode,
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `csrf`,
    /// `too_many_requests`, `internal`.
    pub code: &'static str,
    /// What went wrong, naming the DAG, run, task or field.
    pub message: String,
}

impl WebError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WebError {
        WebError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no or bad credentials.
    pub fn unauthorized(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a role too low.
    pub fn forbidden(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 403: a state-changing request without the session's CSRF token.
    pub fn csrf() -> WebError {
        WebError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong CSRF token: reload the page and try again (API clients: send the X-CSRF-Token header, or use a Bearer token)",
        )
    }

    /// 422: a param the DAG does not have or does not allow.
    pub fn invalid_param(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_param", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 429.
    pub fn too_many(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
    }

    /// 500: the cause is logged once, with the request's id; the answer is a fixed message
    /// naming that id, never the cause (which may carry database text).
    pub fn internal(cause: impl std::fmt::Display) -> WebError {
        // A live view's poller answers no request: its failure gets an id of its own.
        let id = crate::ops_metrics::REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_else(|_| crate::ops_metrics::new_request_id());
        tracing::error!(request_id = %id, error = %cause, "internal error");
        WebError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: the server log has the details under request id {id}"),
        )
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> WebError {
        match e {
            StoreError::NotFound(what) => WebError::not_found(format!("no {what}")),
            StoreError::Conflict(m) => WebError::conflict(m),
            // The database's own words stay in the log.
            e @ StoreError::Duplicate(_) => {
                tracing::info!(error = %e, "refused as a duplicate");
                WebError::conflict("it exists already")
            }
            other => WebError::internal(other),
        }
    }
}

impl From<OpsError> for WebError {
    fn from(e: OpsError) -> WebError {
        match e {
            OpsError::Store(s) => s.into(),
            OpsError::NotFound(m) => WebError::not_found(m),
            OpsError::Invalid(m) => WebError::bad_request(m),
            OpsError::InvalidParam(m) => WebError::invalid_param(m),
            OpsError::Conflict(m) => WebError::conflict(m),
            other => WebError::internal(other),
        }
    }
}

impl From<tera::Error> for WebError {
    fn from(e: tera::Error) -> WebError {
        // The details (with the template's source) go to the log, not to the visitor.
        tracing::error!(error = ?e, "rendering a page failed");
        WebError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the page could not be rendered (the server log has the details)",
        )
    }
}

#[derive(serde::Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(serde::Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A [`WebError`] answered as HTML (pages and forms); an unauthenticated visitor is sent to
/// the login page instead.
#[derive(Debug)]
pub(crate) struct PageError(pub(crate) WebError);

impl<E: Into<WebError>> From<E> for PageError {
    fn from(e: E) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.status == StatusCode::UNAUTHORIZED {
            return axum::response::Redirect::to("/login").into_response();
        }
        let title = e.status.canonical_reason().unwrap_or("Error");
        // The site's own layout (without the user's menu: the error may be that there is no
        // user), rendered by the same embedded templates.
        let page = crate::pages::error_page(e.status.as_u16(), title, &e.message, None, None)
            .unwrap_or_else(|| {
                format!(
                    "<!doctype html><html lang=en><meta charset=utf-8><title>{title} · weir</title>\
                     <main class=error-page><h1>{} {title}</h1><p class=error-message>{}</p><p><a href=\"/\">The DAGs</a></p></main>",
                    e.status.as_u16(),
                    escape(&e.message)
                )
            });
        (e.status, Html(page)).into_response()
    }
}

/// HTML-escapes text for the few places that build markup in Rust (errors, SVG), with
/// tera's escaper (the one the templates use).
pub(crate) fn escape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    // Writing into a Vec cannot fail.
    let _ = tera::escape_html(s, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`escape`], appended to `out`; text with nothing to escape (most ids and states) is copied
/// as it is.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    if s.bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\''))
    {
        out.push_str(&escape(s));
    } else {
        out.push_str(s);
    }
}
