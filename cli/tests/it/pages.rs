//! Paginated APIs into Postgres: a real local HTTP server serving 2,000 records in pages, by
//! `Link: rel="next"`, by a next URL or a cursor in the JSON, and by page numbers and offsets;
//! one page fails once with a 500 and one answers 429 with `Retry-After`, and each is retried on
//! its own; logs name each page with its secret query parameters hidden.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use weir_model::{RunState, TaskState};
use weir_testkit::{DataBackend, TestDataDb, TestDb};

use crate::data::{engine_with, query_text};

const RECORDS: usize = 2000;
const PER_PAGE: usize = 75;
const TOKEN: &str = "s3cret-token-value";

type Params = Query<HashMap<String, String>>;

#[derive(Clone, Default)]
struct Api {
    /// Requests per path and query, to fail some pages once.
    seen: Arc<Mutex<HashMap<String, u32>>>,
}

impl Api {
    /// How many times this exact request came before.
    fn before(&self, key: String) -> u32 {
        let mut seen = self.seen.lock().expect("lock");
        let n = seen.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    }
}

fn records(from: usize, count: usize) -> Vec<serde_json::Value> {
    (from..(from + count).min(RECORDS))
        .map(|i| serde_json::json!({"id": i + 1, "name": format!("repo-{}", i + 1), "stars": i % 97}))
        .collect()
}

fn page_of(params: &Params, name: &str, first: usize) -> usize {
    params
        .get(name)
        .and_then(|p| p.parse().ok())
        .unwrap_or(first)
}

