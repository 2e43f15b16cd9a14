//! The `http` step against a real local HTTP server (axum on a loopback port).

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use weir_model::{RunState, TaskState};
use weir_testkit::TestDb;

use weir_testkit::engine::{Engine, worker_config};

/// Serves a few routes on a free loopback port; returns its base URL.
async fn server() -> String {
    let app = axum::Router::new()
        .route("/data.csv", get(|| async { "date,cases\n2024-01-01,3\n" }))
        .route(
            "/echo",
            post(
                |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                    let token = headers
                        .get("x-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    Json(serde_json::json!({"got": body, "token": token}))
                },
            ),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database down") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Requests with headers and JSON bodies, templated; the body saved to a file or kept as an
/// output; expected statuses; an unexpected status fails the task with the body in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_steps_talk_to_a_real_server() {
    let base = server().await;
    let meta = TestDb::sqlite().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = dir.path().join("downloads/data_{{ ds_nodash }}.csv");
    let dag = format!(
        r#"id: web
tasks:
  fetch:
    kind: http
    url: "{base}/data.csv"
    save_to: "{saved}"
    output_headers: [Content-Type, X-Not-There]
  post:
    kind: http
    method: POST
    url: "{base}/echo"
    headers: {{X-Token: "day-{{{{ ds }}}}"}}
    json: {{n: 1, ds: "{{{{ ds }}}}"}}
  teapot:
    kind: http
    url: "{base}/teapot"
    expect_status: [418]
  broken:
    kind: http
    url: "{base}/broken"
"#,
        saved = saved.display()
    );
    let mut engine = Engine::with_worker(&meta, &[("web.yaml", &dag)], worker_config()).await;
    let run = engine.trigger("web", serde_json::json!({})).await;
    assert_eq!(engine.drive(&run.run_id).await.state, RunState::Failed);
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    for ok in ["fetch", "post", "teapot"] {
        assert_eq!(
            by_id(ok).state,
            TaskState::Success,
            "{ok}: {:?}",
            by_id(ok).error
        );
    }
    let path = dir.path().join("downloads/data_20240301.csv");
    assert_eq!(
        std::fs::read_to_string(&path).expect("saved file"),
        "date,cases\n2024-01-01,3\n"
    );
    assert_eq!(
        by_id("fetch").outputs,
        Some(
            serde_json::json!({"status": "200", "bytes": "24", "path": path.display().to_string(),
                "headers": {"content-type": "text/plain; charset=utf-8", "x-not-there": null}})
        )
    );
    let body: serde_json::Value = serde_json::from_str(
        by_id("post").outputs.as_ref().expect("outputs")["body"]
            .as_str()
            .expect("body"),
    )
    .expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"got": {"n": 1, "ds": "2024-03-01"}, "token": "day-2024-03-01"})
    );
    let broken = by_id("broken");
    assert_eq!(broken.state, TaskState::Failed);
    let error = broken.error.clone().unwrap_or_default();
    assert!(
        error.contains("status 500 Internal Server Error, expected 2xx; body: database down"),
        "{error}"
    );
}

