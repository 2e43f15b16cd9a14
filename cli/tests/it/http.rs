//! The `http` step against a real local HTTP server (axum on a loopback port).

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use weir_model::{RunState, TaskState};
use weir_testkit::TestDb;

use crate::engine::{Engine, worker_config};

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
            serde_json::json!({"status": "200", "bytes": "24", "path": path.display().to_string()})
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
