//! The OpenAPI document: valid by a third-party validator (Python's openapi-spec-validator,
//! installed by `.ci/run`), and listing exactly the API's routes, each of which answers.

use reqwest::{Method, StatusCode};
use serde_json::json;
use weir_store::Role;
use weir_testkit::TestDb;

use crate::{Server, json_of};

#[tokio::test]
async fn the_openapi_document_validates_and_matches_the_routes() {
    let server = Server::start(TestDb::sqlite().await).await;
    let res = server
        .http
        .get(format!("{}/api/v1/openapi.json", server.base))
        .send()
        .await
        .expect("openapi");
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("body");
    let doc = json_of(&text);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).expect("write");
    // scripts/test installs the validator in a venv of its own and names its Python here.
    let python = std::env::var("WEIR_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = std::process::Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present,
        "openapi-spec-validator is missing for `{python}`: run scripts/test (it installs it), or set WEIR_TEST_PYTHON to a Python that has it"
    );
    let out = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "the document does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The document lists exactly the routes the role matrix test covers.
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected = crate::routes::route_templates();
    expected.sort();
    assert_eq!(documented, expected);

    // Every operation declares its refusals: 401 always, 403 for each that changes something.
    for (method, path) in &documented {
        let declared = &doc["paths"][path][method]["responses"];
        assert!(
            declared.get("401").is_some(),
            "{method} {path} does not declare 401"
        );
        if method == "post" {
            assert!(
                declared.get("403").is_some(),
                "{method} {path} does not declare 403"
            );
        }
    }

    // Every documented operation answers at its path (a route that does not exist answers
    // 404 with an empty body, or 405), and declares the responses it gives.
    let run = server.trigger(json!({})).await;
    for (method, path) in &documented {
        let concrete = path
            .replace("{dag_id}", "web_demo")
            .replace("{run_id}", &run)
            .replace("{task_id}", "extract");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = (m == Method::POST).then(|| match path.as_str() {
            "/dags/{dag_id}/backfills" => {
                json!({"from": "2024-01-01", "to": "2024-01-01", "dry_run": true})
            }
            "/runs/{run_id}/mark" => json!({"state": "success", "task_ids": ["report"]}),
            _ => json!({}),
        });
        let (status, text) = server.api(Some(Role::Admin), m, &concrete, body).await;
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED
                && !(status == StatusCode::NOT_FOUND && text.is_empty()),
            "{method} {path} is documented but not served: {status}"
        );
        let declared = &doc["paths"][path][method]["responses"];
        assert!(
            declared.get(status.as_u16().to_string()).is_some(),
            "{method} {path} answered {status}, which the document does not declare: {declared}"
        );
    }
}
