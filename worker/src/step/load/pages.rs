//! HTTP sources: one download, or an API's pages followed one after another (`paginate`).
//!
//! Each page is streamed to a temporary file of its own (read like a file afterwards, removed
//! with the load) and fetched with its own retries: a 5xx, a 429 (after its `Retry-After`) or a
//! network failure is tried again up to [`ATTEMPTS`] times before the page fails the task,
//! naming the page. `records: PATH` takes each page's array from inside an object; the
//! records are then written one JSON object a line, so that a reject names the page and the
//! record's place in it.

use std::collections::HashSet;
use std::time::Duration;

use weir_model::spec::{LoadSource, Paginate, SourceFormat};

use super::{LoadError, format_of_content_type, format_of_name};
use crate::log::LogSink;
use crate::step::http::url_label;

/// Tries of one page before it fails the task.
const ATTEMPTS: u32 = 5;

/// The longest wait between two tries of a page (a larger `Retry-After` is cut to it).
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Pages followed at most unless `max_pages` says otherwise.
const DEFAULT_MAX_PAGES: u32 = 1000;

/// One downloaded page, ready to be read like a file.
pub(crate) struct Page {
    pub(crate) file: tempfile::NamedTempFile,
    /// The page's URL (secret-like query parameters hidden), and its number when paginated.
    pub(crate) label: String,
    pub(crate) format: SourceFormat,
}

/// Downloads `url`, and with `paginate` every page after it, in order.
pub(crate) async fn download(
    source: &LoadSource,
    url: &str,
    log: &LogSink,
) -> Result<Vec<Page>, LoadError> {
    let client = crate::step::http::client().map_err(LoadError::fatal)?;
    let base = reqwest::Url::parse(url)
        .map_err(|e| LoadError::fatal(format!("{}: not a URL: {e}", url_label(url))))?;
    let paginate = source.paginate.as_deref();
    let max_pages = paginate.map_or(1, |p| p.max_pages.unwrap_or(DEFAULT_MAX_PAGES));
    // Page and offset pagination count records from the first page's number on.
    let mut position = paginate.map_or(0, |p| {
        p.start
            .unwrap_or(if p.page_param.is_some() { 1 } else { 0 })
    });
    let mut next = Some(match paginate.and_then(numbered_param) {
        Some(param) => with_param(&base, param, &position.to_string()),
        None => base.clone(),
    });
    // `records` is a path inside JSON pages, whatever the server calls them.
    let mut format = source
        .format
        .or_else(|| source.records.as_ref().map(|_| SourceFormat::Json));
    let mut pages = Vec::new();
    let mut seen = HashSet::new();
    while let Some(url) = next.take() {
        let number = pages.len() + 1;
        let label = if paginate.is_some() {
            format!("{} (page {number})", url_label(url.as_str()))
        } else {
            url_label(url.as_str())
        };
        if number > usize::try_from(max_pages).unwrap_or(usize::MAX) {
            return Err(LoadError::fatal(format!(
                "{label}: the API has more than `max_pages` ({max_pages}) pages; raise `max_pages` to load them all"
            )));
        }
        if !seen.insert(url.to_string()) {
            return Err(LoadError::fatal(format!(
                "{label}: the API sent the same page again (a pagination loop)"
            )));
        }
        let (file, headers) = fetch(client, source, &url, &label, log).await?;
        let format = *format.get_or_insert_with(|| {
            format_of_name(url.path())
                .or_else(|| {
                    headers
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(format_of_content_type)
                })
                .unwrap_or(SourceFormat::Csv)
        });
        let wants_json = format == SourceFormat::Json
            && (source.records.is_some()
                || paginate.is_some_and(|p| p.next.as_deref().is_some_and(|n| n != "link_header"))
                || paginate.is_some_and(|p| numbered_param(p).is_some()));
        let document = if wants_json {
            Some(read_json(&file, &label)?)
        } else {
            None
        };
        let page = match (&source.records, &document) {
            (Some(path), Some(doc)) => {
                let Some(serde_json::Value::Array(records)) = lookup(doc, path) else {
                    return Err(LoadError::fatal(format!(
                        "{label}: no array at `{path}` in the page"
                    )));
                };
                Page {
                    file: json_lines(records, &label)?,
                    label,
                    format: SourceFormat::Jsonl,
                }
            }
            _ => Page {
                file,
                label,
                format,
            },
        };
        let Some(p) = paginate else {
            pages.push(page);
            break;
        };
        next = if let Some(param) = numbered_param(p) {
            let count = match (&source.records, &document) {
                (Some(path), Some(doc)) => lookup(doc, path)
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len),
                (None, Some(serde_json::Value::Array(a))) => a.len(),
                _ => count_records(&page, source)?,
            };
            if count == 0 {
                log.note(format!("{}: no records, the last page", page.label));
                break;
            }
            position += if p.page_param.is_some() {
                1
            } else {
                u64::try_from(count).unwrap_or(u64::MAX)
            };
            Some(with_param(&base, param, &position.to_string()))
        } else {
            match p.next.as_deref() {
                Some("link_header") => link_next(&headers)
                    .map(|n| url.join(&n))
                    .transpose()
                    .map_err(|e| LoadError::fatal(format!("{}: the next link: {e}", page.label)))?,
                Some(path) => {
                    let value = document.as_ref().and_then(|d| lookup(d, path));
                    let token = match value {
                        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    };
                    match (token, &p.cursor_param) {
                        (None, _) => None,
                        (Some(cursor), Some(param)) => Some(with_param(&base, param, &cursor)),
                        (Some(link), None) => Some(url.join(&link).map_err(|e| {
                            LoadError::fatal(format!(
                                "{}: `{path}` is not a URL ({e}); set `cursor_param` if it is a cursor",
                                page.label
                            ))
                        })?),
                    }
                }
                None => None,
            }
        };
        pages.push(page);
    }
    if paginate.is_some() {
        log.note(format!("read {} page(s)", pages.len()));
    }
    Ok(pages)
}

