//! `kind: http`: one HTTP request (reqwest over rustls).
//!
//! The status must be one of `expect_status` (default: any 2xx). With `save_to`, the body is
//! streamed to that file (written beside it, renamed into place); otherwise a body of up to
//! [`BODY_OUTPUT_LIMIT`] bytes becomes the `body` output. Outputs: `status`, `bytes`, and
//! `body` or `path`. A 5xx status, a timeout or a connection failure may succeed on a retry;
//! another unexpected status will not.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use weir_model::spec::{HttpMethod, HttpStep};

use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Largest body kept as the `body` output (a bigger one needs `save_to`).
pub const BODY_OUTPUT_LIMIT: usize = 64 * 1024;

/// How long connecting may take; the whole request is bounded by the task's `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One client per process: connection pools are shared between tries.
pub fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // reqwest is built without a default crypto provider; ring is the one in the tree.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("building the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A URL as logs and errors show it: secret-like query parameters (`token`, `key`, `secret`,
/// `password`, `signature`, `sig`, `auth`, `access_token`, ...) and a password read `***`; the
/// rest stays, so that one page can be told from another.
pub fn url_label(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.split(['?', '#']).next().unwrap_or(url).to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        name == "sig"
            || [
                "token",
                "key",
                "secret",
                "passw",
                "signature",
                "auth",
                "credential",
            ]
            .iter()
            .any(|word| name.contains(word))
    };
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let shown = if secret(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), shown)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A GET's pages (`paginate`), each with its own retries as a `load` fetches them, their
/// records written to `save_to` one JSON value a line (beside it, then renamed into place).
/// Outputs: `pages`, `records`, `bytes`, `path`.
async fn pages(
    step: &HttpStep,
    log: &LogSink,
) -> Result<serde_json::Map<String, serde_json::Value>, (String, bool)> {
    use std::io::{BufRead as _, Write as _};
    let source = weir_model::spec::LoadSource {
        http: Some(step.url.clone()),
        headers: step.headers.clone(),
        format: Some(weir_model::spec::SourceFormat::Json),
        records: step.records.clone(),
        paginate: step.paginate.clone(),
        ..weir_model::spec::LoadSource::default()
    };
    let pages = super::load::pages::download(&source, &step.url, log)
        .await
        .map_err(|e| (e.message, e.retryable))?;
    let Some(to) = step.save_to.as_ref().map(PathBuf::from) else {
        return Err(("`paginate` needs `save_to`".into(), false));
    };
    let partial = super::partial_path(&to);
    let io = |what: &str, e: std::io::Error| (format!("{what}: {e}"), true);
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| io(&format!("creating {}", parent.display()), e))?;
    }
    let written: Result<u64, (String, bool)> = (|| {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&partial)
                .map_err(|e| io(&format!("creating {}", partial.display()), e))?,
        );
        let mut records = 0_u64;
        for page in &pages {
            let file = page.file.reopen().map_err(|e| io(&page.label, e))?;
            if page.format == weir_model::spec::SourceFormat::Jsonl {
                // Already one record a line (`records` was taken out of the page).
                for line in std::io::BufReader::new(file).lines() {
                    let line = line.map_err(|e| io(&page.label, e))?;
                    if !line.trim().is_empty() {
                        writeln!(out, "{line}")
                            .map_err(|e| io(&partial.display().to_string(), e))?;
                        records += 1;
                    }
                }
            } else {
                let doc: serde_json::Value = serde_json::from_reader(std::io::BufReader::new(file))
                    .map_err(|e| (format!("{}: the page is not JSON: {e}", page.label), false))?;
                let items = match doc {
                    serde_json::Value::Array(items) => items,
                    other => vec![other],
                };
                for item in items {
                    writeln!(out, "{item}").map_err(|e| io(&partial.display().to_string(), e))?;
                    records += 1;
                }
            }
        }
        out.into_inner()
            .map_err(|e| io(&partial.display().to_string(), e.into_error()))?
            .sync_all()
            .map_err(|e| io(&partial.display().to_string(), e))?;
        std::fs::rename(&partial, &to)
            .map_err(|e| io(&format!("moving to {}", to.display()), e))?;
        Ok(records)
    })();
    let records = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let bytes = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
    log.note(format!(
        "saved {records} record(s) of {} page(s) to {}",
        pages.len(),
        to.display()
    ));
    let mut outputs = serde_json::Map::new();
    outputs.insert("pages".into(), pages.len().into());
    outputs.insert("records".into(), records.into());
    outputs.insert("bytes".into(), bytes.into());
    outputs.insert("path".into(), to.display().to_string().into());
    Ok(outputs)
}

/// Runs a rendered `http` step.
pub async fn run(step: &HttpStep, conns: &crate::conn::Connections, log: &LogSink) -> TaskOutcome {
    let done = match step
        .save_to
        .as_deref()
        .filter(|t| weir_storage::is_store_url(t))
    {
        Some(dest) => save_to_store(step, dest, conns.stores(), log).await,
        None => request(step, log).await,
    };
    match done {
        Ok(outputs) => TaskOutcome::Succeeded { outputs },
        Err((error, retryable)) => {
            log.note(&error);
            TaskOutcome::Failed { error, retryable }
        }
    }
}

