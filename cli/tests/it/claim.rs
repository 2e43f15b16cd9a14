//! Files that arrive, loaded once each without shell glue: `wait_for` lists every match
//! (`files`), a mapped `load` claims each file (moved into a folder of its own before reading),
//! picks its columns by the file's shape (`column_sets`), and archives it after the commit; a
//! later run loads only what arrived since, and a failed load leaves its file claimed.

use weir_model::{RunState, TaskState};
use weir_testkit::{DataBackend, TestDataDb, TestDb};

use crate::data::{engine_with, query_text};

fn dag(landing: &str, claimed: &str, archive: &str) -> String {
    format!(
        r#"id: landing
tasks:
  arrived:
    kind: wait_for
    file: "{landing}/*.csv"
    interval: 1s
  load:
    kind: load
    depends_on: [arrived]
    foreach: "{{{{ tasks.arrived.outputs.files | tojson }}}}"
    source:
      file: "{{{{ item }}}}"
      header: false
      claim: {{move_to: "{claimed}", archive_to: "{archive}"}}
    target: {{conn: wh, table: "{{{{ item | split(pat='/') | last | replace(from='.csv', to='') }}}}"}}
    column_set: "{{{{ item | split(pat='/') | last | replace(from='.csv', to='') }}}}"
    column_sets:
      departments:
        id: {{type: int, not_null: true}}
        department: {{type: text}}
      jobs:
        id: {{type: int, not_null: true}}
        job: {{type: text}}
      hired_employees:
        id: {{type: int, not_null: true}}
        name: {{type: text}}
        hired_at: {{type: timestamptz}}
        department_id: {{type: int}}
        job_id: {{type: int}}
"#
    )
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("under").display().to_string())
        .collect();
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arriving_files_are_claimed_loaded_once_and_archived() {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (landing, claimed, archive) = (
        dir.path().join("landing"),
        dir.path().join("claimed"),
        dir.path().join("archive"),
    );
    std::fs::create_dir(&landing).expect("landing");
    std::fs::write(landing.join("departments.csv"), "1,Data\n2,Ops\n").expect("csv");
    std::fs::write(
        landing.join("jobs.csv"),
        "1,Engineer\n2,Analyst\n3,Manager\n",
    )
    .expect("csv");
    std::fs::write(
        landing.join("hired_employees.csv"),
        "1,Ada,2021-11-07T01:30:00Z,1,2\n2,Grace,2021-03-01T08:00:00Z,2,1\n",
    )
    .expect("csv");
    let text = dag(
        &landing.display().to_string(),
        &claimed.display().to_string(),
        &archive.display().to_string(),
    );
    let mut engine = engine_with(&data, &meta, &[("landing.yaml", &text)]).await;
    let run = engine.trigger("landing", serde_json::json!({})).await;
    let done = engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    assert_eq!(done.state, RunState::Success, "{tis:?}");
    let arrived = tis
        .iter()
        .find(|t| t.task_id == "arrived")
        .expect("arrived");
    assert_eq!(
        arrived.outputs.as_ref().map(|o| o["files"].clone()),
        Some(serde_json::json!([
            landing.join("departments.csv").display().to_string(),
            landing.join("hired_employees.csv").display().to_string(),
            landing.join("jobs.csv").display().to_string(),
        ]))
    );
    for (table, rows) in [("departments", 2), ("jobs", 3), ("hired_employees", 2)] {
        assert_eq!(
            query_text(&data, &format!("select count(*) from {table}")).await,
            [[Some(rows.to_string())]],
            "{table}"
        );
    }
    assert_eq!(
        query_text(
            &data,
            "select name from hired_employees where department_id = 2"
        )
        .await,
        [[Some("Grace".to_owned())]]
    );
    // Nothing is left to load twice; each file is archived under its run and map index.
    assert!(files_under(&landing).is_empty());
    assert!(
        files_under(&claimed).is_empty(),
        "{:?}",
        files_under(&claimed)
    );
    let run_folder = run.run_id.replace('/', "_");
    assert_eq!(
        files_under(&archive),
        [
            format!("{run_folder}/load.0/departments.csv"),
            format!("{run_folder}/load.1/hired_employees.csv"),
            format!("{run_folder}/load.2/jobs.csv"),
        ]
    );
    let load0 = tis
        .iter()
        .find(|t| t.task_id == "load" && t.map_index == 0)
        .expect("load 0");
    assert_eq!(
        load0.outputs.as_ref().map(|o| o["files"].clone()),
        Some(serde_json::json!([archive
            .join(&run_folder)
            .join("load.0/departments.csv")
            .display()
            .to_string()]))
    );

    // A new file arrives: the next run loads it alone.
    std::fs::write(landing.join("departments.csv"), "3,Finance\n").expect("csv");
    engine.clock.advance(chrono::Duration::hours(1));
    let run2 = engine.trigger("landing", serde_json::json!({})).await;
    assert_eq!(engine.drive(&run2.run_id).await.state, RunState::Success);
    assert_eq!(
        query_text(&data, "select id, department from departments order by id").await,
        [
            [Some("1".to_owned()), Some("Data".to_owned())],
            [Some("2".to_owned()), Some("Ops".to_owned())],
            [Some("3".to_owned()), Some("Finance".to_owned())],
        ]
    );

    // A file that fails to load stays claimed (not back in landing, not archived).
    std::fs::write(landing.join("jobs.csv"), "x,Broken\n").expect("csv");
    engine.clock.advance(chrono::Duration::hours(1));
    let run3 = engine.trigger("landing", serde_json::json!({})).await;
    assert_eq!(engine.drive(&run3.run_id).await.state, RunState::Failed);
    let failed = engine
        .tasks(&run3.run_id)
        .await
        .into_iter()
        .find(|t| t.task_id == "load")
        .expect("load");
    assert_eq!(failed.state, TaskState::Failed);
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("jobs.csv line 1"), "{error}");
    assert!(files_under(&landing).is_empty());
    assert_eq!(
        files_under(&claimed),
        [format!("{}/load.0/jobs.csv", run3.run_id.replace('/', "_"))]
    );
}