/// The query parameter a page or offset goes in.
fn numbered_param(p: &Paginate) -> Option<&str> {
    p.page_param.as_deref().or(p.offset_param.as_deref())
}

/// `url` with query parameter `name` set to `value` (replacing it when present).
fn with_param(url: &reqwest::Url, name: &str, value: &str) -> reqwest::Url {
    let mut out = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    out
}

/// The `rel="next"` target of a response's `Link` headers.
fn link_next(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .any(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_matches('"')
                            .split_whitespace()
                            .any(|r| r == "next")
                })
                .then(|| target.to_owned())
        })
}

/// The value at a dot path (`links.next`; a number indexes an array).
fn lookup<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(doc, |v, key| match v {
        serde_json::Value::Object(m) => m.get(key),
        serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn read_json(file: &tempfile::NamedTempFile, label: &str) -> Result<serde_json::Value, LoadError> {
    let reader = std::io::BufReader::new(
        file.reopen()
            .map_err(|e| LoadError::fatal(format!("{label}: {e}")))?,
    );
    serde_json::from_reader(reader)
        .map_err(|e| LoadError::fatal(format!("{label}: the page is not JSON: {e}")))
}

/// Records written one JSON value a line.
fn json_lines(
    records: &[serde_json::Value],
    label: &str,
) -> Result<tempfile::NamedTempFile, LoadError> {
    use std::io::Write as _;
    let local = |e: std::io::Error| LoadError {
        retryable: true,
        message: format!("{label}: writing a temporary file: {e}"),
    };
    let file = tempfile::NamedTempFile::new().map_err(local)?;
    let mut out = std::io::BufWriter::new(file.reopen().map_err(local)?);
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(|e| local(e.into()))?;
        out.write_all(b"\n").map_err(local)?;
    }
    out.flush().map_err(local)?;
    Ok(file)
}

/// Records in a CSV or JSON-lines page (data rows, blank lines not counted).
fn count_records(page: &Page, source: &LoadSource) -> Result<usize, LoadError> {
    use std::io::BufRead as _;
    let io = |e: std::io::Error| LoadError::fatal(format!("{}: {e}", page.label));
    match page.format {
        // Read as the load reads it (delimiter, quote, header).
        SourceFormat::Csv => Ok(
            super::csv_rows::reader(source, page.file.reopen().map_err(io)?)?
                .byte_records()
                .count(),
        ),
        _ => Ok(std::io::BufReader::new(page.file.reopen().map_err(io)?)
            .split(b'\n')
            .filter(|l| l.as_ref().is_ok_and(|l| !l.trim_ascii().is_empty()))
            .count()),
    }
}

/// One page to a temporary file, with its own retries; returns it with the response headers.
async fn fetch(
    client: &reqwest::Client,
    source: &LoadSource,
    url: &reqwest::Url,
    label: &str,
    log: &LogSink,
) -> Result<(tempfile::NamedTempFile, reqwest::header::HeaderMap), LoadError> {
    let mut attempt = 1;
    loop {
        let (reason, wait) = match fetch_once(client, source, url, label).await {
            Ok(page) => return Ok(page),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(reason, retry_after)) => (reason, retry_after),
        };
        if attempt >= ATTEMPTS {
            return Err(LoadError {
                retryable: true,
                message: format!("{label}: {reason} (tried {ATTEMPTS} times)"),
            });
        }
        let wait = wait
            .unwrap_or_else(|| Duration::from_secs(1 << (attempt - 1)))
            .min(MAX_WAIT);
        log.note(format!(
            "{label}: {reason}; trying the page again in {:.1}s (attempt {} of {ATTEMPTS})",
            wait.as_secs_f64(),
            attempt + 1
        ));
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

enum Failure {
    /// Another try may pass: why, and how long the server asked to wait.
    Transient(String, Option<Duration>),
    Fatal(LoadError),
}

async fn fetch_once(
    client: &reqwest::Client,
    source: &LoadSource,
    url: &reqwest::Url,
    label: &str,
) -> Result<(tempfile::NamedTempFile, reqwest::header::HeaderMap), Failure> {
    use tokio::io::AsyncWriteExt;
    let mut request = client.get(url.clone());
    for (name, value) in &source.headers {
        request = request.header(name, value);
    }
    let network = |e: reqwest::Error| Failure::Transient(e.without_url().to_string(), None);
    let mut response = request.send().await.map_err(network)?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let excerpt: String = body.chars().take(300).collect();
        let reason = format!("the server answered {status}: {excerpt}");
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            Failure::Transient(reason, retry_after)
        } else {
            Failure::Fatal(LoadError::fatal(format!("{label}: {reason}")))
        });
    }
    let local = |e: std::io::Error| {
        Failure::Fatal(LoadError {
            retryable: true,
            message: format!("{label}: writing a temporary file: {e}"),
        })
    };
    let file = tempfile::NamedTempFile::new().map_err(local)?;
    let mut out = tokio::fs::File::from_std(file.reopen().map_err(local)?);
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        out.write_all(&chunk).await.map_err(local)?;
    }
    out.flush().await.map_err(local)?;
    Ok((file, response.headers().clone()))
}

/// A `Retry-After` header: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            "<https://api.example/r?page=1>; rel=\"prev\", <https://api.example/r?page=3>; rel=\"next\", <https://api.example/r?page=9>; rel=\"last\""
                .parse()
                .expect("header"),
        );
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://api.example/r?page=3")
        );
        h.insert(
            reqwest::header::LINK,
            "<https://api.example/r?page=1>; rel=\"first\""
                .parse()
                .expect("header"),
        );
        assert_eq!(link_next(&h), None);
    }

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let doc = serde_json::json!({"links": {"next": "u"}, "meta": [{"c": 5}]});
        assert_eq!(lookup(&doc, "links.next"), Some(&serde_json::json!("u")));
        assert_eq!(lookup(&doc, "meta.0.c"), Some(&serde_json::json!(5)));
        assert_eq!(lookup(&doc, "links.prev"), None);
    }

    #[test]
    fn a_parameter_is_replaced_not_repeated() {
        let u = reqwest::Url::parse("https://a.example/x?page=1&per_page=50").expect("url");
        assert_eq!(
            with_param(&u, "page", "2").as_str(),
            "https://a.example/x?per_page=50&page=2"
        );
    }
}
