//! `kind: python` end to end: environments built with uv from PyPI (cached, built once under
//! concurrency, a missing package failing with uv's words), the context in and typed outputs
//! out, the script's file and requirements stored with the DAG version, errors naming the
//! line, timeouts killing the process tree, secrets masked. The tests share one cache
//! (`weir_testkit::engine::python_setup`); a test that must see an environment created uses a
//! cache of its own.

use std::path::Path;
use std::time::Instant;

use weir_model::clock::Clock;
use weir_model::{RunState, TaskState};
use weir_testkit::TestDb;
use weir_testkit::engine::{Engine, python_setup, worker_config};
use weir_worker::step::python::env::{EnvSpec, Packages, PythonSetup, ensure};

/// The requirement the tests install: small, pure Python, on PyPI for years.
const SIX: &str = "six==1.16.0";

/// A worker configuration whose environments go to `cache` (uv: the shared cache's).
async fn own_cache(cache: &Path) -> weir_worker::WorkerConfig {
    let mut wcfg = worker_config();
    wcfg.python = PythonSetup {
        cache_dir: cache.to_path_buf(),
        uv: Some(shared_uv().await),
    };
    wcfg
}

/// The uv of the tests' shared cache, installed there by weir on first use.
async fn shared_uv() -> std::path::PathBuf {
    let setup = python_setup();
    let (sink, _rx) = weir_worker::log::LogSink::channel(weir_worker::conn::Masker::default());
    let spec = EnvSpec {
        python: None,
        requirements: Packages::Lines(Vec::new()),
    };
    ensure(
        &setup,
        &spec,
        &sink,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("weir installs its uv into the shared cache");
    match setup.uv {
        Some(uv) => uv,
        None => std::path::absolute(&setup.cache_dir)
            .expect("absolute")
            .join("uv")
            .join(weir_worker::step::python::env::UV_VERSION)
            .join("bin/uv"),
    }
}

async fn outputs_of(engine: &Engine, run_id: &str, task: &str) -> serde_json::Value {
    engine
        .tasks(run_id)
        .await
        .into_iter()
        .find(|t| t.task_id == task)
        .and_then(|t| t.outputs)
        .unwrap_or_default()
}

async fn log_text(engine: &Engine, run_id: &str, task: &str) -> String {
    let ti = engine
        .tasks(run_id)
        .await
        .into_iter()
        .find(|t| t.task_id == task)
        .expect("task");
    engine.log_of(&ti, ti.try_number).await.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_come_back_typed_and_the_context_and_connections_reach_the_script() {
    let db = TestDb::sqlite().await;
    let dag = format!(
        r#"id: typed
params: {{factor: 3}}
tasks:
  compute:
    kind: python
    requirements: ["{SIX}"]
    conns: wh
    env: {{GREETING: "hello {{{{ ds }}}}"}}
    script: |
      import os, six, weir
      def main(ctx):
          # Python's own braces stay Python: {{{{ this }}}} is not a template.
          print(f"{{{{'braces'}}}} stay", os.environ["GREETING"])
          print("connection", weir.conn("wh"))
          weir.output("ds", ctx["ds"])
          return {{"n": 14 * ctx["params"]["factor"], "ratio": 0.5, "ok": True,
                  "names": ["a", "b"], "nested": {{"k": [1, 2]}}}}
  add:
    kind: shell
    depends_on: compute
    when: "{{{{ tasks.compute.outputs.ok }}}}"
    run: echo "sum={{{{ tasks.compute.outputs.n + 1 }}}}" >> "$WEIR_OUTPUT"
  # A task named like a module its script imports: the script's own file must not shadow it.
  random:
    kind: python
    script: |
      import random, weir
      weir.output(one=random.randint(1, 1))
  each:
    kind: python
    depends_on: compute
    foreach: "{{{{ tasks.compute.outputs.names | tojson }}}}"
    script: |
      import weir
      ctx = weir.context()
      weir.output(item=ctx["item"], k=ctx["tasks"]["compute"]["outputs"]["nested"]["k"][1])
"#
    );
    let mut wcfg = worker_config();
    wcfg.connections = [(
        "wh".to_owned(),
        "postgres://etl:s3cr3t-pw@127.0.0.1:5432/test".to_owned(),
    )]
    .into_iter()
    .collect();
    wcfg.secrets = vec!["s3cr3t-pw".into()];
    let mut engine = Engine::with_worker(&db, &[("typed.yaml", &dag)], wcfg).await;
    let run = engine.trigger("typed", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Success);
    let out = outputs_of(&engine, &run.run_id, "compute").await;
    assert_eq!(out["n"], serde_json::json!(42));
    assert_eq!(out["ratio"], serde_json::json!(0.5));
    assert_eq!(out["ok"], serde_json::json!(true));
    assert_eq!(out["nested"], serde_json::json!({"k": [1, 2]}));
    assert_eq!(out["ds"], serde_json::json!("2024-03-01"));
    assert_eq!(
        outputs_of(&engine, &run.run_id, "random").await,
        serde_json::json!({"one": 1})
    );
    let add = outputs_of(&engine, &run.run_id, "add").await;
    assert_eq!(add["sum"], "43");
    let mapped: Vec<serde_json::Value> = engine
        .tasks(&run.run_id)
        .await
        .into_iter()
        .filter(|t| t.task_id == "each")
        .map(|t| t.outputs.unwrap_or_default())
        .collect();
    assert_eq!(mapped.len(), 2);
    assert!(mapped.contains(&serde_json::json!({"item": "a", "k": 2})));
    let log = log_text(&engine, &run.run_id, "compute").await;
    assert!(
        log.contains("{'braces'} stay hello 2024-03-01"),
        "the script's own output: {log}"
    );
    assert!(
        log.contains("connection postgres://etl:***@127.0.0.1:5432/test"),
        "{log}"
    );
    assert!(
        !log.contains("s3cr3t-pw"),
        "a secret reached the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_created_once_and_reused_by_later_runs() {
    let db = TestDb::sqlite().await;
    let cache = tempfile::tempdir().expect("tempdir");
    let dag = format!(
        "id: reuse\ntasks:\n  t:\n    kind: python\n    requirements: [\"{SIX}\"]\n    script: |\n      import six\n      print('six', six.__version__)\n"
    );
    let mut engine =
        Engine::with_worker(&db, &[("reuse.yaml", &dag)], own_cache(cache.path()).await).await;
    let first = engine.trigger("reuse", serde_json::json!({})).await;
    let started = Instant::now();
    let first = engine.drive(&first.run_id).await;
    let first_took = started.elapsed();
    assert_eq!(first.state, RunState::Success);
    let log = log_text(&engine, &first.run_id, "t").await;
    assert!(log.contains("creating the Python environment"), "{log}");
    assert!(log.contains("created the Python environment in"), "{log}");
    assert!(log.contains("six 1.16.0"), "{log}");
    let envs: Vec<_> = std::fs::read_dir(cache.path().join("envs"))
        .expect("envs")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(envs.len(), 1, "one environment");
    let ready = envs[0].path().join(".weir-ready");
    let stamp = std::fs::metadata(&ready)
        .expect("ready")
        .modified()
        .expect("mtime");

    engine
        .clock
        .set(engine.clock.now() + chrono::Duration::seconds(1));
    let second = engine.trigger("reuse", serde_json::json!({})).await;
    let started = Instant::now();
    let second = engine.drive(&second.run_id).await;
    let second_took = started.elapsed();
    assert_eq!(second.state, RunState::Success);
    let log = log_text(&engine, &second.run_id, "t").await;
    assert!(!log.contains("creating the Python environment"), "{log}");
    assert!(log.contains("six 1.16.0"), "{log}");
    assert_eq!(
        std::fs::metadata(&ready)
            .expect("ready")
            .modified()
            .expect("mtime"),
        stamp,
        "the environment was not rebuilt"
    );
    eprintln!(
        "first run (environment created): {first_took:?}; second run (reused): {second_took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_asking_at_once_build_one_environment_once() {
    let cache = tempfile::tempdir().expect("tempdir");
    let uv = shared_uv().await;
    let dir = weir_testkit::engine::dags_folder(&[(
        "once.yaml",
        &format!(
            "id: once\ntasks:\n  t:\n    kind: python\n    requirements: [\"{SIX}\", \"# built once\"]\n    script: print(1)\n"
        ),
    )]);
    // Both start while the environment's lock is held, so both are waiting when it is let go.
    let spec = EnvSpec {
        python: None,
        requirements: Packages::Lines(vec![SIX.into(), "# built once".into()]),
    };
    let envs = cache.path().join("envs");
    std::fs::create_dir_all(&envs).expect("envs");
    let lock = std::fs::File::create(envs.join(format!("{}.lock", spec.key()))).expect("lock");
    lock.lock().expect("hold the lock");
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["python", "env", "once", "t"])
            .current_dir(dir.path())
            .env("WEIR_DAGS_FOLDER", "dags")
            .env("WEIR_PYTHON_CACHE_DIR", cache.path())
            .env("WEIR_PYTHON_UV", &uv)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start weir")
    };
    let (a, b) = (start(), start());
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(lock);
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    assert_eq!(a.stdout, b.stdout, "both name the same environment");
    let created = [&a, &b]
        .iter()
        .filter(|o| text(o).contains("creating the Python environment"))
        .count();
    assert_eq!(created, 1, "built once:\n{}\n---\n{}", text(&a), text(&b));
    for o in [&a, &b] {
        assert!(text(o).contains("waiting for it"), "{}", text(o));
    }
    assert!(
        [&a, &b]
            .iter()
            .any(|o| text(o).contains("built by another process")),
        "the second found the first's environment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_package_fails_with_uvs_message_and_leaves_no_environment() {
    let db = TestDb::sqlite().await;
    let cache = tempfile::tempdir().expect("tempdir");
    let dag = "id: missing\ntasks:\n  t:\n    kind: python\n    requirements: [\"weir-no-such-package-3f9a==1.0\"]\n    script: print(1)\n";
    let mut engine =
        Engine::with_worker(&db, &[("missing.yaml", dag)], own_cache(cache.path()).await).await;
    let run = engine.trigger("missing", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Failed);
    let ti = engine.tasks(&run.run_id).await.remove(0);
    let error = ti.error.clone().unwrap_or_default();
    assert!(
        error.contains("building the Python environment failed: uv pip install"),
        "{error}"
    );
    let log = engine.log_of(&ti, ti.try_number).await.join("\n");
    assert!(
        log.contains("weir-no-such-package-3f9a was not found in the package registry"),
        "uv's own message: {log}"
    );
    let ready = std::fs::read_dir(cache.path().join("envs"))
        .expect("envs")
        .filter_map(Result::ok)
        .any(|e| e.path().join(".weir-ready").exists());
    assert!(!ready, "a failed build is never marked ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_file_and_requirements_file_are_pinned_with_the_version_and_errors_name_the_line()
{
    let db = TestDb::sqlite().await;
    let dag = "id: files\ntasks:\n  t:\n    kind: python\n    file: scripts/transform.py\n    requirements: scripts/requirements.txt\n";
    let script = "import six\n\ndef main():\n    rows = [1, 2]\n    raise ValueError(f'bad row {rows[1]}')\n";
    let mut engine = Engine::with_worker(
        &db,
        &[
            ("files.yaml", dag),
            ("scripts/transform.py", script),
            ("scripts/requirements.txt", &format!("{SIX}\n")),
        ],
        worker_config(),
    )
    .await;
    // The version holds the files: the run needs no copy of the folder.
    std::fs::remove_dir_all(engine.path("dags/scripts")).expect("remove");
    let run = engine.trigger("files", serde_json::json!({})).await;
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Failed);
    let ti = engine.tasks(&run.run_id).await.remove(0);
    assert_eq!(ti.state, TaskState::Failed);
    assert_eq!(
        ti.error.as_deref(),
        Some("ValueError: bad row 2 (at transform.py line 5)")
    );
    let log = engine.log_of(&ti, ti.try_number).await.join("\n");
    assert!(log.contains("Traceback"), "{log}");
    assert!(
        !log.contains("weir_runner.py"),
        "weir's frames are not shown: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_script_and_the_processes_it_started() {
    let db = TestDb::sqlite().await;
    let pids = tempfile::tempdir().expect("tempdir");
    let pid_file = pids.path().join("child.pid");
    let dag = format!(
        r#"id: slow
tasks:
  t:
    kind: python
    timeout: 2s
    script: |
      import subprocess, time
      child = subprocess.Popen(["sleep", "300"])
      open("{}", "w").write(str(child.pid))
      time.sleep(300)
"#,
        pid_file.display()
    );
    let mut engine = Engine::new(&db, &[("slow.yaml", &dag)]).await;
    let run = engine.trigger("slow", serde_json::json!({})).await;
    let started = Instant::now();
    let run = engine.drive(&run.run_id).await;
    assert_eq!(run.state, RunState::Failed);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let ti = engine.tasks(&run.run_id).await.remove(0);
    assert_eq!(ti.error.as_deref(), Some("timed out after 2s"));
    let pid = std::fs::read_to_string(&pid_file).expect("the script started its child");
    let proc = format!("/proc/{}", pid.trim());
    // Killed, it is gone once its new parent has reaped it.
    let gone = (0..50).any(|_| {
        let alive = std::fs::read_to_string(format!("{proc}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        !alive
    });
    assert!(gone, "the script's child {pid} outlived the timeout");
}

/// `weir tasks test` runs a `python` task here with the context the command line gives:
/// `--param` and `--output` values typed as a run would type them (`10` a number).
#[test]
fn tasks_test_runs_a_python_task_with_typed_params_and_outputs() {
    let dir = weir_testkit::engine::dags_folder(&[(
        "local.yaml",
        &format!(
            "id: local\nparams: {{limit: 1}}\ntasks:\n  up:\n    kind: shell\n    run: \"true\"\n  t:\n    kind: python\n    depends_on: up\n    requirements: [\"{SIX}\"]\n    script: |\n      def main(ctx):\n          n = ctx['tasks']['up']['outputs']['n']\n          return {{'total': n * ctx['params']['limit'], 'ds': ctx['ds']}}\n"
        ),
    )]);
    let cache = python_setup().cache_dir.display().to_string();
    let out = crate::weir_env(
        dir.path(),
        &[
            "tasks",
            "test",
            "local",
            "t",
            "--date",
            "2024-05-06",
            "--param",
            "limit=3",
            "--output",
            "up.n=14",
        ],
        &[
            ("WEIR_DAGS_FOLDER", "dags"),
            ("WEIR_PYTHON_CACHE_DIR", cache.as_str()),
        ],
    );
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(r#"outputs: {"total":42,"ds":"2024-05-06"}"#),
        "{err}"
    );
}
