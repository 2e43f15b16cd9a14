//! How every process a try starts runs (`shell`, `python`, `dbt`):
//!
//! - in a new process group, the unit of killing: a timeout or a cancel sends TERM to the whole
//!   group, waits [`KILL_GRACE`], then KILL; grandchildren (`sleep 100 &`, pipelines, a
//!   script's `subprocess`) die with it. After a normal exit, whatever the process left
//!   running in its group is killed too, so nothing a retry would duplicate survives the try;
//! - under the process guard ([`super::guard`]) while it runs, so it dies with its worker even
//!   when the worker is killed with SIGKILL;
//! - its standard output and error forwarded line by line to the try's log as they come.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// `name` looked up in `path`, the PATH the process will get (relative entries from `cwd`, or
/// this process's folder), or `name` itself when it is not found there (starting it then fails
/// with the usual error). Rust's standard library starts a process with `posix_spawn` (a vfork:
/// nothing of this process's memory map is copied) only when it need not look the program up
/// in a PATH the command sets; otherwise it forks, which cost a busy worker ~1.3 ms of kernel
/// time per task (docs/benchmarks.md). Commands that set their environment name their program
/// by its path, found here.
pub fn program(name: &str, path: Option<&str>, cwd: Option<&str>) -> PathBuf {
    // Absolute, so that a relative PATH entry does not name a program relative to `cwd` twice.
    let here = std::env::current_dir().unwrap_or_default();
    let cwd = cwd.map_or_else(|| here.clone(), |dir| here.join(dir));
    which::which_in(name, path, cwd).unwrap_or_else(|_| PathBuf::from(name))
}

/// Time between TERM and KILL when a try is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs `cmd` (program, arguments, environment set) as described above until it exits,
/// `timeout` passes or `cancel` fires. `label` names it in the log (`bash -eo pipefail -c …`).
///
/// # Errors
/// The outcome of a try that did not end well: a non-zero exit, a signal, a timeout, a cancel,
/// or a process that could not be started or guarded.
pub async fn run_group(
    mut cmd: Command,
    label: &str,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<(), TaskOutcome> {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| TaskOutcome::Failed {
        error: format!("cannot start {label}: {e}"),
        retryable: true,
    })?;
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return Err(TaskOutcome::Failed {
            error: format!("{label} exited before it could be watched"),
            retryable: true,
        });
    };
    let group = Pid::from_raw(pid);
    if let Err(e) = super::guard::watch(pid) {
        // Without the guard the try would outlive a killed worker and could run twice at once.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
        return Err(TaskOutcome::Failed {
            error: format!("cannot guard the task's processes: {e}"),
            retryable: true,
        });
    }
    log.note(format!("started: {label} (pid {pid})"));
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
                Err(e) => Some(TaskOutcome::Failed { error: format!("waiting for {label}: {e}"), retryable: true }),
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
        // Whatever the process left behind in its group goes too (and releases the pipes,
        // which ends the forwarding).
        let _ = killpg(group, Signal::SIGKILL);
        super::guard::release(pid);
        outcome
    };
    let (outcome, _) = tokio::join!(waiting, forwarding);
    match outcome {
        None => Ok(()),
        Some(outcome) => {
            if let TaskOutcome::Failed { error, .. } = &outcome {
                log.note(format!("failed: {error}"));
            }
            Err(outcome)
        }
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
