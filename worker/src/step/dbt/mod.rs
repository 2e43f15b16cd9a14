//! `kind: dbt`: dbt-core, in an environment built like a `python` step's (the pinned dbt-core
//! and adapter for the connection, [`profile::default_requirements`]), runs a command on the
//! project stored with the DAG version, with a profile weir writes from the connection.
//!
//! Each try works in its own folder, `<cache_dir>/dbt/<dag>/<task>/<run>-<map>-<try>-<random>/` (the project,
//! `target/`, `logs/`, the profile), kept after the try so that the compiled SQL a failure
//! names can be read; the newest [`KEEP_TRIES`] of a task are kept. Afterwards weir reads the
//! artifacts ([`artifacts`]) into the task's outputs, its checks and its assets.

pub mod artifacts;
pub mod profile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use weir_model::spec::DbtStep;

use super::python::env::{self, EnvSpec};
use super::shell::ShellEnv;
use crate::conn::Connections;
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Try folders kept per task.
pub const KEEP_TRIES: usize = 10;

/// The environment of a dbt step: its `requirements`, else the pinned dbt for its connection.
///
/// # Errors
/// An unknown connection, one dbt has no adapter for here, or a missing requirements file.
pub fn env_spec(
    step: &DbtStep,
    files: &BTreeMap<String, String>,
    conns: &Connections,
) -> Result<EnvSpec, String> {
    let dialect = conns.dialect(&step.conn).map_err(|e| e.to_string())?;
    super::python::env_spec(
        step.requirements.as_ref(),
        step.python.as_deref(),
        files,
        profile::default_requirements(dialect),
    )
}

