//! The HTML pages and forms: login, what each role sees, forms with and without CSRF tokens,
//! escaping, metrics and health.

use reqwest::StatusCode;
use serde_json::json;
use weir_store::Role;
use weir_testkit::TestDb;

use crate::Server;

#[tokio::test]
async fn pages_show_each_role_what_it_may_do() {
    let server = Server::start(TestDb::sqlite().await).await;
    let run = server.trigger(json!({"logical_date": "2024-05-01"})).await;

    // Anonymous: every page sends to the login page, keeping where it was going.
    let res = server
        .http
        .get(format!("{}/dags/web_demo", server.base))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login?next=%2Fdags%2Fweb_demo");

    let (viewer, _) = server.log_in("viewer").await;
    let (operator, _) = server.log_in("operator").await;
    let pages = [
        "/".to_owned(),
        "/dags/web_demo".to_owned(),
        "/dags/web_demo?tab=graph".to_owned(),
        "/dags/web_demo?tab=yaml".to_owned(),
        "/dags/web_demo?tab=runs".to_owned(),
        format!("/runs/{run}"),
        format!("/runs/{run}/tasks/extract"),
    ];
    for page in &pages {
        let (status, html) = server.page(&viewer, page).await;
        assert_eq!(status, StatusCode::OK, "viewer {page}: {html}");
        assert!(
            !html.contains(">Trigger<"),
            "a viewer sees a Trigger button on {page}"
        );
        assert!(
            !html.contains("Mark success"),
            "a viewer sees Mark success on {page}"
        );
        let (status, html) = server.page(&operator, page).await;
        assert_eq!(status, StatusCode::OK, "operator {page}");
        if page == "/" || page == "/dags/web_demo" {
            assert!(
                html.contains(">Trigger<"),
                "the operator has no Trigger on {page}"
            );
        }
    }
    // The grid sits in the DAG page's live region, a cell per task of the run.
    let (_, html) = server.page(&viewer, "/dags/web_demo").await;
    let region = html
        .split_once("<div id=\"grid\"")
        .map(|(_, r)| r)
        .unwrap_or_default();
    assert!(
        region.contains("<div class=\"grid-scroll\">")
            && region.contains("class=\"run-bar state-")
            && region.contains(&format!("data-task=\"extract\" data-run=\"{run}\"")),
        "no grid in the DAG page's live region: {html}"
    );
    let (_, html) = server.page(&viewer, "/").await;
    assert!(
        html.contains("web_demo") && html.contains("every day at 06:00"),
        "{html}"
    );
    let (_, html) = server.page(&viewer, "/dags/web_demo?tab=yaml").await;
    assert!(
        html.contains("echo extracting {{ params.who }}"),
        "the YAML tab shows the file"
    );
    let (_, html) = server.page(&viewer, "/dags/web_demo?tab=graph").await;
    assert_eq!(html.matches("<g class=\"node").count(), 3, "{html}");
    let (_, html) = server
        .page(&viewer, &format!("/runs/{run}/tasks/extract"))
        .await;
    assert!(
        html.contains("echo extracting world"),
        "rendered fields: {html}"
    );
    for forbidden in [
        "/audit",
        "/dags/web_demo/trigger",
        "/dags/web_demo/backfill",
    ] {
        let (status, _) = server.page(&viewer, forbidden).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "viewer {forbidden}");
    }
    let (admin, _) = server.log_in("admin").await;
    let (status, html) = server.page(&admin, "/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("trigger") && html.contains("operator"),
        "{html}"
    );
}

#[tokio::test]
async fn forms_need_the_role_and_the_csrf_token() {
    let server = Server::start(TestDb::sqlite().await).await;
    let url = format!("{}/dags/web_demo/trigger", server.base);
    let form = |csrf: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("logical_date".to_owned(), "2024-04-01".to_owned()),
            ("param.times".to_owned(), "5".to_owned()),
            ("param.loud".to_owned(), "true".to_owned()),
            ("param.who".to_owned(), "<b>you</b>".to_owned()),
        ]
    };
    let (viewer, viewer_csrf) = server.log_in("viewer").await;
    let res = server
        .http
        .post(&url)
        .header("cookie", &viewer)
        .form(&form(&viewer_csrf))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (operator, csrf) = server.log_in("operator").await;
    let res = server
        .http
        .post(&url)
        .header("cookie", &operator)
        .form(&form(""))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.expect("body").contains("CSRF"));
    assert!(
        server
            .store()
            .list_runs(&Default::default())
            .await
            .expect("runs")
            .is_empty()
    );

    let res = server
        .http
        .post(&url)
        .header("cookie", &operator)
        .form(&form(&csrf))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let runs = server
        .store()
        .list_runs(&weir_store::RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].params,
        json!({"who": "<b>you</b>", "times": 5, "loud": true, "region": "eu", "day": "2024-01-01"})
    );
    let location = res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let (status, html) = server.page(&operator, &location).await;
    assert_eq!(status, StatusCode::OK, "{location}");
    assert!(
        !html.contains("<b>you</b>") && html.contains("&lt;b&gt;you"),
        "params are escaped: {html}"
    );

    // A param of the wrong type, or one its declaration does not allow, is refused with 422
    // and its name, as the API refuses it (issue #14).
    for (field, value, says) in [
        ("param.times", "five", "param `times` is a number"),
        ("param.region", "ap", "param `region` must be one of"),
        (
            "param.day",
            "2024-04-02; x",
            "param `day` must match the pattern",
        ),
    ] {
        let mut bad = form(&csrf);
        bad[1].1 = "2024-04-02".to_owned();
        bad.retain(|(k, _)| k != field);
        bad.push((field.to_owned(), value.to_owned()));
        let res = server
            .http
            .post(&url)
            .header("cookie", &operator)
            .form(&bad)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let body = res.text().await.expect("body");
        assert!(body.contains(says), "{field}: {body}");
    }
}