/// `Link` pagination as GitHub does it, with a token in the query; page 3 fails once with a
/// 500, page 5 answers 429 with `Retry-After: 1` once.
async fn link(State(api): State<Api>, params: Params) -> Response {
    if params.get("access_token").map(String::as_str) != Some(TOKEN) {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let page = page_of(&params, "page", 1);
    let first_time = api.before(format!("link{page}")) == 0;
    if page == 3 && first_time {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream hiccup").into_response();
    }
    if page == 5 && first_time {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    let last = RECORDS.div_ceil(PER_PAGE);
    let mut headers = HeaderMap::new();
    let link = |p: usize, rel: &str| {
        format!(
            "<http://{{host}}/link?per_page={PER_PAGE}&page={p}&access_token={TOKEN}>; rel=\"{rel}\""
        )
    };
    let mut links = vec![link(1, "first"), link(last, "last")];
    if page < last {
        links.push(link(page + 1, "next"));
    }
    headers.insert("link", links.join(", ").parse().expect("header"));
    (
        headers,
        axum::Json(records((page - 1) * PER_PAGE, PER_PAGE)),
    )
        .into_response()
}

/// `{"items": [...], "meta": {"next_cursor": "..."}}`; the cursor is opaque.
async fn cursor(params: Params) -> Response {
    let at = params
        .get("cursor")
        .and_then(|c| c.strip_prefix("c-"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0_usize);
    let next = (at + PER_PAGE < RECORDS).then(|| format!("c-{}", at + PER_PAGE));
    axum::Json(serde_json::json!({"items": records(at, PER_PAGE), "meta": {"next_cursor": next}}))
        .into_response()
}

/// `{"data": [...], "links": {"next": "/nexturl?page=N"}}` with a relative next URL.
async fn next_url(params: Params) -> Response {
    let page = page_of(&params, "page", 1);
    let next = (page * PER_PAGE < RECORDS).then(|| format!("/nexturl?page={}", page + 1));
    axum::Json(serde_json::json!({"data": records((page - 1) * PER_PAGE, PER_PAGE), "links": {"next": next}}))
        .into_response()
}

/// Page numbers until an empty page: `{"items": [...]}`.
async fn paged(params: Params) -> Response {
    let page = page_of(&params, "page", 1);
    axum::Json(serde_json::json!({"items": records((page - 1) * PER_PAGE, PER_PAGE)}))
        .into_response()
}

/// Offsets until an empty page, as CSV.
async fn offset(params: Params) -> Response {
    let at = page_of(&params, "offset", 0);
    let mut csv = String::from("id,name,stars\n");
    for r in records(at, PER_PAGE) {
        csv.push_str(&format!(
            "{},{},{}\n",
            r["id"],
            r["name"].as_str().unwrap_or(""),
            r["stars"]
        ));
    }
    ([("content-type", "text/csv")], csv).into_response()
}

/// Page 2 is always down.
async fn down(params: Params) -> Response {
    let page = page_of(&params, "page", 1);
    if page == 2 {
        return (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response();
    }
    axum::Json(serde_json::json!({"items": records((page - 1) * PER_PAGE, PER_PAGE)}))
        .into_response()
}

async fn server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route(
            "/link",
            get(move |state: State<Api>, params: Params| async move {
                // The links name the server's own address.
                let response = link(state, params).await;
                let (mut parts, body) = response.into_parts();
                if let Some(l) = parts.headers.get("link").and_then(|v| v.to_str().ok()) {
                    let fixed = l.replace("{host}", &addr.to_string());
                    parts.headers.insert("link", fixed.parse().expect("header"));
                }
                Response::from_parts(parts, body)
            }),
        )
        .route("/cursor", get(cursor))
        .route("/nexturl", get(next_url))
        .route("/paged", get(paged))
        .route("/offset", get(offset))
        .route("/down", get(down))
        .with_state(Api::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_apis_load_every_record_once() {
    let base = server().await;
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let load = |id: &str, source: &str| {
        format!(
            "  {id}:\n    kind: load\n    source: {source}\n    target: {{conn: wh, table: {id}}}\n    columns:\n      id: {{type: bigint, not_null: true}}\n      name: {{type: text}}\n      stars: {{type: int}}\n    rejects: {{on_error: fail}}\n"
        )
    };
    let mut dag = String::from("id: api\ntasks:\n");
    dag.push_str(&load(
        "by_link",
        &format!("{{http: \"{base}/link?per_page={PER_PAGE}&access_token={TOKEN}\", format: json, paginate: {{next: link_header}}}}"),
    ));
    dag.push_str(&load(
        "by_cursor",
        &format!("{{http: \"{base}/cursor\", format: json, records: items, paginate: {{next: meta.next_cursor, cursor_param: cursor}}}}"),
    ));
    dag.push_str(&load(
        "by_next_url",
        &format!("{{http: \"{base}/nexturl\", records: data, paginate: {{next: links.next}}}}"),
    ));
    dag.push_str(&load(
        "by_page",
        &format!("{{http: \"{base}/paged\", records: items, paginate: {{page_param: page}}}}"),
    ));
    dag.push_str(&load(
        "by_offset",
        &format!("{{http: \"{base}/offset\", paginate: {{offset_param: offset}}}}"),
    ));
    dag.push_str(&load(
        "capped",
        &format!("{{http: \"{base}/paged\", records: items, paginate: {{page_param: page, max_pages: 3}}}}"),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = dir.path().join("repos.jsonl");
    dag.push_str(&format!(
        "  fetch_all:\n    kind: http\n    url: \"{base}/cursor\"\n    records: items\n    paginate: {{next: meta.next_cursor, cursor_param: cursor}}\n    save_to: \"{}\"\n",
        saved.display()
    ));
    dag.push_str(&load(
        "down",
        &format!("{{http: \"{base}/down\", records: items, paginate: {{page_param: page}}}}"),
    ));
    let mut engine = engine_with(&data, &meta, &[("api.yaml", &dag)]).await;
    let run = engine.trigger("api", serde_json::json!({})).await;
    let done = engine.drive(&run.run_id).await;
    assert_eq!(done.state, RunState::Failed);
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    for id in [
        "by_link",
        "by_cursor",
        "by_next_url",
        "by_page",
        "by_offset",
    ] {
        let ti = by_id(id);
        assert_eq!(ti.state, TaskState::Success, "{id}: {:?}", ti.error);
        let out = ti.outputs.clone().expect("outputs");
        assert_eq!(
            out["rows_loaded"].as_u64(),
            Some(RECORDS as u64),
            "{id}: {out}"
        );
        assert_eq!(
            query_text(
                &data,
                &format!(
                    "select count(*), count(distinct id), min(id), max(id), sum(stars) from {id}"
                )
            )
            .await,
            [[
                Some(RECORDS.to_string()),
                Some(RECORDS.to_string()),
                Some("1".to_owned()),
                Some(RECORDS.to_string()),
                Some((0..RECORDS).map(|i| i % 97).sum::<usize>().to_string()),
            ]],
            "{id}"
        );
    }
    // The link pages: each logged with its page and without the token; page 3's 500 and page
    // 5's 429 were retried on their own.
    let link_ti = by_id("by_link");
    let log: Vec<String> = engine
        .store()
        .logs(link_ti.id, link_ti.try_number, 0, 10_000)
        .await
        .expect("log")
        .into_iter()
        .map(|l| l.line)
        .collect();
    let text = log.join("\n");
    assert!(!text.contains(TOKEN), "the token reached the log:\n{text}");
    assert!(
        text.contains("page=3&access_token=***") && text.contains("500 Internal Server Error"),
        "{text}"
    );
    assert!(text.contains("429 Too Many Requests"), "{text}");
    assert!(
        text.contains(&format!("read {} page(s)", RECORDS.div_ceil(PER_PAGE))),
        "{text}"
    );
    assert_eq!(
        link_ti.try_number, 1,
        "the page retries kept the task's try"
    );

    // The http step follows the same pages into one file of records.
    let fetched = by_id("fetch_all");
    assert_eq!(fetched.state, TaskState::Success, "{:?}", fetched.error);
    let out = fetched.outputs.clone().expect("outputs");
    assert_eq!(
        (out["pages"].as_u64(), out["records"].as_u64()),
        (
            Some(RECORDS.div_ceil(PER_PAGE) as u64),
            Some(RECORDS as u64)
        ),
        "{out}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&saved)
        .expect("saved")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), RECORDS);
    assert_eq!(lines[RECORDS - 1]["name"], format!("repo-{RECORDS}"));

    let capped = by_id("capped");
    assert_eq!(capped.state, TaskState::Failed);
    let error = capped.error.clone().unwrap_or_default();
    assert!(
        error.contains("max_pages") && error.contains("(page 4)"),
        "{error}"
    );
    let down = by_id("down");
    assert_eq!(down.state, TaskState::Failed);
    let error = down.error.clone().unwrap_or_default();
    assert!(
        error.contains("/down?page=2 (page 2)") && error.contains("503"),
        "{error}"
    );
}
