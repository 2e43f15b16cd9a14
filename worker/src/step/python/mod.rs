//! `kind: python`: the task's script, run by the interpreter of an environment built for its
//! requirements ([`mod@env`]), as a process of the try like a shell step's ([`super::process`]).
//!
//! The script gets the run as a JSON document (`WEIR_CONTEXT_FILE`, read by the `weir` helper
//! module or passed to `main(ctx)`) and returns its outputs as JSON (`main`'s dict, or
//! `weir.output(…)`), so downstream templates see numbers as numbers. weir's runner
//! (`runner.py`) and helper (`weir.py`) are written once per worker into the cache folder.

pub mod env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use weir_model::spec::{PythonStep, Requirements};

use crate::conn::Connections;
use crate::log::LogSink;
use crate::outcome::TaskOutcome;
use env::{EnvSpec, Packages, PythonSetup};

use super::shell::ShellEnv;

const RUNNER: &str = include_str!("runner.py");
const HELPER: &str = include_str!("weir.py");

/// The environment a `python` (or `dbt`) step's requirements ask for; a requirements file
/// comes from the DAG version's files.
///
/// # Errors
/// A requirements file the version does not hold.
pub fn env_spec(
    requirements: Option<&Requirements>,
    python: Option<&str>,
    files: &BTreeMap<String, String>,
    default: &[&str],
) -> Result<EnvSpec, String> {
    let requirements = match requirements {
        None => Packages::Lines(default.iter().map(|s| (*s).to_owned()).collect()),
        Some(Requirements::List(lines)) => Packages::Lines(lines.clone()),
        Some(Requirements::File(path)) => {
            let text = files
                .get(path)
                .ok_or_else(|| format!("the DAG version holds no file `{path}`"))?;
            Packages::File {
                name: file_name(path).to_owned(),
                text: text.clone(),
            }
        }
    };
    Ok(EnvSpec {
        python: python.map(str::to_owned),
        requirements,
    })
}

