//! The serving processes as a user runs them: started, used, and stopped with a signal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `weir standalone` stops promptly on SIGTERM while a browser keeps a live view open: the
/// live streams end with the server (axum's graceful shutdown waits for every open response,
/// and an SSE response otherwise lasts as long as its tab). Issue #15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_stops_on_sigterm_with_a_live_view_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/d.yaml"),
        "id: d\ntasks:\n  a: {kind: noop}\n",
    )
    .expect("dag");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["standalone", "--no-auth", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("weir standalone");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("web UI at http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        })
        .expect("the address it serves on");
    // Keep reading its output, so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    // reqwest is built without a default TLS provider (the workspace picks ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut stream = reqwest::Client::new()
        .get(format!("http://{address}/live/dags/d/grid"))
        .send()
        .await
        .expect("live view");
    assert!(stream.status().is_success(), "{}", stream.status());
    // The first event: the stream is open and serving.
    let first = stream.chunk().await.expect("first event");
    assert!(first.is_some_and(|c| !c.is_empty()));

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("weir standalone still runs 20 s after SIGTERM with a live view open");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    // The live view was ended by the server, not left hanging.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(
        rest.is_ok(),
        "the live stream stayed open after the server stopped"
    );
}
