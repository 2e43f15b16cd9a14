//! `kind: shell`: `bash -eo pipefail -c RUN` in a new process group.
//!
//! - It runs as every process of a try does ([`super::process`]): in its own process group,
//!   killed whole on a timeout or a cancel, and after a normal exit; under the process guard.
//! - `key=value` lines written to the file at `$WEIR_OUTPUT` become the try's outputs.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use weir_model::spec::ShellStep;

use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Variables of the worker's own environment every task sees: what programs need to run
/// (`PATH`, the user, the locale, the zone, the temporary folder). Nothing else of the
/// worker's environment reaches a task (not `WEIR_DATABASE_URL`, not the SMTP password, not a
/// cloud key) unless `[worker] pass_env` names it.
pub const BASE_ENV: [&str; 10] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// The worker's environment variables a task may see: [`BASE_ENV`], every `LC_*`, and those
/// `pass` names (`NAME`, or `PREFIX*` for every name that starts with `PREFIX`).
pub fn inherited_env(pass: &[String]) -> Vec<(String, String)> {
    let allowed =
        |name: &str| BASE_ENV.contains(&name) || name.starts_with("LC_") || names_match(pass, name);
    std::env::vars().filter(|(k, _)| allowed(k)).collect()
}

/// Whether environment variable `name` is one of `patterns` (`NAME`, or `PREFIX*` for every
/// name starting with `PREFIX`), as `[worker] pass_env` and `secret_env` write them.
pub fn names_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// Environment a shell step runs with, besides its own `env`.
#[derive(Debug, Clone, Default)]
pub struct ShellEnv {
    /// The worker's variables the task may see ([`inherited_env`]); nothing else of the
    /// worker's environment is passed.
    pub inherited: std::sync::Arc<[(String, String)]>,
    /// `WEIR_*` variables describing the try (dag, run, task, try, ds).
    pub vars: Vec<(String, String)>,
    /// An incremental load's stored cursor (read by the worker from weir's database).
    pub incremental_cursor: Option<String>,
    /// The try, for the commit ledger of writing steps (none in `weir tasks test`).
    pub attempt: Option<super::ledger::Attempt>,
    /// A load's retention of reject rows (`[retention] keep_rejects`).
    pub keep_rejects: Option<std::time::Duration>,
    /// weir's database, for a load's claims of objects on stores (none in `weir tasks test`).
    pub claims: Option<weir_store::Store>,
    /// What the try's templates read ([`weir_model::template::RenderContext`]), as JSON: a
    /// `python` task's context.
    pub context: serde_json::Value,
    /// Where `python` and `dbt` environments are built.
    pub python: super::python::env::PythonSetup,
}

impl ShellEnv {
    /// A variable's value (`""` when unset).
    pub fn get(&self, name: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Runs a (rendered) shell step.
pub async fn run(
    step: &ShellStep,
    env: &ShellEnv,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> TaskOutcome {
    let output_file = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => {
            return TaskOutcome::Failed {
                error: format!("cannot create the $WEIR_OUTPUT file: {e}"),
                retryable: true,
            };
        }
    };
    // The PATH bash gets: the task's own, else the worker's variables', else the inherited one.
    let path = step
        .env
        .get("PATH")
        .map(|v| v.0.as_str())
        .or_else(|| last_named(&env.vars, "PATH"))
        .or_else(|| last_named(&env.inherited, "PATH"));
    let mut cmd = Command::new(super::process::program("bash", path, step.cwd.as_deref()));
    cmd.args(["-eo", "pipefail", "-c", &step.run])
        .env_clear()
        .envs(env.inherited.iter().map(|(k, v)| (k, v)))
        .env("WEIR_OUTPUT", output_file.path());
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    for (k, v) in &step.env {
        cmd.env(k, &v.0);
    }
    if let Some(cwd) = &step.cwd {
        cmd.current_dir(cwd);
    }
    if let Err(failed) =
        super::process::run_group(cmd, "bash -eo pipefail -c …", timeout, log, cancel).await
    {
        return failed;
    }
    match read_outputs(output_file.path()) {
        Ok(outputs) => {
            log.note(format!("succeeded ({} output(s))", outputs.len()));
            TaskOutcome::Succeeded { outputs }
        }
        Err(e) => TaskOutcome::Failed {
            error: e,
            retryable: false,
        },
    }
}

/// `key=value` lines of the outputs file; blank lines and `#` comments are ignored.
fn last_named<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn read_outputs(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading $WEIR_OUTPUT: {e}"))?;
    let mut out = serde_json::Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "$WEIR_OUTPUT line {}: `{line}` is not key=value",
                n + 1
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "$WEIR_OUTPUT line {}: `{key}` is not a valid output name ([A-Za-z0-9_]+)",
                n + 1
            ));
        }
        out.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    Ok(out)
}
