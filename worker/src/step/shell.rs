//! `kind: shell`: `bash -eo pipefail -c RUN` in a new process group.
//!
//! - The process group is the unit of killing: a timeout sends TERM to the whole group, waits
//!   [`KILL_GRACE`], then KILL; grandchildren (`sleep 100 &`, pipelines) die with it. After a
//!   normal exit, whatever the script left running in its group is killed too, so nothing a
//!   retry would duplicate survives the try.
//! - The group is put under the process guard ([`super::guard`]) while it runs, so it dies
//!   with its worker even when the worker is killed with SIGKILL.
//! - `key=value` lines written to the file at `$WEIR_OUTPUT` become the try's outputs.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use weir_model::spec::ShellStep;

use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Time between TERM and KILL when a try is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

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
    let mut cmd = Command::new("bash");
    cmd.args(["-eo", "pipefail", "-c", &step.run])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return TaskOutcome::Failed {
                error: format!("cannot start bash: {e}"),
                retryable: true,
            };
        }
    };
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return TaskOutcome::Failed {
            error: "bash exited before it could be watched".into(),
            retryable: true,
        };
    };
    let group = Pid::from_raw(pid);
    if let Err(e) = super::guard::watch(pid) {
        // Without the guard the try would outlive a killed worker and could run twice at once.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
        return TaskOutcome::Failed {
            error: format!("cannot guard the task's processes: {e}"),
            retryable: true,
        };
    }
    log.note(format!("started: bash -eo pipefail -c … (pid {pid})"));
    // Forwarded in this task, next to the wait (no task spawned per stream).
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let forwarding = async {
        tokio::join!(
            async {
                if let Some(s) = stdout {
                    forward(s, "stdout", log).await;
                }
            },
            async {
                if let Some(s) = stderr {
                    forward(s, "stderr", log).await;
                }
            },
        )
    };

    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let waiting = async {
        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(s) if s.success() => None,
                Ok(s) => Some(match (s.code(), s.signal()) {
                    (Some(code), _) => TaskOutcome::Failed { error: format!("exit code {code}"), retryable: true },
                    (None, Some(sig)) => TaskOutcome::Failed { error: format!("killed by signal {sig}"), retryable: true },
                    _ => TaskOutcome::Failed { error: "ended abnormally".into(), retryable: true },
                }),
                Err(e) => Some(TaskOutcome::Failed { error: format!("waiting for bash: {e}"), retryable: true }),
            },
            () = deadline => {
                let after = timeout.unwrap_or_default();
                log.note(format!("timed out after {}s: stopping the process group", after.as_secs()));
                stop_group(group, &mut child).await;
                Some(TaskOutcome::TimedOut { after })
            }
            () = cancel.cancelled() => {
                log.note("stopping: the try was cancelled");
                stop_group(group, &mut child).await;
                Some(TaskOutcome::Cancelled { reason: "cancelled".into() })
            }
        };
        // Whatever the script left behind in its group goes too (and releases the pipes, which
        // ends the forwarding).
        let _ = killpg(group, Signal::SIGKILL);
        super::guard::release(pid);
        outcome
    };
    let (outcome, _) = tokio::join!(waiting, forwarding);
    if let Some(outcome) = outcome {
        if let TaskOutcome::Failed { error, .. } = &outcome {
            log.note(format!("failed: {error}"));
        }
        return outcome;
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

/// TERM to the group, then KILL after [`KILL_GRACE`] if the main process is still there.
async fn stop_group(group: Pid, child: &mut tokio::process::Child) {
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

async fn forward(stream: impl AsyncRead + Unpin, name: &'static str, log: &LogSink) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => log.line(name, line),
            Ok(None) => break,
            Err(e) => {
                // Not UTF-8, or a read error: say so rather than lose the rest silently.
                log.note(format!("{name} could not be read further: {e}"));
                break;
            }
        }
    }
}

/// `key=value` lines of the outputs file; blank lines and `#` comments are ignored.
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