#[tokio::test]
async fn metrics_and_health_report_from_the_database() {
    let server = Server::start(TestDb::sqlite().await).await;
    server.trigger(json!({})).await;
    let res = server
        .http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status(), StatusCode::OK);
    let health: serde_json::Value = res.json().await.expect("json");
    assert_eq!(health["database"], "ok");
    // No scheduler runs in this test: degraded, said so.
    assert_eq!(health["status"], "degraded");
    server
        .store()
        .scheduler_heartbeat("s1", "host", true, 12.5, chrono::Utc::now())
        .await
        .expect("beat");
    let health: serde_json::Value = server
        .http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");

    let anonymous = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let text = server
        .http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(server.token(Role::Viewer))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for line in [
        "weir_runs{state=\"queued\"} 1",
        "weir_task_instances{state=\"scheduled\"} 3",
        "weir_scheduler_loop_seconds{scheduler=\"s1\"} 0.0125",
        "# TYPE weir_queue_depth gauge",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
}

/// A try that ran (claimed and completed as a worker does) shows on the task page: its
/// validation checks as a table, its other outputs, its log, and the try in the tries list.
#[tokio::test]
async fn the_task_page_shows_checks_outputs_and_the_log_of_a_try() {
    let server = Server::start(TestDb::sqlite().await).await;
    let run = server.trigger(json!({"logical_date": "2024-05-02"})).await;
    let store = server.store();
    let now = chrono::Utc::now();
    let ti = store
        .task_instances(&run)
        .await
        .expect("tis")
        .into_iter()
        .find(|t| t.task_id == "extract")
        .expect("extract");
    store
        .transition_tasks(
            &[ti.id],
            weir_model::TaskState::Scheduled,
            weir_model::TaskState::Queued,
            now,
        )
        .await
        .expect("queue");
    let claimed = store
        .claim_tasks(
            "w1",
            &["default".to_owned()],
            10,
            now,
            now + chrono::Duration::minutes(5),
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let outputs = json!({
        "checks": [
            {"check": "row_count >= 10", "passed": true, "severity": "error", "observed": 12, "samples": []},
            {"check": "not_null(email)", "passed": false, "severity": "warn", "observed": 2, "samples": [{"id": 7}]},
        ],
        "checks_passed": 1,
        "checks_failed": 1,
        "rows_checked": 12,
    });
    store
        .complete_task(
            &weir_store::Completion {
                ti_id: ti.id,
                worker_id: "w1".to_owned(),
                try_number: 1,
                state: weir_model::TaskState::Success,
                outputs: Some(outputs),
                error: None,
                due_at: None,
                log: vec![weir_store::NewLogLine {
                    stream: "stdout",
                    text: "validated <12> rows".to_owned(),
                    at: now,
                }],
                give_back_try: false,
                assets: Vec::new(),
                lineage: Vec::new(),
                notify: Vec::new(),
                wake: false,
            },
            now,
        )
        .await
        .expect("complete");
    let (viewer, _) = server.log_in("viewer").await;
    let (status, html) = server
        .page(&viewer, &format!("/runs/{run}/tasks/extract"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let checks = html
        .split("<table class=\"checks\">")
        .nth(1)
        .expect("a checks table");
    let checks = checks.split("</table>").next().expect("its end");
    assert_eq!(
        checks.matches("<tr class=\"passed\">").count(),
        1,
        "{checks}"
    );
    assert_eq!(
        checks.matches("<tr class=\"failed\">").count(),
        1,
        "{checks}"
    );
    assert!(
        checks.contains("not_null(email)") && checks.contains("warn"),
        "{checks}"
    );
    assert!(html.contains("rows_checked"), "the other outputs are shown");
    assert!(
        html.contains("validated &lt;12&gt; rows"),
        "the log, escaped"
    );
    assert!(html.contains("try 1"), "the tries list");
    assert!(
        !html.contains("data-log="),
        "a finished try's log is not live"
    );
}

/// Every response carries the security headers (issue #14): a policy that allows no inline
/// script or style and no framing, `nosniff` (task logs are text/plain), and a same-origin
/// referrer policy. And the login page shows no text taken from its URL.
#[tokio::test]
async fn responses_carry_security_headers_and_the_login_page_says_only_its_own_words() {
    let server = Server::start(TestDb::sqlite().await).await;
    for path in ["/login", "/api/v1/dags", "/static/app.js", "/no/such/page"] {
        let res = server
            .http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .expect("get");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: `{directive}` not in `{csp}`"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "same-origin", "{path}");
    }
    let page = server
        .http
        .get(format!(
            "{}/login?error=Your%20account%20is%20locked%3A%20call%20evil.example",
            server.base
        ))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("body");
    assert!(!page.contains("evil.example"), "{page}");
    assert!(!page.contains("flash error"), "{page}");
}
