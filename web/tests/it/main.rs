//! The web server over a real database (SQLite and Postgres), through real HTTP: every API
//! route for every role, CSRF, sessions and the login rate limit, the OpenAPI document
//! (validated by a third-party validator and checked against the routes that answer), the
//! pages, metrics and health.

mod openapi;
mod pages;
mod routes;

use std::sync::Arc;

use chrono::Utc;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weir_model::clock::SystemClock;
use weir_store::{Role, Store};
use weir_testkit::TestDb;
use weir_web::auth::{digest, hash_password, new_api_token};

/// A DAG with two tasks, a param of each type (two declared, with `enum` and `pattern`), and
/// a daily schedule.
pub(crate) const DAG: &str = "id: web_demo
description: a DAG for the web tests
schedule: '0 6 * * *'
timezone: Europe/Paris
start_date: 2024-01-01
tags: [demo]
params:
  who: world
  times: 2
  loud: false
  region: {default: eu, enum: [eu, us], description: where it runs}
  day: {default: '2024-01-01', type: string, pattern: '\\d{4}-\\d{2}-\\d{2}', max_length: 10}
tasks:
  extract: {kind: shell, run: 'echo extracting {{ params.who }}'}
  load: {kind: shell, run: 'echo loading', depends_on: extract}
  report: {kind: noop, depends_on: load}
";

/// A running web server on a test database, with one user (and API token) per role.
pub(crate) struct Server {
    pub(crate) db: TestDb,
    pub(crate) base: String,
    pub(crate) http: Client,
    /// API tokens by role.
    pub(crate) tokens: Vec<(Role, String)>,
    stop: CancellationToken,
}

/// Every user's password in these tests.
pub(crate) const PASSWORD: &str = "correct horse battery";

impl Server {
    pub(crate) async fn start(db: TestDb) -> Server {
        // reqwest is built without a default TLS provider (the workspace picks ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = db.store.clone();
        let spec = weir_testkit::dag(DAG).spec;
        store
            .sync_dag(
                "dags/web_demo.yaml",
                &spec,
                DAG,
                &Default::default(),
                Utc::now(),
            )
            .await
            .expect("sync");
        let mut tokens = Vec::new();
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            let name = role.as_str();
            store
                .create_user(
                    name,
                    role,
                    &hash_password(PASSWORD).expect("hash"),
                    Utc::now(),
                )
                .await
                .expect("user");
            let token = new_api_token();
            store
                .add_token(name, &digest(&token), Utc::now())
                .await
                .expect("token");
            tokens.push((role, token));
        }
        let config = weir_web::WebConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            base_url: "http://localhost".to_owned(),
            no_auth: false,
        };
        let listener = weir_web::bind(&config).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = weir_web::AppState::new(store, config, Arc::new(SystemClock)).expect("state");
        let stop = CancellationToken::new();
        tokio::spawn(weir_web::serve(listener, state, stop.clone()));
        Server {
            db,
            base,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            tokens,
            stop,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.db.store
    }

    pub(crate) fn token(&self, role: Role) -> &str {
        &self
            .tokens
            .iter()
            .find(|(r, _)| *r == role)
            .expect("token")
            .1
    }

    /// An API call as `role` (by Bearer token), or anonymous with `None`.
    pub(crate) async fn api(
        &self,
        role: Option<Role>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(r) = role {
            req = req.bearer_auth(self.token(r));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        (status, res.text().await.expect("body"))
    }

    /// Logs in through the form; returns the session cookie and the page's CSRF token.
    pub(crate) async fn log_in(&self, name: &str) -> (String, String) {
        let res = self
            .http
            .post(format!("{}/login", self.base))
            .form(&[("name", name), ("password", PASSWORD), ("next", "/")])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "login of {name}");
        let cookie = res
            .headers()
            .get("set-cookie")
            .expect("cookie")
            .to_str()
            .expect("ascii")
            .to_owned();
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
        }
        let pair = cookie.split(';').next().expect("pair").to_owned();
        let page = self.page(&pair, "/").await.1;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("csrf token in the page")
            .to_owned();
        (pair, csrf)
    }

    /// A page with a session cookie.
    pub(crate) async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        let status = res.status();
        (status, res.text().await.expect("body"))
    }

    /// Triggers a run by the API as the operator; its id.
    pub(crate) async fn trigger(&self, body: Value) -> String {
        let (status, text) = self
            .api(
                Some(Role::Operator),
                Method::POST,
                "/dags/web_demo/runs",
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let run: Value = serde_json::from_str(&text).expect("json");
        run["run_id"].as_str().expect("run id").to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The error body's code.
pub(crate) fn error_code(text: &str) -> String {
    json_of(text)["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {text}"))
        .to_owned()
}

/// A database failure answers 500 with a fixed message naming the request's id (also in
/// `X-Request-Id`); the database's own words stay in the server log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_answers_a_fixed_message_with_a_request_id() {
    let server = Server::start(TestDb::sqlite().await).await;
    let path = server
        .db
        .url
        .strip_prefix("sqlite://")
        .expect("a SQLite URL")
        .to_owned();
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .expect("open the database");
    sqlx::query("ALTER TABLE weir_runs RENAME TO weir_runs_gone")
        .execute(&db)
        .await
        .expect("break the runs table");
    let res = server
        .http
        .get(format!("{}/api/v1/dags/web_demo/runs", server.base))
        .bearer_auth(server.token(Role::Viewer))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = res
        .headers()
        .get("x-request-id")
        .expect("a request id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(
        body["error"]["message"],
        format!("internal error: the server log has the details under request id {id}")
    );
    // The response carries nothing of the database's text.
    let text = body.to_string();
    assert!(!text.contains("weir_runs"), "{text}");
    assert!(!text.to_lowercase().contains("no such table"), "{text}");
}
