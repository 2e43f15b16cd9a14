//! The web UI in a real headless Chromium (Debian's `chromium`, driven by playwright-core
//! from npm; `.ci/run` installs both): a `weir standalone` on the example DAGs, and
//! web/e2e/e2e.mjs logs in, triggers, watches the grid turn green live, follows a task's
//! live log, clears a task and sees it rerun, and checks a viewer can neither see nor POST a
//! trigger. Screenshots go to a temporary folder, or to docs/screenshots/ with
//! `WEIR_SCREENSHOTS=docs`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Standalone, examples_copy, repo, stderr};

/// A DAG whose one task logs a line every 0.4 s for 4 s: long enough to watch live.
const SLOW_LOG: &str = "id: slow_log
description: Logs slowly, for the browser test's live log
tasks:
  tick:
    kind: shell
    run: 'for i in 1 2 3 4 5 6 7 8 9 10; do echo \"tick $i\"; sleep 0.4; done'
";

const FIXME_BROKEN: &str = "id: fixme
description: Fails until its file is fixed, for the browser test's rerun on the latest version
tasks:
  step: {kind: shell, run: echo broken; exit 3}
";

const FIXME_FIXED: &str = "id: fixme
description: Fails until its file is fixed, for the browser test's rerun on the latest version
tasks:
  step: {kind: shell, run: echo fixed-version}
";

#[test]
fn the_web_ui_works_in_a_real_browser() {
    let e2e = repo().join("web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/test (it runs `npm ci` in web/e2e)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists() || std::env::var("CHROMIUM").is_ok(),
        "Chromium is missing: run scripts/test (it installs Debian's chromium), or set CHROMIUM"
    );
    let dir = examples_copy();
    std::fs::write(dir.path().join("dags/slow_log.yaml"), SLOW_LOG).expect("slow_log");
    // A file that does not import: the DAG list shows it in its banner, whole however long.
    std::fs::write(
        dir.path().join("dags/broken.yaml"),
        format!(
            "id: broken\ntasks:\n  a: {{kind: shel{}}}\n",
            "l".repeat(300)
        ),
    )
    .expect("broken");
    // A DAG that fails until the browser test fixes its file (FIXME_FILE), then reruns it on
    // the fixed version.
    std::fs::write(dir.path().join("dags/fixme.yaml"), FIXME_BROKEN).expect("fixme");
    let standalone = Standalone::start(dir.path());
    let base = standalone.url.clone();
    let password = standalone
        .admin_password
        .clone()
        .expect("standalone printed the first admin's password");
    let mut create = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "users",
            "create",
            "viewer",
            "--role",
            "viewer",
            "--password-stdin",
        ])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("users create");
    create
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"viewer-password\n")
        .expect("password");
    assert!(create.wait().expect("wait").success());
    let shots = match std::env::var("WEIR_SCREENSHOTS") {
        Ok(d) => repo().join(d).join("screenshots"),
        Err(_) => dir.path().join("screenshots"),
    };
    let out = Command::new("node")
        .arg(e2e.join("e2e.mjs"))
        .current_dir(&e2e)
        .env("BASE_URL", base.trim_end_matches('/'))
        .env("ADMIN_PASSWORD", &password)
        .env("VIEWER_PASSWORD", "viewer-password")
        .env("FIXME_FILE", dir.path().join("dags/fixme.yaml"))
        .env("FIXME_FIXED", FIXME_FIXED)
        .env("SHOTS", &shots)
        .output()
        .expect("node");
    drop(standalone);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    for shot in [
        "login",
        "dags",
        "dags-dark",
        "trigger",
        "grid",
        "graph",
        "task-log",
        "run",
        "backfill",
        "audit",
        "viewer-dag",
        "conflict",
        "version-diff",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "no {shot}.png");
    }
}