/// A python step's environment: its requirements alone (no packages of weir's).
fn python_spec(step: &PythonStep, files: &BTreeMap<String, String>) -> Result<EnvSpec, String> {
    env_spec(
        step.requirements.as_ref(),
        step.python.as_deref(),
        files,
        &[],
    )
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Runs a (rendered) python step: its outcome, as `Err` when the try did not succeed.
///
/// # Errors
/// The try's outcome when it did not succeed (the caller records either).
pub async fn run(
    step: &PythonStep,
    env: &ShellEnv,
    conns: &Connections,
    files: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, TaskOutcome> {
    let spec = python_spec(step, files).map_err(|e| TaskOutcome::failed(e, false))?;
    // Building the environment is not the script's time: the task's timeout bounds the script.
    let python_env = env::ensure(&env.python, &spec, log, cancel)
        .await
        .map_err(|e| TaskOutcome::failed(e, true))?;
    let work = tempfile::Builder::new()
        .prefix("weir-python-")
        .tempdir()
        .map_err(|e| TaskOutcome::failed(format!("cannot create the try's folder: {e}"), true))?;
    let (name, source) = match (&step.script, &step.file) {
        (Some(script), _) => (format!("{}.py", env.get("WEIR_TASK_ID")), script.as_str()),
        (None, Some(path)) => {
            let text = files.get(path).ok_or_else(|| {
                TaskOutcome::failed(format!("the DAG version holds no file `{path}`"), false)
            })?;
            (file_name(path).to_owned(), text.as_str())
        }
        (None, None) => {
            return Err(TaskOutcome::failed(
                "a `python` task needs `script` or `file`",
                false,
            ));
        }
    };
    let script = work.path().join(&name);
    write(&script, source)?;
    let mut context = env.context.clone();
    let mut named = serde_json::Map::new();
    for c in &step.conns {
        let value = conns.for_code(c).ok_or_else(|| {
            TaskOutcome::failed(
                format!("connection `{c}` (in `conns`) is not in the configuration"),
                false,
            )
        })?;
        named.insert(c.clone(), value);
    }
    if let serde_json::Value::Object(map) = &mut context {
        map.insert("conns".into(), serde_json::Value::Object(named));
    }
    let context_file = work.path().join("context.json");
    write(&context_file, &context.to_string())?;
    let runtime = runtime(&env.python).map_err(|e| TaskOutcome::failed(e, true))?;
    let output_file = work.path().join("outputs.json");
    let error_file = work.path().join("error.txt");

    let mut cmd = Command::new(python_env.python());
    cmd.arg(runtime.join("weir_runner.py")).arg(&script);
    in_environment(&mut cmd, &python_env.dir, env, &step.env);
    cmd.env("PYTHONPATH", python_path(&runtime, env, step))
        .env("PYTHONUNBUFFERED", "1")
        .env("WEIR_CONTEXT_FILE", &context_file)
        .env("WEIR_OUTPUT_FILE", &output_file)
        .env("WEIR_ERROR_FILE", &error_file);
    if let Err(outcome) =
        super::process::run_group(cmd, &format!("python {name}"), timeout, log, cancel).await
    {
        // The script's own error says more than `exit code 1`.
        return Err(match (outcome, std::fs::read_to_string(&error_file)) {
            (TaskOutcome::Failed { .. }, Ok(error)) if !error.trim().is_empty() => {
                TaskOutcome::failed(error.trim().to_owned(), true)
            }
            (outcome, _) => outcome,
        });
    }
    let outputs = read_outputs(&output_file).map_err(|e| TaskOutcome::failed(e, false))?;
    log.note(format!("succeeded ({} output(s))", outputs.len()));
    Ok(TaskOutcome::Succeeded { outputs })
}

/// The environment of a process run from environment `env_dir` (python, dbt): a shell
/// task's (the worker's allowed variables, the try's `WEIR_*`, the task's `env`), with the
/// environment active: `VIRTUAL_ENV`, and its `bin` first on `PATH`.
pub(crate) fn in_environment<'a>(
    cmd: &mut Command,
    env_dir: &Path,
    env: &ShellEnv,
    own: impl IntoIterator<Item = (&'a String, &'a weir_model::text::Text)>,
) {
    cmd.env_clear()
        .envs(env.inherited.iter().map(|(k, v)| (k, v)))
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .envs(own.into_iter().map(|(k, v)| (k, &v.0)));
    let mut path = vec![env_dir.join("bin")];
    if let Some((_, inherited)) = env.inherited.iter().find(|(k, _)| k == "PATH") {
        path.extend(std::env::split_paths(inherited));
    }
    cmd.env("PATH", std::env::join_paths(path).unwrap_or_default())
        .env("VIRTUAL_ENV", env_dir);
}

/// `PYTHONPATH`: weir's helper module first, then what the task's environment already names
/// (its `env`, or the worker's through `pass_env`).
fn python_path(runtime: &Path, env: &ShellEnv, step: &PythonStep) -> std::ffi::OsString {
    let given = step.env.get("PYTHONPATH").map(|v| v.0.clone()).or_else(|| {
        env.inherited
            .iter()
            .find(|(k, _)| k == "PYTHONPATH")
            .map(|(_, v)| v.clone())
    });
    let mut parts = vec![runtime.to_path_buf()];
    parts.extend(given.iter().flat_map(std::env::split_paths));
    std::env::join_paths(parts).unwrap_or_default()
}

fn write(path: &Path, text: &str) -> Result<(), TaskOutcome> {
    std::fs::write(path, text)
        .map_err(|e| TaskOutcome::failed(format!("cannot write {}: {e}", path.display()), true))
}

/// The folder holding weir's runner and helper module (`<cache_dir>/runtime/<hash>`), written
/// on first use; a new weir with a changed runner writes a new folder.
fn runtime(setup: &PythonSetup) -> Result<PathBuf, String> {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(format!("{RUNNER}\0{HELPER}"));
    let key: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::path::absolute(&setup.cache_dir)
        .unwrap_or_else(|_| setup.cache_dir.clone())
        .join("runtime")
        .join(key);
    if dir.join("weir.py").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Each file written whole under another name, then renamed: a concurrent try never reads
    // half a runner. The helper goes last: its presence says the folder is complete.
    for (name, text) in [("weir_runner.py", RUNNER), ("weir.py", HELPER)] {
        let temp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, dir.join(name)))
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))?;
    }
    Ok(dir)
}

/// The outputs the runner wrote: a JSON object whose names are `[A-Za-z0-9_]+`.
fn read_outputs(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("the script ended without writing its outputs: {e}"))?;
    let outputs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| format!("the outputs are not a JSON object: {e}"))?;
    if let Some(bad) = outputs
        .keys()
        .find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(format!(
            "output `{bad}` is not a valid output name ([A-Za-z0-9_]+): templates read it as `tasks.<id>.outputs.<name>`"
        ));
    }
    Ok(outputs)
}

/// The environment a `python` or `dbt` step runs in (`None` for other kinds): what
/// `weir python env` builds.
///
/// # Errors
/// A requirements file the version does not hold, or a dbt connection weir has no adapter for.
pub fn environment_of(
    step: &weir_model::Step,
    files: &BTreeMap<String, String>,
    conns: &Connections,
) -> Option<Result<EnvSpec, String>> {
    match step {
        weir_model::Step::Python(p) => Some(python_spec(p, files)),
        weir_model::Step::Dbt(d) => Some(super::dbt::env_spec(d, files, conns)),
        _ => None,
    }
}
