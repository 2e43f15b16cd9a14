//! The `weir` binary, run as a user runs it: arguments in, exit code and output out; and the
//! engine (scheduler + worker) end to end in `engine`.

mod assets;
mod browser;
mod claim;
mod data;
mod dbt;
mod engine;
mod exactly_once;
mod file_triggers;
mod http;
mod lateness;
mod lineage;
mod notify;
mod pages;
mod parquet;
mod python;
mod remote;
mod rows;
mod serve;
mod stores;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `weir` in `dir` with no `WEIR_*` variables from the caller's environment.
fn weir_in(dir: &Path, args: &[&str]) -> Output {
    weir_env(dir, args, &[])
}

/// Runs `weir` in the repository with a metadata database of its own (never `.weir/`),
/// created first as `weir db migrate` does (commands other than the services and `db migrate`
/// refuse to create one).
fn weir(args: &[&str]) -> Output {
    let db = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", db.path().join("weir.db").display());
    let env = [("WEIR_DATABASE_URL", url.as_str())];
    let migrated = weir_env(&repo(), &["db", "migrate"], &env);
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr(&migrated));
    weir_env(&repo(), args, &env)
}

fn weir_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(args).current_dir(dir);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("WEIR_")) {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run weir")
}

/// A temporary copy of the repository's dags, data and weir.toml: the README's setup.
fn examples_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = Command::new("cp")
        .args(["-r", "dags", "data", "weir.toml"])
        .arg(dir.path())
        .current_dir(repo())
        .status()
        .expect("cp");
    assert!(copy.success());
    dir
}

/// A running `weir standalone` in `dir` with its web server on a free port.
struct Standalone {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// The first admin's password, printed on the first start.
    admin_password: Option<String>,
}

impl Standalone {
    fn start(dir: &Path) -> Standalone {
        Standalone::start_with(dir, &[], std::process::Stdio::null())
    }