/// `save_to` on a store: the body (or the pages' records) goes to a temporary file first, then
/// up to the location, where it appears only once complete.
async fn save_to_store(
    step: &HttpStep,
    dest: &str,
    stores: &weir_storage::Stores,
    log: &LogSink,
) -> Result<serde_json::Map<String, serde_json::Value>, (String, bool)> {
    let to = weir_storage::Location::parse(dest).map_err(|e| (e.message, false))?;
    let dir = tempfile::tempdir().map_err(|e| (format!("a temporary folder: {e}"), true))?;
    let local = dir.path().join("body");
    let mut first = step.clone();
    first.save_to = Some(local.display().to_string());
    let mut outputs = request(&first, log).await?;
    let from = weir_storage::Location::parse(&local.display().to_string())
        .map_err(|e| (e.message, false))?;
    let bytes = stores
        .copy(&from, &to)
        .await
        .map_err(|e| (e.message, e.retryable))?;
    log.note(format!("uploaded {bytes} bytes to {to}"));
    outputs.insert("path".into(), to.to_string().into());
    Ok(outputs)
}

async fn request(
    step: &HttpStep,
    log: &LogSink,
) -> Result<serde_json::Map<String, serde_json::Value>, (String, bool)> {
    if step.paginate.is_some() {
        return pages(step, log).await;
    }
    let client = client().map_err(|e| (e, false))?;
    let method = match step.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
        HttpMethod::Head => reqwest::Method::HEAD,
    };
    let mut req = client.request(method.clone(), &step.url);
    for (k, v) in &step.headers {
        req = req.header(k, v);
    }
    if let Some(json) = &step.json {
        req = req.json(json);
    } else if let Some(body) = &step.body {
        req = req.body(body.clone());
    }
    let shown = url_label(&step.url);
    log.note(format!("{method} {shown}"));
    let mut response = req.send().await.map_err(|e| {
        let retryable = e.is_timeout() || e.is_connect() || e.is_request();
        (format!("{method} {shown}: {}", e.without_url()), retryable)
    })?;
    let status = response.status();
    let expected = if step.expect_status.is_empty() {
        status.is_success()
    } else {
        step.expect_status.contains(&status.as_u16())
    };
    if !expected {
        let body = response.text().await.unwrap_or_default();
        let shown: String = body.chars().take(500).collect();
        return Err((
            format!(
                "{method} {}: status {status}, expected {}; body: {shown}",
                url_label(&step.url),
                if step.expect_status.is_empty() {
                    "2xx".to_owned()
                } else {
                    format!("{:?}", step.expect_status)
                }
            ),
            status.is_server_error() || status.as_u16() == 429,
        ));
    }
    let mut outputs = serde_json::Map::new();
    outputs.insert("status".into(), status.as_u16().to_string().into());
    if !step.output_headers.is_empty() {
        // The headers asked for, by their lower-case names; several values are joined by `, `.
        let headers: serde_json::Map<String, serde_json::Value> = step
            .output_headers
            .iter()
            .map(|name| {
                let values: Vec<&str> = response
                    .headers()
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let value = if values.is_empty() {
                    serde_json::Value::Null
                } else {
                    values.join(", ").into()
                };
                (name.to_ascii_lowercase(), value)
            })
            .collect();
        outputs.insert("headers".into(), headers.into());
    }
    if let Some(to) = &step.save_to {
        let to = PathBuf::from(to);
        let partial = super::partial_path(&to);
        if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| (format!("creating {}: {e}", parent.display()), true))?;
        }
        let mut file = std::fs::File::create(&partial)
            .map_err(|e| (format!("creating {}: {e}", partial.display()), true))?;
        let mut bytes = 0_u64;
        let written: Result<(), (String, bool)> = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| (format!("reading the body: {e}"), true))?
            {
                file.write_all(&chunk)
                    .map_err(|e| (format!("writing {}: {e}", partial.display()), true))?;
                bytes += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            }
            file.sync_all()
                .map_err(|e| (format!("writing {}: {e}", partial.display()), true))?;
            std::fs::rename(&partial, &to)
                .map_err(|e| (format!("moving to {}: {e}", to.display()), true))
        }
        .await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        log.note(format!(
            "status {status}; saved {bytes} bytes to {}",
            to.display()
        ));
        outputs.insert("bytes".into(), bytes.to_string().into());
        outputs.insert("path".into(), to.display().to_string().into());
    } else {
        let body = response
            .bytes()
            .await
            .map_err(|e| (format!("reading the body: {e}"), true))?;
        log.note(format!("status {status}; {} bytes", body.len()));
        outputs.insert("bytes".into(), body.len().to_string().into());
        if body.len() <= BODY_OUTPUT_LIMIT {
            outputs.insert(
                "body".into(),
                String::from_utf8_lossy(&body).into_owned().into(),
            );
        }
    }
    Ok(outputs)
}
