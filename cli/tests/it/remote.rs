//! Remote mode: the CLI with `WEIR_API_URL` and `WEIR_API_TOKEN` asks a running weir through
//! its API, from a folder with no database (none is created there), with the local output
//! shapes and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::{Standalone, examples_copy, stderr, stdout};

/// Runs `weir` in `dir` against the API at `url` with `token`.
pub(super) fn remote(dir: &std::path::Path, url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .env("WEIR_API_URL", url)
        .env("WEIR_API_TOKEN", token)
        .output()
        .expect("weir")
}

pub(super) fn token_for(dir: &std::path::Path, name: &str, role: &str) -> String {
    let mut create = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["users", "create", name, "--role", role, "--password-stdin"])
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("users create");
    create
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long password\n")
        .expect("password");
    assert!(create.wait().expect("wait").success());
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["users", "token", name])
        .current_dir(dir)
        .env_remove("WEIR_DATABASE_URL")
        .output()
        .expect("users token");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

#[test]
fn the_cli_works_against_a_remote_weir() {
    let server_dir = examples_copy();
    let standalone = Standalone::start(server_dir.path());
    let url = standalone.url.clone();
    let operator = token_for(server_dir.path(), "ops", "operator");
    let viewer = token_for(server_dir.path(), "watcher", "viewer");
    let here = tempfile::tempdir().expect("tempdir");
    let dir = here.path();
    let check = || -> Result<(), String> {
        let o = remote(dir, &url, &operator, &["dags", "list", "--json"]);
        let dags: serde_json::Value = serde_json::from_str(&stdout(&o))
            .map_err(|e| format!("dags list: {e}: {}", stderr(&o)))?;
        if !dags
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["dag_id"] == "hello_shell"))
        {
            return Err(format!("no hello_shell in {dags}"));
        }
        let o = remote(
            dir,
            &url,
            &operator,
            &[
                "trigger",
                "hello_shell",
                "--param",
                "greeting=from afar",
                "--logical-date",
                "2024-02-01",
                "--wait",
                "--json",
            ],
        );
        if o.status.code() != Some(0) {
            return Err(format!("trigger: {:?} {}", o.status.code(), stderr(&o)));
        }
        let run: serde_json::Value =
            serde_json::from_str(&stdout(&o)).map_err(|e| e.to_string())?;
        if run["state"] != "success" || run["tasks"].as_array().map(Vec::len) != Some(5) {
            return Err(format!("trigger --wait: {run}"));
        }
        let run_id = run["run_id"].as_str().unwrap_or("").to_owned();
        let o = remote(
            dir,
            &url,
            &operator,
            &["trigger", "hello_shell", "--logical-date", "2024-02-01"],
        );
        if o.status.code() != Some(2) || !stderr(&o).contains("--rerun") {
            return Err(format!(
                "a second trigger at the same date: {:?} {}",
                o.status.code(),
                stderr(&o)
            ));
        }
        // Text output is the local one: the DAG's zone, durations in words (ms precision).
        let o = remote(dir, &url, &operator, &["runs", "show", &run_id]);
        let text = stdout(&o);
        if !text.contains("logical date 2024-02-01 00:00 CET (2024-01-31T23:00:00Z)")
            || !text.contains("ms\n")
            || text.contains(" 0s")
        {
            return Err(format!("runs show: {text}"));
        }
        let o = remote(
            dir,
            &url,
            &operator,
            &["runs", "list", "hello_shell", "--limit", "5"],
        );
        if !stdout(&o).starts_with("RUN ID") || !stdout(&o).contains(&run_id) {
            return Err(format!("runs list: {} {}", stdout(&o), stderr(&o)));
        }
        let o = remote(
            dir,
            &url,
            &operator,
            &["logs", &run_id, "greet", "--try", "9"],
        );
        if o.status.code() != Some(2) || !stderr(&o).contains("no try 9 of task `greet`") {
            return Err(format!(
                "logs --try 9: {:?} {}",
                o.status.code(),
                stderr(&o)
            ));
        }
        let o = remote(dir, &url, &operator, &["runs", "show", &run_id, "--json"]);
        let shown: serde_json::Value =
            serde_json::from_str(&stdout(&o)).map_err(|e| e.to_string())?;
        if shown["run_id"] != run_id.as_str() || shown["logical_date"] != "2024-01-31T23:00:00Z" {
            return Err(format!("runs show: {shown}"));
        }
        let log = stdout(&remote(dir, &url, &operator, &["logs", &run_id, "greet"]));
        // `ds` is the DAG's day: midnight in Zurich (23:00 UTC the day before) renders 02-01.
        if !log.contains("from afar from 2024-02-01") {
            return Err(format!("logs: {log}"));
        }
        let followed = remote(
            dir,
            &url,
            &operator,
            &["logs", &run_id, "greet", "--follow"],
        );
        if stdout(&followed) != log {
            return Err(format!(
                "logs --follow of a finished try differs:\n{}\nvs\n{log}",
                stdout(&followed)
            ));
        }
        let o = remote(
            dir,
            &url,
            &operator,
            &["clear", "hello_shell", "--run", &run_id, "--task", "greet"],
        );
        if !stdout(&o).contains("cleared 1 task instance(s)") {
            return Err(format!("clear: {} {}", stdout(&o), stderr(&o)));
        }
        let o = remote(dir, &url, &viewer, &["trigger", "hello_shell"]);
        if o.status.code() != Some(2) || !stderr(&o).contains("operator role") {
            return Err(format!(
                "a viewer's trigger: {:?} {}",
                o.status.code(),
                stderr(&o)
            ));
        }
        let o = remote(dir, &url, "weir_wrong", &["runs", "list", "hello_shell"]);
        if o.status.code() != Some(2) || !stderr(&o).contains("unknown API token") {
            return Err(format!(
                "a wrong token: {:?} {}",
                o.status.code(),
                stderr(&o)
            ));
        }
        Ok(())
    };
    let outcome = check();
    drop(standalone);
    outcome.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !dir.join(".weir").exists(),
        "remote mode created a local database"
    );
}

/// `weir logs --follow` reads the live log as Server-Sent Events however the server's bytes
/// are cut: an event split between two chunks, a UTF-8 character split between two chunks,
/// CRLF line ends. The server is a real HTTP server on loopback answering weir's two log
/// routes, the live one in four pieces sent 50 ms apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_reads_events_however_they_are_cut() {
    use axum::routing::get;
    use futures_util::StreamExt as _;
    const PIECES: [&[u8]; 4] = [
        b"event: lines\r\ndata: [{\"id\": 1, \"stream\": \"stdout\", \"line\": \"caf\xC3",
        b"\xA9 \xE2\x9C",
        b"\x93\"}]\r\n\r\nevent: li",
        b"nes\ndata: [{\"id\": 2, \"stream\": \"stdout\", \"line\": \"second\"}]\n\nevent: end\ndata: success\n\n",
    ];
    let live = || async {
        let pieces = futures_util::stream::iter(PIECES).then(|piece| async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(piece))
        });
        (
            [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
            axum::body::Body::from_stream(pieces),
        )
    };
    let app = axum::Router::new()
        .route("/api/v1/runs/{run}/tasks/{task}/logs", get(|| async { "" }))
        .route("/live/runs/{run}/tasks/{task}/log", get(live));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let here = tempfile::tempdir().expect("tempdir");
    let out = tokio::task::spawn_blocking(move || {
        remote(
            here.path(),
            &url,
            "a-token",
            &["logs", "r1", "t1", "--follow"],
        )
    })
    .await
    .expect("weir");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "café ✓\nsecond\n");
}
