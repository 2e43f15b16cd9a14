//! Every input row is loaded or rejected, in every mode and on every database: rows the target
//! refuses through its constraints (also in `upsert`, whose merge used to fail whole), and
//! malformed CSV rows (wrong field counts, NUL bytes, invalid UTF-8, an unterminated quote),
//! each rejected with its real line and its original bytes.

use weir_model::{RunState, TaskState};
use weir_testkit::{DataBackend, TestDataDb, TestDb, per_backend};

use crate::data::{engine_with, query_text};

/// The target of the constraint tests: two foreign keys, a unique column that is not the key,
/// a CHECK and a NOT NULL the load does not check itself.
fn hired_schema(backend: DataBackend) -> Vec<String> {
    let text = if backend == DataBackend::MariaDb {
        "varchar(60)"
    } else {
        "text"
    };
    vec![
        "create table departments (id integer primary key, name varchar(40))".into(),
        "create table jobs (id integer primary key, name varchar(40))".into(),
        format!(
            "create table hired (id integer primary key, name varchar(40) not null, email {text}, \
             department_id integer, job_id integer, salary integer, \
             constraint hired_dept_fk foreign key (department_id) references departments (id), \
             constraint hired_job_fk foreign key (job_id) references jobs (id), \
             constraint hired_email_uq unique (email), \
             constraint hired_salary_ck check (salary >= 0))"
        ),
        "insert into departments (id, name) values (1, 'Data'), (2, 'Ops')".into(),
        "insert into jobs (id, name) values (1, 'Engineer'), (2, 'Analyst')".into(),
        // Rows an upsert updates.
        "insert into hired (id, name, email, department_id, job_id, salary) values \
         (5, 'Five', 'x5@corp', 1, 1, 10), (6, 'Six', 'x6@corp', 1, 1, 10), (7, 'Seven', 'x7@corp', 2, 2, 10)"
            .into(),
    ]
}