/// A server of data files for HTTP loads: a CSV that wants an API key, JSON lines and a JSON
/// array named only by their `Content-Type`, a 404, and a 503 on the first request.
async fn data_server() -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let flaky = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/exports/hires.csv",
            get(|headers: HeaderMap| async move {
                if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("k1") {
                    return (StatusCode::UNAUTHORIZED, "no key").into_response();
                }
                "id,name\n1,Ada\n2,\n3,Grace\n".into_response()
            }),
        )
        .route(
            "/feed",
            get(|| async {
                (
                    [("content-type", "application/x-ndjson")],
                    "{\"id\": 4, \"name\": \"Edsger\"}\n{\"id\": 5, \"name\": \"Barbara\"}\n",
                )
            }),
        )
        .route(
            "/array",
            get(|| async {
                (
                    [("content-type", "application/json; charset=utf-8")],
                    "[\n  {\"id\": 6, \"name\": \"Alan\"},\n  {\"id\": 7},\n  {\"id\": 8,\n   \"name\": \"Kathleen\"}\n]\n",
                )
            }),
        )
        .route("/gone.csv", get(|| async { (StatusCode::NOT_FOUND, "no such export") }))
        .route(
            "/flaky.csv",
            get(move || {
                let n = flaky.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response()
                    } else {
                        "id,name\n9,Frances\n".into_response()
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Loads from HTTP: csv (with a header and a query token kept out of the rejects), JSON lines
/// and a JSON array told apart by `Content-Type`, a JSON-array file told by its extension;
/// rejects name the URL and line; a 404 fails at once, a 503 is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_read_http_sources() {
    let base = data_server().await;
    let meta = TestDb::sqlite().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = format!("sqlite://{}", dir.path().join("wh.db").display());
    let people_json = dir.path().join("people.json");
    std::fs::write(
        &people_json,
        "[{\"id\": 10, \"name\": \"Radia\"}, {\"id\": \"ten\", \"name\": \"Bad\"}]",
    )
    .expect("json file");
    let dag = format!(
        r#"id: downloads
defaults:
  retries: 2
  retry_delay: 1s
tasks:
  hires:
    kind: load
    source: {{http: "{base}/exports/hires.csv?token=s3cr3t", headers: {{x-api-key: k1}}}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint, not_null: true}}
      name: {{type: text, not_null: true}}
    rejects: {{on_error: reject}}
  feed:
    kind: load
    depends_on: [hires]
    source: {{http: "{base}/feed"}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint, not_null: true}}
      name: {{type: text, not_null: true}}
  array:
    kind: load
    depends_on: [feed]
    source: {{http: "{base}/array"}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint, not_null: true}}
      name: {{type: text, not_null: true}}
    rejects: {{on_error: reject}}
  file:
    kind: load
    depends_on: [array]
    source: {{file: "{file}"}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: bigint, not_null: true}}
      name: {{type: text, not_null: true}}
    rejects: {{on_error: reject}}
  flaky:
    kind: load
    depends_on: [file]
    source: {{http: "{base}/flaky.csv"}}
    target: {{conn: wh, table: people}}
  gone:
    kind: load
    source: {{http: "{base}/gone.csv"}}
    target: {{conn: wh, table: gone}}
"#,
        file = people_json.display()
    );
    let mut wcfg = worker_config();
    wcfg.connections = [("wh".to_owned(), wh.clone())].into_iter().collect();
    let mut engine = Engine::with_worker(&meta, &[("downloads.yaml", &dag)], wcfg).await;
    let run = engine.trigger("downloads", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Failed, "`gone` fails");
    let tis = engine.tasks(&run.run_id).await;
    let by_id = |id: &str| tis.iter().find(|t| t.task_id == id).expect("task");
    let counts = |id: &str| {
        let t = by_id(id);
        assert_eq!(t.state, TaskState::Success, "{id}: {:?}", t.error);
        let o = t.outputs.clone().expect("outputs");
        (
            o["rows_read"].clone(),
            o["rows_loaded"].clone(),
            o["rows_rejected"].clone(),
        )
    };
    let n = |v: u64| serde_json::json!(v);
    assert_eq!(counts("hires"), (n(3), n(2), n(1)));
    assert_eq!(counts("feed"), (n(2), n(2), n(0)));
    assert_eq!(counts("array"), (n(3), n(2), n(1)));
    assert_eq!(counts("file"), (n(2), n(1), n(1)));
    assert_eq!(counts("flaky"), (n(1), n(1), n(0)));
    // Each page (here the only one) is retried on its own, within the try.
    assert_eq!(
        by_id("flaky").try_number,
        1,
        "the 503 was retried within the try"
    );
    let gone = by_id("gone");
    assert_eq!(gone.state, TaskState::Failed);
    assert_eq!(gone.try_number, 1, "a 404 is not retried");
    let error = gone.error.as_deref().unwrap_or("");
    assert!(
        error.contains("/gone.csv: the server answered 404 Not Found: no such export"),
        "{error}"
    );

    let pool = sqlx::SqlitePool::connect(&wh).await.expect("wh");
    let names: Vec<(i64, String)> = sqlx::query_as("select id, name from people order by id")
        .fetch_all(&pool)
        .await
        .expect("people");
    let ids: Vec<i64> = names.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 3, 4, 5, 6, 8, 9, 10]);
    assert_eq!(names[5].1, "Kathleen");
    let rejects: Vec<(String, i64, String)> = sqlx::query_as(
        "select source_file, line_number, reason from people__rejects order by source_file, line_number",
    )
    .fetch_all(&pool)
    .await
    .expect("rejects");
    let places: Vec<(String, i64)> = rejects.iter().map(|(f, l, _)| (f.clone(), *l)).collect();
    assert_eq!(
        places,
        [
            (people_json.display().to_string(), 1),
            (format!("{base}/array"), 3),
            // The query stays, its secret-like parameter hidden.
            (format!("{base}/exports/hires.csv?token=***"), 3),
        ],
        "{rejects:?}"
    );
    assert!(rejects.iter().all(|(f, _, _)| !f.contains("s3cr3t")));
    pool.close().await;
}