    /// Starts it with `env` added and its log (stderr) going to `log`; returns once it serves.
    fn start_with(dir: &Path, env: &[(&str, &str)], log: std::process::Stdio) -> Standalone {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("standalone")
            .current_dir(dir)
            .env_remove("WEIR_DATABASE_URL")
            .env("WEIR_WEB_BIND", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start standalone");
        // Its first lines name the admin's password and the address it listens on.
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut admin_password, mut url) = (None, None);
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(rest) = line.split("password ").nth(1) {
                admin_password = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.split("web UI at ").nth(1) {
                url = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let Some(url) = url else {
            let _ = child.kill();
            panic!("standalone did not print its address");
        };
        Standalone {
            child,
            url,
            admin_password,
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_example_dags_validate_cleanly_with_the_repository_config() {
    let o = weir(&["dags", "validate", "dags"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "", "no error and no warning expected");
}

#[test]
fn broken_fixtures_exit_2_with_a_file_line_col_message_each() {
    let o = weir(&["dags", "validate", "model/tests/data/invalid"]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    let fixtures = std::fs::read_dir(repo().join("model/tests/data/invalid"))
        .expect("fixtures")
        .count();
    let mut files_seen = std::collections::BTreeSet::new();
    for line in out.lines() {
        let mut parts = line.splitn(4, ':');
        let (file, l, c) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        assert!(
            file.starts_with("model/tests/data/invalid/") && file.ends_with(".yaml"),
            "{line}"
        );
        assert!(
            l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(),
            "no LINE:COL in: {line}"
        );
        files_seen.insert(file.to_owned());
    }
    assert_eq!(
        files_seen.len(),
        fixtures,
        "every broken file is reported:\n{out}"
    );
}

#[test]
fn each_broken_fixture_alone_exits_2_and_names_its_place() {
    let dir = repo().join("model/tests/data/invalid");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    fixtures.sort();
    for path in fixtures {
        let rel = format!(
            "model/tests/data/invalid/{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("")
        );
        let o = weir(&["dags", "validate", &rel]);
        assert_eq!(o.status.code(), Some(2), "{rel}");
        let first = stdout(&o).lines().next().unwrap_or("").to_owned();
        let mut parts = first.splitn(4, ':');
        assert_eq!(parts.next(), Some(rel.as_str()), "{first}");
        assert!(
            parts.next().is_some_and(|l| l.parse::<u32>().is_ok()),
            "{rel}: no line in `{first}`"
        );
        assert!(
            parts.next().is_some_and(|c| c.parse::<u32>().is_ok()),
            "{rel}: no column in `{first}`"
        );
    }
}

#[test]
fn a_broken_file_does_not_hide_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/good.yaml"),
        "id: good\ntasks:\n  a: {kind: noop}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("dags/bad.yaml"),
        "id: bad\ntasks:\n  a: {kind: nop}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("dags/also_bad.yml"), "id: [\n").expect("write");
    let o = weir_in(dir.path(), &["dags", "validate"]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.contains("dags/bad.yaml:3:13: task `a`: unknown kind `nop`"),
        "{out}"
    );
    assert!(out.contains("dags/also_bad.yml:"), "{out}");
    assert!(
        stderr(&o).contains("3 file(s) checked: 1 valid, 2 invalid"),
        "{}",
        stderr(&o)
    );

    assert_eq!(
        weir_in(dir.path(), &["db", "migrate"]).status.code(),
        Some(0)
    );
    let o = weir_in(dir.path(), &["dags", "list", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    let good = rows
        .iter()
        .find(|r| r["dag_id"] == "good")
        .expect("good is listed");
    assert_eq!(good["import_error"], serde_json::Value::Null);
    assert_eq!(good["timezone"], "UTC");
    let broken: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["import_error"].is_string())
        .collect();
    assert_eq!(broken.len(), 2);
    assert!(broken.iter().any(|r| {
        r["import_error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown kind `nop`"))
    }));
}

#[test]
fn a_dag_id_used_twice_is_an_error_in_the_second_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.yaml"),
        "id: same\ntasks:\n  a: {kind: noop}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.yaml"),
        "tasks:\n  a: {kind: noop}\nid: same\n",
    )
    .expect("write");
    // A file with errors of its own still claims its id.
    std::fs::write(
        dir.path().join("c.yaml"),
        "id: same
tasks:
  a: {kind: nop}
",
    )
    .expect("write");
    let o = weir_in(dir.path(), &["dags", "validate", "."]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("./b.yaml:3:5: DAG id `same` is already used by ./a.yaml"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("./c.yaml:1:5: DAG id `same` is already used by ./a.yaml"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn dags_list_json_has_the_documented_shape() {
    let o = weir(&["dags", "list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let covid = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["dag_id"] == "covid_daily"))
        .expect("covid_daily listed");
    for key in [
        "dag_id",
        "schedule",
        "timezone",
        "paused",
        "file",
        "import_error",
    ] {
        assert!(covid.get(key).is_some(), "missing {key}");
    }
    assert_eq!(covid["schedule"], "0 6 * * *");
    assert_eq!(covid["timezone"], "America/New_York");
    assert_eq!(covid["file"], "dags/covid_daily.yaml");
}

#[test]
fn backfill_dry_run_lists_intervals_across_a_dst_change() {
    let o = weir(&[
        "backfill",
        "covid_daily",
        "--from",
        "2021-03-13",
        "--to",
        "2021-03-15",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    // 06:00 in New York: 11:00Z before DST starts on 2021-03-14, 10:00Z after.
    let expected = serde_json::json!([
        {"logical_date": "2021-03-13T11:00:00Z", "data_interval_start": "2021-03-13T11:00:00Z", "data_interval_end": "2021-03-14T10:00:00Z"},
        {"logical_date": "2021-03-14T10:00:00Z", "data_interval_start": "2021-03-14T10:00:00Z", "data_interval_end": "2021-03-15T10:00:00Z"},
        {"logical_date": "2021-03-15T10:00:00Z", "data_interval_start": "2021-03-15T10:00:00Z", "data_interval_end": "2021-03-16T10:00:00Z"},
    ]);
    assert_eq!(got, expected);
}

#[test]
fn backfill_of_an_unknown_dag_suggests_the_closest_id() {
    let o = weir(&[
        "backfill",
        "covid_dayly",
        "--from",
        "2021-03-13",
        "--to",
        "2021-03-15",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no DAG `covid_dayly` (did you mean `covid_daily`?)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn show_prints_levels_dot_and_json() {
    let o = weir(&["dags", "show", "hr_migration"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    let level_of = |task: &str| {
        text.lines()
            .take_while(|l| !l.trim_start().starts_with(task))
            .filter(|l| l.starts_with("level "))
            .count()
    };
    assert!(
        level_of("schema ") < level_of("load_jobs ") && level_of("load_jobs ") < level_of("check "),
        "{text}"
    );

    let o = weir(&["dags", "show", "hello_shell", "--format", "dot"]);
    assert!(
        stdout(&o).contains("\"prepare\" -> \"greet\";"),
        "{}",
        stdout(&o)
    );

    let o = weir(&["dags", "show", "hello_shell", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["levels"][0], serde_json::json!(["prepare"]));
    assert_eq!(v["spec"]["tasks"]["greet"]["kind"], "shell");
}

#[test]
fn the_schema_is_json_and_lists_the_top_level_keys() {
    let o = weir(&["dags", "schema"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        v["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("json-schema.org"))
    );
    for key in [
        "id",
        "schedule",
        "timezone",
        "start_date",
        "tasks",
        "defaults",
        "params",
    ] {
        assert!(v["properties"].get(key).is_some(), "schema lacks `{key}`");
    }
    let committed =
        std::fs::read_to_string(repo().join("docs/dag.schema.json")).expect("docs/dag.schema.json");
    assert_eq!(
        committed.trim_end(),
        stdout(&o).trim_end(),
        "docs/dag.schema.json is stale: regenerate with `weir dags schema > docs/dag.schema.json`"
    );
}

#[test]
fn web_without_auth_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["web", "--no-auth"])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .env("WEIR_WEB_BIND", "0.0.0.0:0")
        .output()
        .expect("weir web");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--no-auth") && stderr(&o).contains("loopback"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_config_names_the_file_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("weir.toml"), "dags_foldr = \"x\"\n").expect("write");
    let o = weir_in(dir.path(), &["dags", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("weir.toml") && stderr(&o).contains("dags_foldr"),
        "{}",
        stderr(&o)
    );
}

/// A folder with one DAG file, for commands that read `dags/` from the working directory.
fn folder_with_dag(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/d.yaml"), yaml).expect("dag");
    dir
}

#[test]
fn tasks_test_runs_one_task_with_its_date_and_writes_nothing() {
    let dir = folder_with_dag(
        "id: d\ntasks:\n  hello:\n    kind: shell\n    run: echo \"hello {{ ds }}\"; echo n=1 >> \"$WEIR_OUTPUT\"\n  broken:\n    kind: shell\n    run: echo oops >&2; exit 3\n",
    );
    let ok = weir_in(
        dir.path(),
        &["tasks", "test", "d", "hello", "--date", "2024-03-01"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "hello 2024-03-01\n");
    assert!(
        stderr(&ok).contains(r#"outputs: {"n":"1"}"#),
        "{}",
        stderr(&ok)
    );
    let failed = weir_in(dir.path(), &["tasks", "test", "d", "broken"]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(stderr(&failed).contains("oops"), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("exit code 3"),
        "{}",
        stderr(&failed)
    );
    assert!(
        !dir.path().join(".weir").exists(),
        "tasks test created a metadata database"
    );
}

/// Dates are the DAG's days: midnight in Zurich is the previous evening in UTC, midnight in Los
/// Angeles is the same day's morning in UTC; `ds` is the local day in both.
#[test]
fn tasks_test_renders_the_dags_day_east_and_west_of_utc() {
    for (zone, ds_utc, offset) in [
        ("Europe/Zurich", "2024-04-30", "+02:00"),
        ("America/Los_Angeles", "2024-05-01", "-07:00"),
    ] {
        let dir = folder_with_dag(&format!(
            "id: d\ntimezone: {zone}\ntasks:\n  hello:\n    kind: shell\n    run: echo \"{{{{ ds }}}} {{{{ ds_nodash }}}} {{{{ ds_utc }}}} {{{{ ts }}}} $WEIR_DS\"\n"
        ));
        let ok = weir_in(
            dir.path(),
            &["tasks", "test", "d", "hello", "--date", "2024-05-01"],
        );
        assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
        assert_eq!(
            stdout(&ok),
            format!("2024-05-01 20240501 {ds_utc} 2024-05-01T00:00:00{offset} 2024-05-01\n"),
            "{zone}"
        );
    }
}

/// The process guard: a task's whole process group dies with the process that runs it, even
/// on SIGKILL, grandchildren included.
#[test]
fn a_task_dies_with_its_killed_runner_grandchildren_included() {
    let dir = folder_with_dag(
        "id: d\ntasks:\n  linger:\n    kind: shell\n    run: |\n      (echo $BASHPID > lingering.pid; sleep 2; touch late) &\n      until [ -s lingering.pid ]; do sleep 0.01; done\n      touch started\n      wait\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["tasks", "test", "d", "linger"])
        .current_dir(dir.path())
        .env_remove("WEIR_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start weir");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.path().join("started").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Wait for the grandchild to be gone (a zombie is gone: it can no longer act); if the guard
    // failed, it lives until after it touched `late`.
    let pid = std::fs::read_to_string(dir.path().join("lingering.pid")).expect("pid");
    let stat = format!("/proc/{}/stat", pid.trim());
    let gone = || {
        std::fs::read_to_string(&stat).map_or(true, |s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !gone() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task's background process is still alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !dir.path().join("late").exists(),
        "the task's background process outlived its killed runner"
    );
}

/// Files a DAG reads are checked when it is read: a missing `sql` file or migrations folder,
/// and a misnamed migration, are errors placed where the DAG names them.
#[test]
fn missing_or_misnamed_referenced_files_are_errors_at_their_place() {
    let dir = folder_with_dag(
        "id: d\ntasks:\n  q:\n    kind: sql\n    conn: wh\n    file: sql/nope.sql\n  m:\n    kind: migrate\n    conn: wh\n    dir: migrations\n",
    );
    std::fs::create_dir(dir.path().join("dags/migrations")).expect("mkdir");
    std::fs::write(dir.path().join("dags/migrations/0001_ok.sql"), "select 1;").expect("write");
    std::fs::write(
        dir.path().join("dags/migrations/2_also_ok.sql"),
        "select 1;",
    )
    .expect("write");
    std::fs::write(dir.path().join("dags/migrations/create.sql"), "select 1;").expect("write");
    std::fs::write(
        dir.path().join("dags/migrations/0002_twin.sql"),
        "select 1;",
    )
    .expect("write");
    let out = weir_in(dir.path(), &["dags", "validate", "dags"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("d.yaml:6:11: task `q`: cannot read `sql/nope.sql`"),
        "{text}"
    );
    assert!(
        text.contains("d.yaml:10:10: task `m`: `migrations/create.sql` is not named NNNN_name.sql"),
        "{text}"
    );
    assert!(
        text.contains(
            "`migrations/0002_twin.sql` and `migrations/2_also_ok.sql` have the same version 2"
        ),
        "{text}"
    );
}

/// `RUST_LOG` output of a running `weir standalone` (its own process, so no other test shares
/// its tracing state): the scheduler's and the worker's events about a run carry the run's and
/// the task's ids as span fields, without each event naming them.
#[test]
fn logged_events_about_a_run_carry_its_ids_as_span_fields() {
    let dir = folder_with_dag("id: traced\ntasks:\n  hello: {kind: shell, run: echo hi}\n");
    let log_path = dir.path().join("standalone.log");
    let standalone = Standalone::start_with(
        dir.path(),
        &[("RUST_LOG", "weir_scheduler=debug,weir_worker=debug")],
        std::fs::File::create(&log_path).expect("log file").into(),
    );
    let triggered = weir_in(dir.path(), &["trigger", "traced", "--wait", "--json"]);
    drop(standalone);
    assert_eq!(triggered.status.code(), Some(0), "{}", stderr(&triggered));
    let run: serde_json::Value = serde_json::from_str(&stdout(&triggered)).expect("json");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let text = std::fs::read_to_string(&log_path).expect("log");
    // Without colours when not a terminal: `run{dag_id=traced run_id=...}`.
    let run_field = format!("run_id={run_id}");
    for event in [
        "tasks queued",
        "try started",
        "try finished",
        "run finished",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(event))
            .unwrap_or_else(|| panic!("no `{event}` event in:\n{text}"));
        assert!(
            line.contains(&run_field) && line.contains("dag_id=traced"),
            "`{event}` lacks the run's ids: {line}"
        );
        if event.starts_with("try") {
            assert!(
                line.contains("task_id=hello") && line.contains("try_number=1"),
                "`{event}` lacks the task's ids: {line}"
            );
        }
    }
}

/// The README's flow: `weir standalone` in a copy of the repository's dags, data and
/// weir.toml (its scheduled runs start at once, beside the manual ones), and every example DAG
/// triggered with `--wait` succeeds, each task on its first try. The Python and dbt examples
/// build their environments in the tests' shared cache (pandas, dbt-core and dbt-sqlite from
/// PyPI, once); the dbt one models the tables covid_daily loaded.
#[test]
fn the_example_dags_run_to_success_under_standalone() {
    let dir = examples_copy();
    let cache = weir_testkit::engine::python_setup().cache_dir;
    let cache = cache.display().to_string();
    let standalone = Standalone::start_with(
        dir.path(),
        &[("WEIR_PYTHON_CACHE_DIR", cache.as_str())],
        std::process::Stdio::null(),
    );
    let mut outcomes = Vec::new();
    for dag in [
        "hello_shell",
        "hr_migration",
        "covid_daily",
        "table_copy",
        "covid_pandas",
        "covid_dbt",
    ] {
        let out = weir_in(dir.path(), &["trigger", dag, "--wait", "--json"]);
        let run: serde_json::Value =
            serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null);
        let trouble: Vec<String> = run["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] != "success" || t["try_number"] != 1)
            .map(|t| format!("{} {} try {}", t["task_id"], t["state"], t["try_number"]))
            .collect();
        outcomes.push((dag, out.status.code(), run["state"].clone(), trouble));
    }
    drop(standalone);
    for (dag, code, state, trouble) in &outcomes {
        assert_eq!(
            (code, state.as_str(), trouble.is_empty()),
            (&Some(0), Some("success"), true),
            "{dag}: {trouble:?}"
        );
    }
}

/// `weir users`: a password from standard input stored as an argon2id hash that verifies, a
/// generated one printed once, a name taken twice refused, an API token printed once and
/// stored as its SHA-256, and deleting a user taking their tokens along.
#[test]
fn users_are_created_listed_given_tokens_and_deleted() {
    use argon2::password_hash::PasswordVerifier;
    use sha2::Digest;
    let db = tempfile::tempdir().expect("tempdir");
    let path = db.path().join("weir.db");
    let url = format!("sqlite://{}", path.display());
    let env = [("WEIR_DATABASE_URL", url.as_str())];
    let mut create = Command::new(env!("CARGO_BIN_EXE_weir"));
    create
        .args([
            "users",
            "create",
            "ada",
            "--role",
            "operator",
            "--password-stdin",
        ])
        .env("WEIR_DATABASE_URL", &url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = create.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"correct horse battery\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("correct horse"), "{}", stdout(&out));

    let generated = weir_env(
        &repo(),
        &["users", "create", "grace", "--role", "admin"],
        &env,
    );
    assert_eq!(generated.status.code(), Some(0), "{}", stderr(&generated));
    let shown = stdout(&generated);
    let password = shown
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .expect("generated password")
        .to_owned();

    let again = weir_env(
        &repo(),
        &["users", "create", "ada", "--role", "viewer"],
        &env,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("a user named `ada` exists already"),
        "{}",
        stderr(&again)
    );

    let token = weir_env(&repo(), &["users", "token", "ada"], &env);
    assert_eq!(token.status.code(), Some(0), "{}", stderr(&token));
    let token = stdout(&token).trim().to_owned();
    assert!(token.starts_with("weir_") && token.len() == 69, "{token}");

    let list = weir_env(&repo(), &["users", "list"], &env);
    let listed = stdout(&list);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(
        (rows[0][0], rows[0][1], rows[0].last().copied()),
        ("ada", "operator", Some("1"))
    );
    assert_eq!(
        (rows[1][0], rows[1][1], rows[1].last().copied()),
        ("grace", "admin", Some("0"))
    );

    // What is stored: hashes that verify, a digest, never the secrets.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (hashes, digests) = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.expect("db");
        let hashes: Vec<(String, String)> =
            sqlx::query_as("select name, password_hash from weir_users order by name")
                .fetch_all(&pool)
                .await
                .expect("users");
        let digests: Vec<String> = sqlx::query_scalar("select token_sha256 from weir_api_tokens")
            .fetch_all(&pool)
            .await
            .expect("tokens");
        pool.close().await;
        (hashes, digests)
    });
    let verifies = |hash: &str, password: &str| {
        let parsed = argon2::password_hash::phc::PasswordHash::new(hash).expect("phc");
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    };
    assert!(hashes[0].1.starts_with("$argon2id$"), "{}", hashes[0].1);
    assert!(verifies(&hashes[0].1, "correct horse battery"));
    assert!(!verifies(&hashes[0].1, "correct horse battery!"));
    assert!(verifies(&hashes[1].1, &password));
    let expected: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digests, [expected]);

    let deleted = weir_env(&repo(), &["users", "delete", "ada"], &env);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    let gone = weir_env(&repo(), &["users", "delete", "ada"], &env);
    assert_eq!(gone.status.code(), Some(2));
    let tokens_left: i64 = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.expect("db");
        let n = sqlx::query_scalar("select count(*) from weir_api_tokens")
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    });
    assert_eq!(tokens_left, 0, "a deleted user's tokens go too");
}

/// Paths in a configuration file are relative to its folder, wherever weir runs; commands that
/// read never create a database, and say where they looked; `db migrate` says it created one;
/// `weir web` on a database without users says how to make the first admin.
#[test]
fn a_config_elsewhere_is_read_from_its_folder_and_reads_never_create_a_database() {
    let root = tempfile::tempdir().expect("tempdir");
    let conf = root.path().join("srv");
    std::fs::create_dir_all(conf.join("dags")).expect("mkdir");
    std::fs::write(
        conf.join("weir.toml"),
        "database_url = \"sqlite://state/weir.db\"\ndags_folder = \"dags\"\n",
    )
    .expect("config");
    std::fs::write(
        conf.join("dags/d.yaml"),
        "id: d\ntasks:\n  a: {kind: shell, run: echo a}\n",
    )
    .expect("dag");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let config = conf.join("weir.toml");
    let config = config.to_str().expect("utf-8");
    let db = conf.join("state/weir.db");
    for args in [
        &["runs", "list"][..],
        &["dags", "list"],
        &["users", "list"],
        &["trigger", "d"],
        &["logs", "d__x", "a"],
    ] {
        let o = weir_in(&elsewhere, &[&["--config", config][..], args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("no weir metadata database at {}", db.display()))
                && err.contains("weir db migrate")
                && err.contains(config),
            "{args:?}: {err}"
        );
    }
    assert!(!db.exists(), "a read command created the database");
    assert!(
        std::fs::read_dir(&elsewhere).expect("ls").next().is_none(),
        "something was created in the working directory"
    );
    let o = weir_in(&elsewhere, &["--config", config, "db", "migrate"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("created the weir schema"),
        "{}",
        stdout(&o)
    );
    let o = weir_in(&elsewhere, &["--config", config, "db", "migrate"]);
    assert!(stdout(&o).contains("is up to date"), "{}", stdout(&o));
    let o = weir_in(&elsewhere, &["--config", config, "dags", "list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(rows[0]["dag_id"], "d", "the config's dags folder was read");
    // Its file gone, the DAG is listed as removed and cannot be triggered.
    std::fs::rename(conf.join("dags/d.yaml"), conf.join("d.yaml.off")).expect("mv");
    let o = weir_in(&elsewhere, &["--config", config, "dags", "list"]);
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("d "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("removed") && line.contains("file gone since"),
        "{}",
        stdout(&o)
    );
    let o = weir_in(&elsewhere, &["--config", config, "trigger", "d"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("was removed"), "{}", stderr(&o));
    std::fs::rename(conf.join("d.yaml.off"), conf.join("dags/d.yaml")).expect("mv back");
    let o = weir_in(&elsewhere, &["--config", config, "dags", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        rows[0]["removed_at"],
        serde_json::Value::Null,
        "active again"
    );
    assert!(
        std::fs::read_dir(&elsewhere).expect("ls").next().is_none(),
        "something was created in the working directory"
    );
    // `weir web` says how to create the first admin.
    use std::io::BufRead;
    let mut web = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--config", config, "web", "--bind", "127.0.0.1:0"])
        .current_dir(&elsewhere)
        .env_remove("WEIR_DATABASE_URL")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("web");
    // Should the line never come, stop it: its stderr closes and the read below ends.
    let pid = web.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    let lines = std::io::BufReader::new(web.stderr.take().expect("stderr")).lines();
    let said: Vec<String> = lines
        .map_while(Result::ok)
        .take_while(|l| !l.contains("weir users create NAME --role admin"))
        .collect();
    let _ = web.kill();
    let _ = web.wait();
    assert!(said.iter().any(|l| l.contains("no users yet")), "{said:?}");
}

const CLI_DAG: &str = "id: d
schedule: \"@daily\"
start_date: 2024-03-01
paused: true
params:
  n: 1
tasks:
  extract:
    kind: shell
    run: echo rows={{ params.n }} >> \"$WEIR_OUTPUT\"
  check:
    kind: shell
    depends_on: [extract]
    run: echo checked
  report:
    kind: shell
    depends_on: [check]
    run: echo \"report {{ tasks.extract.outputs.rows }} n={{ params.n }}\"
  each:
    kind: shell
    foreach: [red, green, blue]
    run: echo \"item {{ item }} $WEIR_MAP_INDEX\"
  broken:
    kind: shell
    run: echo oops >&2; exit 3
";

/// `tasks test` with params, upstream outputs and mapped items, and plain failure messages.
#[test]
fn tasks_test_takes_params_outputs_and_items() {
    let dir = folder_with_dag(CLI_DAG);
    let run = |args: &[&str]| weir_in(dir.path(), &[&["tasks", "test", "d"][..], args].concat());
    let o = run(&["report", "--param", "n=5", "--output", "extract.rows=42"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "report 42 n=5\n");
    let o = run(&["report", "--output", "each.x=1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "`each` is not upstream of `report` (its upstream tasks are `check`, `extract`)"
        ),
        "{}",
        stderr(&o)
    );
    let o = run(&["each", "--map-index", "2"]);
    assert_eq!(stdout(&o), "item blue 2\n", "{}", stderr(&o));
    let o = run(&["each", "--item", "violet"]);
    assert_eq!(stdout(&o), "item violet 0\n", "{}", stderr(&o));
    let o = run(&["each", "--map-index", "7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has 3 item(s)"), "{}", stderr(&o));
    let o = run(&["broken"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("task `broken` failed: exit code 3")
            && !stderr(&o).contains("Failed {"),
        "{}",
        stderr(&o)
    );
}

/// Every command answers wrong input the same way, and lists say what they show.
#[test]
fn the_cli_answers_wrong_input_consistently_and_pages_lists() {
    let dir = folder_with_dag(CLI_DAG);
    let standalone = Standalone::start(dir.path());
    let w = |args: &[&str]| weir_in(dir.path(), args);
    // Unknown ids: exit 2, one wording.
    let o = w(&["runs", "list", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no DAG `nope`"), "{}", stderr(&o));
    let o = w(&["runs", "show", "d__nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no run `d__nope`"), "{}", stderr(&o));
    // Dates: one parser, one message.
    let bad_backfill = w(&[
        "backfill",
        "d",
        "--from",
        "03/01/2024",
        "--to",
        "2024-03-02",
    ]);
    let bad_trigger = w(&["trigger", "d", "--logical-date", "2024/03/01"]);
    for (o, text) in [
        (
            &bad_backfill,
            "`03/01/2024` is not a date: write `2024-01-31`",
        ),
        (
            &bad_trigger,
            "`2024/03/01` is not a date: write `2024-01-31`",
        ),
    ] {
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(o).contains(text), "{}", stderr(o));
    }
    // A range before start_date says so; one partly before it says what it skips.
    let o = w(&[
        "backfill",
        "d",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("before the DAG's start_date"),
        "{}",
        stderr(&o)
    );
    let o = w(&[
        "backfill",
        "d",
        "--from",
        "2024-02-28",
        "--to",
        "2024-03-04",
        "--param",
        "n=7",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: the range starts before the DAG's start_date"),
        "{}",
        stderr(&o)
    );
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("backfill --json");
    assert_eq!(runs.as_array().map(Vec::len), Some(4), "{runs}");
    // Paged lists with a header.
    let o = w(&["runs", "list", "d", "--limit", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("RUN ID") && lines[0].contains("DURATION"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].starts_with("d__2024-03-04"), "newest first: {out}");
    assert!(stderr(&o).contains("runs 1-2 of"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--offset 2"), "{}", stderr(&o));
    // A failed run's summary lists tasks as they ran and points to the logs.
    let o = w(&["trigger", "d", "--logical-date", "2024-03-10", "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let run_id = "d__2024-03-10T00:00:00Z";
    assert!(
        stdout(&o).contains(&format!("weir logs {run_id} broken")),
        "{}",
        stdout(&o)
    );
    let position = |t: &str| stdout(&o).find(&format!("  {t} ")).expect(t);
    assert!(
        position("extract") < position("check") && position("check") < position("report"),
        "{}",
        stdout(&o)
    );
    // Logs: a try that never ran, one instance of a mapped task.
    let o = w(&["logs", run_id, "broken", "--try", "9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no try 9 of task `broken`"),
        "{}",
        stderr(&o)
    );
    let o = w(&["logs", run_id, "each", "--map-index", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("item green 1") && !stdout(&o).contains("item red"),
        "{}",
        stdout(&o)
    );
    // The params given to the backfill reached its runs.
    let o = w(&["logs", "d__2024-03-02T00:00:00Z", "report"]);
    assert!(stdout(&o).contains("report 7 n=7"), "{}", stdout(&o));
    // Clearing, pausing and unpausing from the CLI.
    let o = w(&["clear", "d", "--run", run_id, "--task", "broken"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for verb in ["pause", "unpause"] {
        let o = w(&["dags", verb, "d"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    drop(standalone);
    // The CLI's actions are in the audit log.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let audit = rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join(".weir/weir.db").display());
        let store = weir_store::Store::connect(&url).await.expect("store");
        store.audit_log(i64::MAX, 0, 100).await.expect("audit")
    });
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    // Every one of them, recorded by the same code as the web's (weir_ops::operator).
    for action in ["backfill", "trigger", "clear", "pause", "unpause"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    assert!(
        audit.iter().all(|a| a.user_name.starts_with("cli:")),
        "{:?}",
        audit.iter().map(|a| &a.user_name).collect::<Vec<_>>()
    );
}

/// The README's validate example is the real output for the README's own DAG with the two
/// typos it names.
#[test]
fn the_readme_validate_example_is_real_output() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = &readme[readme.find("## A DAG").expect("## A DAG")..];
    let block = |fence: &str, from: &str| -> String {
        let start = from.find(fence).expect(fence) + fence.len();
        let end = from[start..].find("```").expect("end of block") + start;
        from[start..end].trim_start_matches('\n').to_owned()
    };
    let dag = block("```yaml", section);
    assert!(dag.contains("timezone: Europe/Zurich") && dag.contains("depends_on: [prepare]"));
    let broken = dag
        .replace("Europe/Zurich", "Europe/Zuerich")
        .replace("depends_on:", "depnds_on:");
    let console = block("```console", section);
    let mut lines = console.lines();
    let command = lines.next().expect("command").trim_start_matches("$ ");
    let expected: Vec<&str> = lines.collect();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(dir.path().join("dags/hello.yaml"), broken).expect("write");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let o = weir_in(dir.path(), &args);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), expected);
}

/// `kill -9` of a standalone with a task in flight (`retries: 0`), then a restart: the lost
/// try is not the task's failure; the new process sees its predecessor dead at once and the
/// task runs again within 2 seconds, and the run succeeds.
#[test]
fn a_killed_standalone_reruns_its_lost_try_at_once_after_a_restart() {
    // The DAG names the ledger by its absolute path, known once the folder exists.
    let dir = folder_with_dag("id: d\ntasks:\n  slow: {kind: noop}\n");
    std::fs::write(
        dir.path().join("dags/d.yaml"),
        format!(
            "id: d\ntasks:\n  slow:\n    kind: shell\n    run: |\n      echo \"start $WEIR_TRY_NUMBER $(date +%s.%N)\" >> {0}\n      sleep 4\n      echo \"end $WEIR_TRY_NUMBER\" >> {0}\n",
            dir.path().join("ledger").display()
        ),
    )
    .expect("dag");
    let mut first = Standalone::start(dir.path());
    let o = weir_in(dir.path(), &["trigger", "d", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let ledger = dir.path().join("ledger");
    let starts = || {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("start"))
            .map(|l| {
                l.split_whitespace()
                    .nth(2)
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .collect::<Vec<f64>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while starts().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reap");
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let second = Standalone::start(dir.path());
    while starts().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost try never ran again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rerun_after = starts()[1] - restarted_at;
    assert!(
        rerun_after <= 2.0,
        "the task ran again {rerun_after:.2}s after the restart"
    );
    let mut state = String::new();
    while std::time::Instant::now() < deadline {
        let o = weir_in(dir.path(), &["runs", "show", &run_id, "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        state = r["state"].as_str().unwrap_or("").to_owned();
        if state == "success" || state == "failed" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(second);
    assert_eq!(state, "success");
}

/// Two hundred open live pages of one run, from four users: the run is rendered once per poll
/// for all of them (one view), a user's streams are bounded (429 past 64), and the run still
/// finishes.
#[test]
fn many_live_viewers_share_one_view_and_are_bounded() {
    use std::io::{Read, Write};
    let dir = folder_with_dag(
        "id: d\ntasks:\n  a: {kind: shell, run: sleep 1}\n  b: {kind: shell, run: sleep 1, depends_on: [a]}\n",
    );
    let standalone = Standalone::start(dir.path());
    let o = weir_in(dir.path(), &["trigger", "d", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let name = format!("viewer{i}");
        let o = weir_in(dir.path(), &["users", "create", &name, "--role", "viewer"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let o = weir_in(dir.path(), &["users", "token", &name]);
        tokens.push(stdout(&o).trim().to_owned());
    }
    let addr = standalone
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let open = |token: &str| -> (std::net::TcpStream, String) {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        write!(
            s,
            "GET /live/runs/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n",
            weir_model::text::url_segment(&run_id)
        )
        .expect("request");
        let mut head = [0_u8; 12];
        s.read_exact(&mut head).expect("status line");
        (s, String::from_utf8_lossy(&head).into_owned())
    };
    let mut streams = Vec::new();
    for token in &tokens {
        for _ in 0..50 {
            let (s, status) = open(token);
            assert!(status.ends_with("200"), "{status}");
            streams.push(s);
        }
    }
    let metrics = |token: &str| {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("metrics");
        text
    };
    let text = metrics(&tokens[0]);
    assert!(text.contains("weir_live_streams 200"), "{text}");
    assert!(
        text.contains("weir_live_views 1\n"),
        "one rendering serves them all: {text}"
    );
    // Past 64 streams a user is refused.
    for _ in 0..14 {
        let (s, status) = open(&tokens[0]);
        assert!(status.ends_with("200"), "{status}");
        streams.push(s);
    }
    let (_, status) = open(&tokens[0]);
    assert!(status.ends_with("429"), "the 65th stream: {status}");
    // The run finishes under its viewers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = weir_in(dir.path(), &["runs", "show", &run_id, "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if r["state"] == "success" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(streams);
    drop(standalone);
}

/// A task sees only the documented `WEIR_*` run variables, the base environment programs need
/// and what `[worker] pass_env` allows: not the worker's database URL (with which a task could
/// make itself an admin), nor any other variable of the worker. The metadata password, should a
/// task print it, is masked in its log (issue #14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sees_no_secret_of_its_worker() {
    let db = weir_testkit::TestDb::postgres().await;
    // The server trusts local connections: the password is not checked, only carried.
    let url = db.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:MetaPassw0rd@",
        1,
    );
    assert_ne!(url, db.url, "a URL with a user: {}", db.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("env.txt");
    std::fs::create_dir(dir.path().join("dags")).expect("mkdir");
    std::fs::write(
        dir.path().join("dags/peek.yaml"),
        format!(
            "id: peek\ntasks:\n  a:\n    kind: shell\n    run: |\n      env > {}\n      echo \"seen MetaPassw0rd\"\n      echo \"passed $ALLOWED_SECRET_KEY\"\n      echo \"templated {{{{ env.TEMPLATE_SECRET }}}}\"\n",
            dump.display()
        ),
    )
    .expect("dag");
    std::fs::write(
        dir.path().join("weir.toml"),
        "dags_folder = \"dags\"\ntemplate_env = [\"TEMPLATE_SECRET\"]\n[worker]\npass_env = [\"ALLOWED_*\"]\nsecret_env = [\"ALLOWED_SECRET_*\", \"TEMPLATE_SECRET\"]\n",
    )
    .expect("config");
    let env = [
        ("WEIR_DATABASE_URL", url.as_str()),
        ("WORKER_ONLY_TOKEN", "hunter2-not-for-tasks"),
        ("ALLOWED_REGION", "eu-west-1"),
        ("ALLOWED_SECRET_KEY", "sk-live-passed-9f8e7d"),
        ("TEMPLATE_SECRET", "sk-live-templated-1a2b3c"),
    ];
    let standalone = Standalone::start_with(dir.path(), &env, std::process::Stdio::null());
    let out = weir_env(dir.path(), &["trigger", "peek", "--wait", "--json"], &env);
    let run: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(run["state"], "success", "{}", stderr(&out));
    let run_id = run["run_id"].as_str().expect("run id");
    let logs = weir_env(dir.path(), &["logs", run_id, "a"], &env);
    drop(standalone);
    let seen = std::fs::read_to_string(&dump).expect("the task's environment");
    for hidden in [
        "WEIR_DATABASE_URL",
        "MetaPassw0rd",
        "hunter2-not-for-tasks",
        "WORKER_ONLY_TOKEN",
    ] {
        assert!(!seen.contains(hidden), "the task saw {hidden}:\n{seen}");
    }
    for shown in [
        "ALLOWED_REGION=eu-west-1",
        "WEIR_TASK_ID=a",
        "WEIR_RUN_ID=",
        "PATH=",
    ] {
        assert!(seen.contains(shown), "the task lacks {shown}:\n{seen}");
    }
    let log = stdout(&logs);
    assert!(log.contains("seen ***"), "{log}");
    assert!(!log.contains("MetaPassw0rd"), "{log}");
    // Values of variables `[worker] secret_env` names are masked too, whether a task reads
    // them (pass_env) or a template does (template_env).
    assert!(log.contains("passed ***"), "{log}");
    assert!(log.contains("templated ***"), "{log}");
    assert!(!log.contains("sk-live"), "{log}");
}
