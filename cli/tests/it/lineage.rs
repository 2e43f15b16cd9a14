//! OpenLineage: each try's START and COMPLETE or FAIL, with its input and output datasets and
//! row counts, posted to a local HTTP sink and valid against the specification's JSON Schemas
//! (vendored in tests/data/openlineage); an endpoint that is down delays the events, never
//! the run, and loses none.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use weir_model::RunState;
use weir_model::clock::Clock;
use weir_notify::{LineageEndpoint, LineageSender};
use weir_testkit::engine::{Engine, worker_config};
use weir_testkit::{DataBackend, TestDataDb, per_backend};

/// A sink: `/lineage` keeps each body; `/down` answers 503.
async fn sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let app = axum::Router::new()
        .route(
            "/lineage",
            post(move |body: String| {
                let kept = Arc::clone(&kept);
                async move {
                    kept.lock()
                        .expect("lock")
                        .push(serde_json::from_str(&body).expect("json"));
                    StatusCode::CREATED
                }
            }),
        )
        .route("/down", post(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), bodies)
}

fn schema_file(name: &str) -> Value {
    let path = format!(
        "{}/tests/data/openlineage/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("schema json")
}

/// A validator of `#/$defs/{def}` of the core schema, or of a facet file's root.
fn validator(target: Value) -> jsonschema::Validator {
    let core = schema_file("OpenLineage");
    let id = core["$id"].as_str().expect("$id").to_owned();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_resource(
            id,
            jsonschema::Resource::from_contents(core).expect("resource"),
        )
        .build(&target)
        .expect("compiles")
}

fn problems(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

const DAG: &str = r#"id: lineage_demo
tasks:
  load:
    kind: load
    source: {file: "DIR/orders.csv"}
    target: {conn: wh, table: orders}
    mode: replace
  broken:
    kind: shell
    depends_on: [load]
    run: echo nope >&2; exit 4
"#;

per_backend!(
    each_try_tells_openlineage_and_a_down_endpoint_loses_nothing,
    |meta: TestDb| {
        let data = TestDataDb::new(DataBackend::Postgres).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("orders.csv"),
            "id,amount\n1,10\n2,20\n3,30\n",
        )
        .expect("csv");
        let mut wcfg = worker_config();
        wcfg.connections = [("wh".to_owned(), data.url.clone())].into_iter().collect();
        wcfg.lineage_namespace = Some("weir-test".into());
        let text = DAG.replace("DIR", &dir.path().display().to_string());
        let mut engine = Engine::with_worker(&meta, &[("lineage.yaml", &text)], wcfg).await;
        let (base, bodies) = sink().await;
        let clock = Arc::clone(&engine.clock) as Arc<dyn Clock>;

        // The endpoint is down while the run goes: the run is not held up.
        let run = engine.trigger("lineage_demo", serde_json::json!({})).await;
        let down = LineageSender::new(
            engine.store.clone(),
            Arc::clone(&clock),
            LineageEndpoint {
                url: format!("{base}/down"),
                api_key: None,
            },
        );
        assert_eq!(down.drain().await.expect("drain"), 0);
        let done = engine.drive(&run.run_id).await;
        assert_eq!(done.state, RunState::Failed);
        assert_eq!(down.drain().await.expect("drain"), 0);
        let waiting = engine.store.lineage_outbox().await.expect("outbox");
        assert_eq!(waiting.len(), 4, "{waiting:?}");
        assert!(
            waiting[0].2.as_deref().is_some_and(|e| e.contains("503")),
            "{waiting:?}"
        );

        // Back up: every event goes, in order, once.
        engine.clock.advance(chrono::Duration::minutes(10));
        let up = LineageSender::new(
            engine.store.clone(),
            clock,
            LineageEndpoint {
                url: format!("{base}/lineage"),
                api_key: Some("k".into()),
            },
        );
        assert_eq!(up.drain().await.expect("drain"), 4);
        assert_eq!(up.drain().await.expect("drain"), 0);
        let outbox = engine.store.lineage_outbox().await.expect("outbox");
        assert!(
            outbox.len() == 4 && outbox.iter().all(|r| r.4),
            "{outbox:?}"
        );
        let events = bodies.lock().expect("lock").clone();
        let kinds: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["job"]["name"].as_str().unwrap_or("").to_owned(),
                    e["eventType"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("lineage_demo.load".to_owned(), "START".to_owned()),
                ("lineage_demo.load".to_owned(), "COMPLETE".to_owned()),
                ("lineage_demo.broken".to_owned(), "START".to_owned()),
                ("lineage_demo.broken".to_owned(), "FAIL".to_owned()),
            ]
        );
        // Each try's two events share its run id; the DAG run is their parent.
        assert_eq!(events[0]["run"]["runId"], events[1]["run"]["runId"]);
        assert_ne!(events[0]["run"]["runId"], events[2]["run"]["runId"]);
        assert_eq!(
            events[1]["run"]["facets"]["parent"]["job"]["name"],
            "lineage_demo"
        );
        // The load's datasets, by OpenLineage's naming, with its row count.
        let complete = &events[1];
        let output = &complete["outputs"][0];
        assert_eq!(
            output["namespace"],
            format!("postgres://127.0.0.1:5432"),
            "{complete}"
        );
        assert!(
            output["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(".public.orders")),
            "{complete}"
        );
        assert_eq!(
            output["outputFacets"]["outputStatistics"]["rowCount"], 3,
            "{complete}"
        );
        assert_eq!(complete["inputs"][0]["namespace"], "file", "{complete}");
        assert_eq!(
            complete["inputs"][0]["name"],
            format!("{}/orders.csv", dir.path().display())
        );
        assert!(
            events[3]["run"]["facets"]["errorMessage"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("exit code 4")),
            "{}",
            events[3]
        );

        // Every event is a valid RunEvent, and every facet valid against its own schema.
        let run_event = validator(
            serde_json::json!({"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"}),
        );
        let facets = [
            ("ParentRunFacet", "parent"),
            ("NominalTimeRunFacet", "nominalTime"),
            ("ErrorMessageRunFacet", "errorMessage"),
        ];
        let job_type = validator(schema_file("JobTypeJobFacet"));
        let stats = validator(schema_file("OutputStatisticsOutputDatasetFacet"));
        for e in &events {
            assert_eq!(problems(&run_event, e), Vec::<String>::new(), "{e}");
            for (file, key) in facets {
                let facet = &e["run"]["facets"][key];
                if !facet.is_null() {
                    let v = validator(schema_file(file));
                    let doc = serde_json::json!({ key: facet });
                    assert_eq!(problems(&v, &doc), Vec::<String>::new(), "{file}: {doc}");
                }
            }
            assert_eq!(
                problems(&job_type, &e["job"]["facets"]),
                Vec::<String>::new(),
                "{e}"
            );
            for o in e["outputs"].as_array().into_iter().flatten() {
                if !o["outputFacets"].is_null() {
                    assert_eq!(
                        problems(&stats, &o["outputFacets"]),
                        Vec::<String>::new(),
                        "{o}"
                    );
                }
            }
        }
        // Retention deletes the delivered events with the old runs.
        weir_scheduler::delete_old_runs(
            &engine.store,
            engine.clock.now() + chrono::Duration::seconds(1),
        )
        .await
        .expect("retention");
        let left = LineageSender::new(
            engine.store.clone(),
            Arc::clone(&engine.clock) as Arc<dyn Clock>,
            LineageEndpoint {
                url: format!("{base}/lineage"),
                api_key: None,
            },
        );
        assert_eq!(left.drain().await.expect("drain"), 0);
        assert!(
            engine
                .store
                .lineage_outbox()
                .await
                .expect("outbox")
                .is_empty()
        );
        // A schema that fails on a broken event (the check can fail).
        let mut broken = events[1].clone();
        broken["eventTime"] = Value::String("yesterday".into());
        broken["run"]["runId"] = Value::String("not-a-uuid".into());
        assert_eq!(problems(&run_event, &broken).len(), 2, "{broken}");
    }
);