/// Runs a (rendered) dbt step: its outcome, as `Err` when the try did not succeed.
///
/// # Errors
/// The try's outcome when it did not succeed (the caller records either).
pub async fn run(
    step: &DbtStep,
    env: &ShellEnv,
    conns: &Connections,
    files: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, TaskOutcome> {
    let spec = env_spec(step, files, conns).map_err(|e| TaskOutcome::failed(e, false))?;
    let url = conns.url(&step.conn).ok_or_else(|| {
        TaskOutcome::failed(
            format!("connection `{}` is not configured", step.conn),
            false,
        )
    })?;
    let schema = step
        .schema
        .clone()
        .or_else(|| conns.default_schema(&step.conn))
        .ok_or_else(|| {
            TaskOutcome::failed(
                format!(
                    "connection `{}` names no database: give the step a `schema`",
                    step.conn
                ),
                false,
            )
        })?;
    // SQLite takes one writer at a time: dbt-sqlite works with one thread.
    let threads = if conns.dialect(&step.conn).ok() == Some(weir_model::sql::Dialect::Sqlite) {
        1
    } else {
        step.threads
    };
    let (profile, password) =
        profile::profile(url, &schema, threads).map_err(|e| TaskOutcome::failed(e, false))?;
    let dbt_env = env::ensure(&env.python, &spec, log, cancel)
        .await
        .map_err(|e| TaskOutcome::failed(e, true))?;

    let folder =
        try_folder(&env.python.cache_dir, env).map_err(|e| TaskOutcome::failed(e, true))?;
    let project = folder.join("project");
    let mut count = 0;
    for (relative, text) in weir_model::files::project_files(files, &step.project) {
        let path = project.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                TaskOutcome::failed(format!("cannot create {}: {e}", parent.display()), true)
            })?;
        }
        std::fs::write(&path, text).map_err(|e| {
            TaskOutcome::failed(format!("cannot write {}: {e}", path.display()), true)
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(TaskOutcome::failed(
            format!(
                "the DAG version holds no file of the dbt project `{}`",
                step.project
            ),
            false,
        ));
    }
    let profiles = folder.join("profiles");
    std::fs::create_dir_all(&profiles)
        .and_then(|()| std::fs::write(profiles.join("profiles.yml"), profile.to_string()))
        .map_err(|e| TaskOutcome::failed(format!("cannot write dbt's profile: {e}"), true))?;
    let target = folder.join("target");
    log.note(format!(
        "dbt {} of project `{}` on connection `{}` (schema {schema}) in {}",
        step.command.as_str(),
        step.project,
        step.conn,
        folder.display()
    ));

    let dbt = |args: &[&str]| {
        let mut cmd = Command::new(dbt_env.program("dbt"));
        cmd.args(args)
            .arg("--project-dir")
            .arg(&project)
            .arg("--profiles-dir")
            .arg(&profiles)
            .args(["--profile", profile::NAME, "--target", profile::NAME])
            .arg("--target-path")
            .arg(&target)
            .arg("--log-path")
            .arg(folder.join("logs"))
            .current_dir(&project);
        super::python::in_environment(&mut cmd, &dbt_env.dir, env, &step.env);
        cmd.env(profile::PASSWORD_VAR, &password)
            // No phoning home (the machine may have no internet), no colours in the log.
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .env("DO_NOT_TRACK", "1")
            .env("DBT_USE_COLORS", "false")
            .env("DBT_PARTIAL_PARSE", "false");
        cmd
    };
    let needs_packages = ["packages.yml", "dependencies.yml"]
        .iter()
        .any(|f| project.join(f).is_file())
        && !project.join("dbt_packages").is_dir();
    if needs_packages {
        super::process::run_group(dbt(&["deps"]), "dbt deps", timeout, log, cancel).await?;
    }
    let vars = vars(step, &env.context);
    let mut args: Vec<String> = vec![
        step.command.as_str().to_owned(),
        "--vars".to_owned(),
        vars.to_string(),
        "--threads".to_owned(),
        threads.to_string(),
    ];
    if !step.select.is_empty() {
        args.push("--select".to_owned());
        args.extend(step.select.iter().cloned());
    }
    if !step.exclude.is_empty() {
        args.push("--exclude".to_owned());
        args.extend(step.exclude.iter().cloned());
    }
    if step.full_refresh {
        args.push("--full-refresh".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let label = format!("dbt {}", step.command.as_str());
    let ran = super::process::run_group(dbt(&args), &label, timeout, log, cancel).await;
    let exited = match ran {
        Ok(()) => None,
        Err(TaskOutcome::Failed { error, .. }) => Some(error),
        // A timeout or a cancel: what ran is not what the artifacts of an ended run say.
        Err(other) => return Err(other),
    };
    let read = |name: &str| std::fs::read_to_string(target.join(name));
    let summary = match (read("run_results.json"), read("manifest.json")) {
        (Ok(results), Ok(manifest)) => {
            artifacts::summarize(&results, &manifest).map_err(|e| TaskOutcome::failed(e, false))?
        }
        _ => {
            return Err(TaskOutcome::failed(
                match exited {
                    Some(error) => format!(
                        "dbt could not run the project ({error}): its message is in the log above"
                    ),
                    None => "dbt wrote no run_results.json".to_owned(),
                },
                true,
            ));
        }
    };
    let mut outputs = summary.outputs;
    outputs.insert("command".into(), step.command.as_str().into());
    outputs.insert("target_path".into(), target.display().to_string().into());
    log.note(format!(
        "dbt: {} built, {} error(s), {} skipped; tests: {} passed, {} failed",
        outputs["built"],
        outputs["errors"],
        outputs["skipped"],
        outputs["checks_passed"],
        outputs["checks_failed"]
    ));
    match (summary.error, exited) {
        (Some(error), _) => Err(TaskOutcome::FailedWithOutputs {
            error,
            outputs,
            retryable: summary.retryable,
        }),
        (None, Some(error)) => Err(TaskOutcome::FailedWithOutputs {
            error: format!("dbt failed ({error}): its message is in the log above"),
            outputs,
            retryable: true,
        }),
        (None, None) => Ok(TaskOutcome::Succeeded { outputs }),
    }
}

/// dbt's `--vars`: the run's (`weir_ds`, `weir_data_interval_start`, `weir_data_interval_end`,
/// `weir_run_id`, `weir_dag_id`) under the step's own, which win.
fn vars(step: &DbtStep, context: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (var, key) in [
        ("weir_ds", "ds"),
        ("weir_data_interval_start", "data_interval_start"),
        ("weir_data_interval_end", "data_interval_end"),
        ("weir_run_id", "run_id"),
        ("weir_dag_id", "dag_id"),
    ] {
        if let Some(v) = context.get(key) {
            out.insert(var.to_owned(), v.clone());
        }
    }
    for (k, v) in &step.vars {
        out.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(out)
}

/// The try's folder, new; older folders of the task past the newest
/// [`KEEP_TRIES`] are removed.
fn try_folder(cache_dir: &Path, env: &ShellEnv) -> Result<PathBuf, String> {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let task_dir = std::path::absolute(cache_dir)
        .unwrap_or_else(|_| cache_dir.to_path_buf())
        .join("dbt")
        .join(safe(env.get("WEIR_DAG_ID")))
        .join(safe(env.get("WEIR_TASK_ID")));
    // Unique even when two weir installations share the cache folder (the same run id and
    // try in both), or `weir tasks test` runs beside a worker.
    let short = uuid::Uuid::new_v4().simple().to_string();
    let name = format!(
        "{}-{}-{}-{}",
        safe(env.get("WEIR_RUN_ID")),
        safe(env.get("WEIR_MAP_INDEX")),
        safe(env.get("WEIR_TRY_NUMBER")),
        &short[..8]
    );
    let folder = task_dir.join(name);
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    prune(&task_dir);
    Ok(folder)
}

/// Removes a task's try folders but the newest [`KEEP_TRIES`] (by modification time); a
/// folder that cannot be removed is left for the next try.
fn prune(task_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(task_dir) else {
        return;
    };
    let mut folders: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    folders.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in folders.into_iter().skip(KEEP_TRIES) {
        let _ = std::fs::remove_dir_all(old);
    }
}