/// What each bad data line is, and a word each backend's message must contain.
struct Bad {
    line: u64,
    /// Postgres, MariaDB, SQLite.
    words: [&'static str; 3],
}

per_backend!(
    /// An upsert of 2,000 rows, nine of which the target refuses: each is rejected with its file
    /// line and the constraint, the others land, and rows_read = rows_loaded + rows_rejected.
    upsert_rejects_each_row_the_target_refuses, |backend: DataBackend| {
        for mode in ["upsert", "append"] {
            upsert_rejects_refused_rows(backend, mode).await;
        }
    }
);

async fn upsert_rejects_refused_rows(backend: DataBackend, mode: &str) {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = 2000_u64;
    // Data row i (1-based) is on file line i + 1 (the header is line 1). Ids 5..=7 exist.
    let fk_dept = [300, 1200, 1999];
    let fk_job = 40;
    let dup_email_update = 5; // id 5 takes id 6's email
    let dup_email_insert = 900; // a new id takes the email of the new id before it
    let negative = [6, 1500];
    let null_name = 1700;
    let mut bad: Vec<Bad> = Vec::new();
    let mut csv = String::from("id,name,email,department_id,job_id,salary\n");
    for i in 1..=rows {
        let mut name = format!("Person {i}");
        let mut email = format!("p{i}@corp");
        let (mut dept, mut job, mut salary) = (1 + i % 2, 1 + i % 2, 100 + i);
        if fk_dept.contains(&i) {
            dept = 99;
            bad.push(Bad {
                line: i + 1,
                words: ["hired_dept_fk", "hired_dept_fk", "FOREIGN KEY"],
            });
        } else if i == fk_job {
            job = 77;
            bad.push(Bad {
                line: i + 1,
                words: ["hired_job_fk", "hired_job_fk", "FOREIGN KEY"],
            });
        } else if i == dup_email_update {
            email = "x6@corp".into();
            bad.push(Bad {
                line: i + 1,
                words: ["hired_email_uq", "hired_email_uq", "hired.email"],
            });
        } else if i == dup_email_insert {
            email = format!("p{}@corp", i - 1);
            bad.push(Bad {
                line: i + 1,
                words: ["hired_email_uq", "hired_email_uq", "hired.email"],
            });
        } else if negative.contains(&i) {
            salary = 0;
            bad.push(Bad {
                line: i + 1,
                words: ["hired_salary_ck", "hired_salary_ck", "hired_salary_ck"],
            });
        } else if i == null_name {
            name = String::new();
            bad.push(Bad {
                line: i + 1,
                words: ["\"name\"", "name", "hired.name"],
            });
        }
        let salary = if negative.contains(&i) {
            "-1".to_owned()
        } else {
            salary.to_string()
        };
        csv.push_str(&format!("{i},{name},{email},{dept},{job},{salary}\n"));
    }
    let file = dir.path().join("hired.csv");
    std::fs::write(&file, &csv).expect("csv");
    // Append meets the existing ids 5..=7 as primary-key conflicts too.
    let append = mode == "append";
    let schema = hired_schema(backend)
        .iter()
        .map(|s| format!("      - \"{s}\"\n"))
        .collect::<String>();
    let dag = format!(
        r#"id: hired
tasks:
  schema:
    kind: sql
    conn: wh
    sql:
{schema}  load:
    kind: load
    depends_on: [schema]
    source: {{file: "{}"}}
    target: {{conn: wh, table: hired, create: never}}
    columns:
      id: {{type: int, not_null: true}}
      name: {{type: text}}
      email: {{type: text}}
      department_id: {{type: int}}
      job_id: {{type: int}}
      salary: {{type: int}}
    mode: {mode}
{key}    batch_size: 700
    rejects: {{on_error: reject}}
"#,
        file.display(),
        key = if append { "" } else { "    key: [id]\n" },
    );
    let mut engine = engine_with(&data, &meta, &[("hired.yaml", &dag)]).await;
    let run = engine.trigger("hired", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let load = tis.iter().find(|t| t.task_id == "load").expect("load");
    assert_eq!(
        (run.state, load.state),
        (RunState::Success, TaskState::Success),
        "{backend:?} {mode}: {:?}",
        load.error
    );
    let out = load.outputs.clone().expect("outputs");
    // Append also meets id 7 (line 8) as a primary-key conflict; ids 5 and 6 are bad anyway.
    let conflicts = u64::from(append);
    let rejected = u64::try_from(bad.len()).expect("count") + conflicts;
    assert_eq!(
        (
            out["rows_read"].as_u64(),
            out["rows_loaded"].as_u64(),
            out["rows_rejected"].as_u64()
        ),
        (Some(rows), Some(rows - rejected), Some(rejected)),
        "{backend:?} {mode}: {out}"
    );
    if !append {
        // Ids 5 and 6 are refused (email, check); 7 is updated; the rest are new.
        assert_eq!(
            (out["rows_updated"].as_u64(), out["rows_inserted"].as_u64()),
            (Some(1), Some(rows - rejected - 1)),
            "{backend:?}: {out}"
        );
    }
    // Every good row landed; no refused one did (the three existing rows kept theirs).
    let landed = query_text(
        &data,
        "select count(*), sum(case when department_id = 99 or job_id = 77 or salary < 0 then 1 else 0 end) from hired",
    )
    .await;
    // The three existing rows, and every new id but the seven refused ones.
    let expected = 3 + (rows - 3 - 7);
    assert_eq!(
        landed,
        [[Some(expected.to_string()), Some("0".to_owned())]],
        "{backend:?} {mode}"
    );
    let rejects = query_text(
        &data,
        "select line_number, reason, raw_row from hired__rejects order by line_number",
    )
    .await;
    let mut expected_lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
    if append {
        expected_lines.extend([6, 7, 8]);
        expected_lines.sort_unstable();
        expected_lines.dedup();
    }
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r[0].as_deref().unwrap_or("").parse().expect("line"))
        .collect();
    assert_eq!(lines, expected_lines, "{backend:?} {mode}: {rejects:?}");
    let which = match backend {
        DataBackend::Postgres => 0,
        DataBackend::MariaDb => 1,
        DataBackend::Sqlite => 2,
    };
    for b in &bad {
        let row = rejects
            .iter()
            .find(|r| r[0].as_deref() == Some(&b.line.to_string()))
            .expect("reject");
        let reason = row[1].clone().unwrap_or_default();
        // In append mode ids 5 and 6 meet the primary key first.
        if append && [6, 7].contains(&b.line) {
            continue;
        }
        assert!(
            reason.contains(b.words[which]),
            "{backend:?} {mode} line {}: {reason}",
            b.line
        );
        assert!(
            !reason.contains(" at line "),
            "{backend:?}: a server source location in {reason}"
        );
        let raw = row[2].clone().unwrap_or_default();
        let data_line = csv.lines().nth(usize::try_from(b.line - 1).expect("line"));
        assert_eq!(Some(raw.as_str()), data_line, "{backend:?} {mode}");
    }
}

per_backend!(
    /// The exact malformed rows of a real trial, in reject mode, on every backend: each is
    /// rejected with its line and original bytes, and no good row is lost or swallowed.
    malformed_csv_rows_are_rejected_alone_with_their_bytes, |backend: DataBackend| {
        malformed_rows(backend).await;
    }
);

async fn malformed_rows(backend: DataBackend) {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv: Vec<u8> = b"id,name,hired_at,department_id,job_id\n".to_vec();
    let good = |csv: &mut Vec<u8>, i: u32| {
        csv.extend_from_slice(format!("{i},Person {i},2021-01-01T00:00:00Z,1,2\n").as_bytes());
    };
    // Data lines are file lines 2..; line n holds id n.
    for i in 2..=41 {
        good(&mut csv, i);
    }
    csv.extend_from_slice(b"42,Nul\0Byte,2021-01-01T00:00:00Z,1,2\n");
    csv.extend_from_slice(b"43,Short,2021-01-01T00:00:00Z\n");
    csv.extend_from_slice(b"44,Long,2021-01-01T00:00:00Z,1,2,extra,more\n");
    csv.extend_from_slice(b"45,Ren\xE9e,2021-01-01T00:00:00Z,1,2\n");
    csv.extend_from_slice(b"46,\"Unterminated,2021-01-01T00:00:00Z,1,2\n");
    for i in 47..=96 {
        good(&mut csv, i);
    }
    // A quoted field later on: a naive reader closes line 46's quote here.
    csv.extend_from_slice(b"97,\"Hopper, Grace\",2021-01-01T00:00:00Z,1,2\n");
    for i in 98..=125 {
        good(&mut csv, i);
    }
    let path = dir.path().join("people.csv");
    std::fs::write(&path, &csv).expect("csv");
    let data_lines = 124_u64;
    let dag = format!(
        r#"id: people
tasks:
  load:
    kind: load
    source: {{file: "{}"}}
    target: {{conn: wh, table: people}}
    columns:
      id: {{type: int, not_null: true}}
      name: {{type: text}}
      hired_at: {{type: timestamptz}}
      department_id: {{type: int}}
      job_id: {{type: int}}
    rejects: {{on_error: reject}}
"#,
        path.display()
    );
    let mut engine = engine_with(&data, &meta, &[("people.yaml", &dag)]).await;
    let run = engine.trigger("people", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    let tis = engine.tasks(&run.run_id).await;
    let load = tis.iter().find(|t| t.task_id == "load").expect("load");
    assert_eq!(
        run.state,
        RunState::Success,
        "{backend:?}: {:?}",
        load.error
    );
    let out = load.outputs.clone().expect("outputs");
    assert_eq!(
        (
            out["rows_read"].as_u64(),
            out["rows_loaded"].as_u64(),
            out["rows_rejected"].as_u64()
        ),
        (Some(data_lines), Some(data_lines - 5), Some(5)),
        "{backend:?}: {out}"
    );
    let ids = query_text(&data, "select id, name from people order by id").await;
    let loaded: Vec<u32> = ids
        .iter()
        .map(|r| r[0].as_deref().unwrap_or("").parse().expect("id"))
        .collect();
    let want: Vec<u32> = (2..=125).filter(|i| !(42..=46).contains(i)).collect();
    assert_eq!(loaded, want, "{backend:?}");
    assert!(
        ids.iter()
            .all(|r| r[1].as_deref().is_some_and(|n| n.len() < 20)),
        "{backend:?}: a name swallowed other lines: {ids:?}"
    );
    let rejects = query_text(
        &data,
        "select line_number, raw_row, reason from people__rejects order by line_number",
    )
    .await;
    let got: Vec<(String, String)> = rejects
        .iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("42", "42,Nul\\x00Byte,2021-01-01T00:00:00Z,1,2"),
            ("43", "43,Short,2021-01-01T00:00:00Z"),
            ("44", "44,Long,2021-01-01T00:00:00Z,1,2,extra,more"),
            ("45", "45,Ren\\xE9e,2021-01-01T00:00:00Z,1,2"),
            ("46", "46,\"Unterminated,2021-01-01T00:00:00Z,1,2"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{backend:?}"
    );
    let reason = |i: usize| rejects[i][2].clone().unwrap_or_default();
    assert!(reason(0).contains("NUL"), "{}", reason(0));
    assert!(reason(1).contains("3 field(s) where 5"), "{}", reason(1));
    assert!(reason(2).contains("7 field(s) where 5"), "{}", reason(2));
    assert!(reason(3).contains("UTF-8"), "{}", reason(3));
    assert!(reason(4).contains("quote"), "{}", reason(4));
}

/// `allow_ragged: true` reads a short row's missing fields as NULL and ignores extra ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ragged_rows_load_when_allowed() {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ragged.csv");
    std::fs::write(&path, "a,b,c\n1,x,y\n2,x\n3,x,y,z\n").expect("csv");
    let dag = format!(
        "id: ragged\ntasks:\n  load:\n    kind: load\n    source: {{file: \"{}\", allow_ragged: true}}\n    target: {{conn: wh, table: ragged}}\n",
        path.display()
    );
    let mut engine = engine_with(&data, &meta, &[("ragged.yaml", &dag)]).await;
    let run = engine.trigger("ragged", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Success);
    assert_eq!(
        query_text(&data, "select a, b, c from ragged order by a").await,
        [
            [Some("1"), Some("x"), Some("y")],
            [Some("2"), Some("x"), None],
            [Some("3"), Some("x"), Some("y")],
        ]
        .map(|r| r.map(|v| v.map(str::to_owned)))
    );
}

/// Reruns append their rejects (the history stays); the `<table>__rejects_latest` view and
/// `weir rejects` show each source line once, `--run` one run's; rejects older than
/// `[retention] keep_rejects` go with the next load; the first rejects are in the outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_keep_their_history_and_show_the_latest_per_line() {
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "id,name\n1,Ada\nx,Bad\n3,Grace\ny,Worse\n").expect("csv");
    let dag = format!(
        "id: people\ntasks:\n  load:\n    kind: load\n    source: {{file: \"{}\"}}\n    target: {{conn: wh, table: people}}\n    columns:\n      id: {{type: int}}\n      name: {{type: text}}\n    mode: replace\n    rejects: {{on_error: reject}}\n",
        csv.display()
    );
    let mut wcfg = weir_testkit::engine::worker_config();
    wcfg.connections = [("wh".to_owned(), data.url.clone())].into_iter().collect();
    wcfg.keep_rejects = Some(std::time::Duration::from_secs(90 * 86_400));
    let mut engine =
        weir_testkit::engine::Engine::with_worker(&meta, &[("people.yaml", &dag)], wcfg).await;
    let first = engine.trigger("people", serde_json::json!({})).await;
    engine.drive(&first.run_id).await;
    let tis = engine.tasks(&first.run_id).await;
    assert_eq!(
        tis[0].outputs.as_ref().map(|o| o["rejects"].clone()),
        Some(serde_json::json!([
            {"file": csv.display().to_string(), "line": 3, "reason": "`id`: `x` is not an int"},
            {"file": csv.display().to_string(), "line": 5, "reason": "`id`: `y` is not an int"},
        ]))
    );
    // An old reject from long ago, past the retention.
    query_text(
        &data,
        "insert into people__rejects (run_id, task_id, source_file, line_number, raw_row, reason, rejected_at) \
         values ('old', 'load', 'old.csv', 9, 'z', 'ancient', '2020-01-01 00:00:00+00:00')",
    )
    .await;
    engine.clock.advance(chrono::Duration::hours(1));
    let second = engine.trigger("people", serde_json::json!({})).await;
    engine.drive(&second.run_id).await;
    assert_eq!(
        query_text(
            &data,
            "select run_id, line_number from people__rejects order by run_id, line_number"
        )
        .await
        .len(),
        4,
        "both runs' rejects are kept; the ancient one is gone"
    );
    assert_eq!(
        query_text(
            &data,
            "select line_number, run_id from people__rejects_latest order by line_number"
        )
        .await,
        [
            [Some("3".to_owned()), Some(second.run_id.clone())],
            [Some("5".to_owned()), Some(second.run_id.clone())],
        ]
    );
    let config = dir.path().join("weir.toml");
    std::fs::create_dir(dir.path().join("dags")).expect("dags");
    std::fs::write(dir.path().join("dags/people.yaml"), &dag).expect("dag");
    std::fs::write(
        &config,
        format!(
            "dags_folder = \"dags\"\n[connections.wh]\nurl = \"{}\"\n",
            data.url
        ),
    )
    .expect("config");
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("WEIR_DATABASE_URL")
            .output()
            .expect("weir rejects")
    };
    let out = cli(&["rejects", "people", "load"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("2 rejected line(s) of people.load"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}:3: `id`: `x` is not an int [run {}]\n    x,Bad\n",
            csv.display(),
            second.run_id
        )),
        "{text}"
    );
    let out = cli(&[
        "rejects",
        "people",
        "load",
        "--run",
        &first.run_id,
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    assert_eq!(rows[1]["raw_row"], "y,Worse");
}
