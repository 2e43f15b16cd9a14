//! Notifications end to end: a real `weir standalone` (on SQLite, then on Postgres) with email
//! notifiers sending to a real SMTP server (STARTTLS with a test CA, AUTH) and webhooks
//! posting to a real HTTP server, both on loopback ports started by the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use weir_store::NoticeEvent;
use weir_testkit::smtp::SmtpSink;
use weir_testkit::{TestDb, per_backend};

/// An HTTP sink: `/hook` keeps every JSON body, `/broken` answers 500.
async fn webhook_sink() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let app = axum::Router::new()
        .route(
            "/hook",
            post(move |Json(body): Json<serde_json::Value>| {
                let kept = Arc::clone(&kept);
                async move {
                    kept.lock().expect("lock").push(body);
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/broken",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), bodies)
}

const FAILING: &str = "id: doomed_dag
on_failure: [mail]
on_success: [hook]
tasks:
  doomed:
    kind: shell
    run: echo trying; exit 3
    retries: 1
    retry_delay: 0s
    on_retry: [hook, broken]
    on_failure: [mail]
";

const SUCCEEDING: &str = "id: fine_dag
on_failure: [mail]
on_success: [hook]
tasks:
  fine:
    kind: shell
    run: echo fine
    on_failure: [mail]
";

/// Runs a CLI command in `dir` (its `weir.toml` reads `$BROKEN_HOOK`, so it is set).
async fn weir(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env("WEIR_DATABASE_URL", url)
        .env("BROKEN_HOOK", "http://unused.invalid/")
        .output()
        .await
        .expect("run weir")
}

/// A failing run tells the webhook about its retry, mails the task's final failure and the
/// run's failure; a succeeding run posts its success; a notifier answering 500 is retried and
/// never touches the run; messages carry the run, task, ds, error and a log link.
async fn notifications_reach_mail_and_webhooks(db: TestDb) {
    let smtp = SmtpSink::start(true).await;
    let (hooks, bodies) = webhook_sink().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("dags");
    std::fs::write(dir.path().join("dags/doomed.yaml"), FAILING).expect("dag");
    std::fs::write(dir.path().join("dags/fine.yaml"), SUCCEEDING).expect("dag");
    std::fs::write(
        dir.path().join("ca.pem"),
        smtp.ca_pem.as_deref().expect("ca"),
    )
    .expect("ca");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!(
            r#"[web]
base_url = "http://weir.test:8080/"

[smtp]
host = "localhost"
port = {port}
tls = "starttls"
from = "weir@example.org"
username = "weir"
ca_file = "ca.pem"

[notifiers.mail]
kind = "email"
to = ["ops@example.org", "oncall@example.org"]

[notifiers.hook]
kind = "webhook"
url = "{hooks}/hook"

[notifiers.broken]
kind = "webhook"
url = "${{BROKEN_HOOK}}"
"#,
            port = smtp.port
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("standalone.log")).expect("log");
    let mut standalone = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("standalone")
        .current_dir(dir.path())
        .env("WEIR_DATABASE_URL", &db.url)
        .env("WEIR_WEB_BIND", "127.0.0.1:0")
        .env("SMTP_PASSWORD", "smtp-secret")
        .env("BROKEN_HOOK", format!("{hooks}/broken"))
        .env("RUST_LOG", "weir_scheduler=info,weir_notify=info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("standalone");

    let failed = weir(
        dir.path(),
        &db.url,
        &["trigger", "doomed_dag", "--wait", "--json"],
    )
    .await;
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let failed: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    let fine = weir(
        dir.path(),
        &db.url,
        &["trigger", "fine_dag", "--wait", "--json"],
    )
    .await;
    assert_eq!(fine.status.code(), Some(0), "{fine:?}");
    let fine: serde_json::Value = serde_json::from_slice(&fine.stdout).expect("json");

    let mails = smtp.wait_for(2, Duration::from_secs(20)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while bodies.lock().expect("lock").len() < 2 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The broken hook was tried and its failure recorded, and no more mail or post follows.
    let outbox_until = tokio::time::Instant::now() + Duration::from_secs(20);
    let failed_id = failed["run_id"].as_str().expect("run id").to_owned();
    let outbox = loop {
        let rows = db.store.notifications(&failed_id).await.expect("outbox");
        if rows.iter().any(|r| r.error.is_some()) || tokio::time::Instant::now() >= outbox_until {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = standalone.start_kill();
    let _ = standalone.wait().await;
    let log = std::fs::read_to_string(dir.path().join("standalone.log")).expect("log");

    // Mail: the task's final failure and the run's failure, over STARTTLS, logged in.
    let mails = {
        let mut m = mails;
        m.extend(smtp.received().into_iter().skip(m.len()));
        m
    };
    assert_eq!(mails.len(), 2, "{mails:#?}\n{log}");
    for m in &mails {
        assert!(m.over_tls, "mail sent before STARTTLS: {m:?}");
        assert!(m.auth.is_some(), "no AUTH: {m:?}");
        assert_eq!(m.from, "weir@example.org");
        assert_eq!(m.to, ["ops@example.org", "oncall@example.org"]);
        assert!(
            m.text().contains(&format!("Run:   {failed_id}")),
            "{}",
            m.data
        );
        assert!(m.text().contains("ds:    "), "{}", m.data);
        assert!(!m.text().contains("smtp-secret"));
    }
    let subjects: Vec<String> = mails
        .iter()
        .filter_map(|m| {
            m.text()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("weir: task doomed of doomed_dag failed, try 2 of 2 (")),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("weir: doomed_dag failed (")),
        "{subjects:?}"
    );
    let task_mail = mails
        .iter()
        .find(|m| m.text().contains("Subject: weir: task doomed"))
        .expect("task mail");
    assert!(
        task_mail.text().contains("Error: exit code 3"),
        "{}",
        task_mail.text()
    );
    let log_link = format!(
        "Log:   http://weir.test:8080/runs/{}/tasks/doomed?try=2",
        failed_id.replace(':', "%3A")
    );
    assert!(task_mail.text().contains(&log_link), "{}", task_mail.text());
    let run_mail = mails
        .iter()
        .find(|m| m.text().contains("Subject: weir: doomed_dag failed"))
        .expect("run mail");
    assert!(
        run_mail.text().contains("Error: doomed: exit code 3"),
        "{}",
        run_mail.text()
    );

    // Webhooks: the retry of try 1 and the success of the other run, Slack's `text` first.
    let bodies = bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2, "{bodies:#?}\n{log}");
    let retry = bodies
        .iter()
        .find(|b| b["weir"]["event"] == "task_retry")
        .expect("retry post");
    assert_eq!(retry["weir"]["run_id"], failed["run_id"]);
    assert_eq!(retry["weir"]["task_id"], "doomed");
    assert_eq!(retry["weir"]["try_number"], 1);
    assert_eq!(retry["weir"]["error"], "exit code 3");
    assert_eq!(
        retry["weir"]["ds"],
        failed["logical_date"].as_str().expect("date")[..10]
    );
    assert!(
        retry["text"]
            .as_str()
            .expect("text")
            .starts_with("weir: task doomed of doomed_dag will retry after try 1 of 2"),
        "{retry}"
    );
    let success = bodies
        .iter()
        .find(|b| b["weir"]["event"] == "run_succeeded")
        .expect("success post");
    assert_eq!(success["weir"]["run_id"], fine["run_id"]);

    // The outbox: everything sent but the broken hook, which failed and waits to retry.
    let mut summary: Vec<(String, NoticeEvent, bool, Option<String>)> = outbox
        .iter()
        .map(|r| {
            (
                r.notifier.clone(),
                r.notice.event,
                r.sent_at.is_some(),
                r.error.clone(),
            )
        })
        .collect();
    summary.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    assert_eq!(
        summary,
        [
            (
                "broken".to_owned(),
                NoticeEvent::TaskRetry,
                false,
                Some("webhook answered 500 Internal Server Error".to_owned())
            ),
            ("hook".to_owned(), NoticeEvent::TaskRetry, true, None),
            ("mail".to_owned(), NoticeEvent::RunFailed, true, None),
            ("mail".to_owned(), NoticeEvent::TaskFailed, true, None),
        ]
    );
    // The failing notifier is logged without its URL (a secret).
    assert!(log.contains("notification not sent"), "{log}");
    assert!(!log.contains("/broken"), "{log}");
}

per_backend!(notifications_reach_mail_and_webhooks, |db: TestDb| {
    notifications_reach_mail_and_webhooks(db).await;
});

const ETL: &str = "id: etl
on_success: [plain, custom, hook]
tasks:
  schema:
    kind: sql
    conn: wh
    sql:
      - create table cases (id integer primary key, n integer)
      - insert into cases (id, n) values (1, 0)
  load:
    kind: load
    depends_on: [schema]
    source: {file: cases.csv}
    target: {conn: wh, table: cases}
    columns:
      id: {type: int}
      n: {type: int}
    mode: upsert
    key: [id]
";

/// Messages that say what happened: the default one lists every load's counts; a notifier's
/// own subject and body are templates over the run's tasks, outputs and totals; mail is
/// proper MIME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_carry_the_load_counts_and_follow_templates() {
    let db = TestDb::sqlite().await;
    let smtp = SmtpSink::start(false).await;
    let (hooks, bodies) = webhook_sink().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("dags");
    std::fs::write(dir.path().join("dags/etl.yaml"), ETL).expect("dag");
    std::fs::write(dir.path().join("cases.csv"), "id,n\n1,5\n2,7\n3,9\n").expect("csv");
    let config = |custom_body: &str| {
        format!(
            r#"[web]
base_url = "http://weir.test:8080"

[connections.wh]
url = "sqlite://{wh}?mode=rwc"

[smtp]
host = "127.0.0.1"
port = {port}
tls = "none"
from = "weir@example.org"

[notifiers.plain]
kind = "email"
to = ["ops@example.org"]

[notifiers.custom]
kind = "email"
to = ["boss@example.org"]
subject = "{{{{ dag_id }}}} {{{{ ds }}}}: {{{{ totals.rows_inserted }}}} inserted, {{{{ totals.rows_updated }}}} updated"
body = """{custom_body}"""

[notifiers.hook]
kind = "webhook"
url = "{hooks}/hook"
subject = "{{{{ dag_id }}}} {{{{ tasks.load.state }}}}"
body = "loaded {{{{ tasks.load.outputs.rows_loaded }}}}"
"#,
            wh = dir.path().join("wh.db").display(),
            port = smtp.port
        )
    };
    // A template that does not parse stops weir at start, naming the notifier and the place.
    std::fs::write(dir.path().join("weir.toml"), config("{% for l in loads %}")).expect("config");
    let broken = weir(dir.path(), &db.url, &["dags", "list"]).await;
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("notifier `custom`: body template, line 1"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("weir.toml"),
        config("{% for l in loads %}{{ l.task_id }}={{ l.counts.rows_inserted }}/{{ l.counts.rows_updated }}\n{% endfor %}state={{ tasks.load.state }} url={{ url }}"),
    )
    .expect("config");
    let mut standalone = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("standalone")
        .current_dir(dir.path())
        .env("WEIR_DATABASE_URL", &db.url)
        .env("WEIR_WEB_BIND", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("standalone");
    let run = weir(dir.path(), &db.url, &["trigger", "etl", "--wait", "--json"]).await;
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let run: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    let ds = &run["logical_date"].as_str().expect("date")[..10];
    let mails = smtp.wait_for(2, Duration::from_secs(20)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while bodies.lock().expect("lock").is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = standalone.start_kill();
    let _ = standalone.wait().await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let to = |who: &str| mails.iter().find(|m| m.to == [who]).expect("mail").text();
    for mail in [to("ops@example.org"), to("boss@example.org")] {
        for header in [
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Message-ID: <",
            "Date: ",
        ] {
            assert!(
                mail.lines().any(|l| l.starts_with(header)),
                "{header} missing:\n{mail}"
            );
        }
    }
    let plain = to("ops@example.org");
    assert!(
        plain.contains(
            "Loads:\r\n  load: 2 inserted, 1 updated, 0 unchanged, 0 rejected (of 3 read)"
        ) || plain
            .contains("Loads:\n  load: 2 inserted, 1 updated, 0 unchanged, 0 rejected (of 3 read)"),
        "{plain}"
    );
    let custom = to("boss@example.org");
    assert!(
        custom.contains(&format!("Subject: etl {ds}: 2 inserted, 1 updated")),
        "{custom}"
    );
    let run_id = run["run_id"].as_str().expect("run id");
    let link = format!("http://weir.test:8080/runs/{}", run_id.replace(':', "%3A"));
    assert!(
        custom.contains(&format!("load=2/1\r\nstate=success url={link}"))
            || custom.contains(&format!("load=2/1\nstate=success url={link}")),
        "{custom}"
    );
    let bodies = bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["text"], "etl success\nloaded 3");
    assert_eq!(
        bodies[0]["weir"]["tasks"]["load"]["outputs"]["rows_updated"],
        1
    );
}
