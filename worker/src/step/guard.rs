//! The process guard: task process groups die with the process that started them, even when
//! that process is killed with SIGKILL.
//!
//! One small `bash` per process (started on first use) reads `+PGID` / `-PGID` lines on a pipe
//! from us. When the pipe reaches end of file, which the kernel guarantees once we are gone
//! however we died, it kills every group still listed. A worker also fences its tasks with it:
//! each `beat MICROS` line sets a deadline, and when no further beat comes before it the guard
//! kills every listed group. The worker beats only after the database confirmed its leases, with
//! a deadline just short of them, so a worker that is paused (SIGSTOP), swapped out, stalled or
//! cut off from the database, and cannot stop its own tasks, still has them stopped before the
//! scheduler gives them to
//! another worker. The guard is its own process: it runs while the worker does not. Compared with the parent-death signal
//! this kills whole groups (grandchildren included, which a parent-death signal on `bash` would
//! leave running) and costs one process per worker instead of an extra `exec` per task
//! (weir forbids `unsafe`, which setting the signal in the child through `pre_exec` needs; going
//! through `setpriv` cost a third of the CPU of a short task; measured in docs/benchmarks.md).
//!
//! The guard runs in its own process group, so Ctrl-C at a terminal reaches the worker (which
//! shuts down gracefully) and not the guard.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

/// The guard's program: keep the set of live groups; at end of input, or when a beat's deadline
/// passes before the next beat, kill them all (the ids are numbers written by us, safe on the
/// `kill` command line). Only a beat moves the deadline: groups coming and going do not prove
/// that the worker still holds its leases. Times are microseconds of `EPOCHREALTIME`. Nothing
/// in the loop starts a process (`printf -v`, not `$(printf …)`, which forks a subshell per
/// line: two per task, ~0.45 ms of CPU, measured in docs/benchmarks.md).
const SCRIPT: &str = r#"declare -A live
deadline=
kill_all() {
  if [ ${#live[@]} -gt 0 ]; then
    groups=()
    for g in "${!live[@]}"; do groups+=("-$g"); done
    kill -s KILL -- "${groups[@]}" 2>/dev/null
    live=()
  fi
}
while true; do
  if [ -n "$deadline" ]; then
    now=${EPOCHREALTIME/[.,]/}
    left=$(( deadline - now ))
    if [ $left -le 0 ]; then kill_all; deadline=; continue; fi
    printf -v fraction %06d $(( left % 1000000 ))
    IFS= read -r -t "$(( left / 1000000 )).$fraction" line
  else
    IFS= read -r line
  fi
  status=$?
  if [ $status -gt 128 ]; then continue; fi
  if [ $status -ne 0 ]; then kill_all; exit 0; fi
  case "$line" in
    +*) live[${line:1}]=1 ;;
    -*) unset "live[${line:1}]" ;;
    beat\ *) now=${EPOCHREALTIME/[.,]/}; deadline=$(( now + ${line#beat } )) ;;
  esac
done"#;

struct Guard {
    child: Child,
    input: ChildStdin,
}

static GUARD: OnceLock<Mutex<Option<Guard>>> = OnceLock::new();

fn start() -> std::io::Result<Guard> {
    let mut child = Command::new("bash")
        .args(["-c", SCRIPT])
        // `read -t` takes a decimal point whatever the worker's locale.
        .env("LC_ALL", "C")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let input = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("the guard has no stdin"))?;
    Ok(Guard { child, input })
}

/// Sends one line to the guard, starting it (again) when it is not running.
fn send(line: &str) -> std::io::Result<()> {
    let slot = GUARD.get_or_init(|| Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..2 {
        let alive = guard
            .as_mut()
            .is_some_and(|g| matches!(g.child.try_wait(), Ok(None)));
        if !alive {
            if guard.is_some() {
                tracing::warn!("the task process guard exited; starting a new one");
            }
            *guard = Some(start()?);
        }
        if let Some(g) = guard.as_mut() {
            match g.input.write_all(format!("{line}\n").as_bytes()) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(error = %e, "writing to the task process guard failed"),
            }
            *guard = None;
        }
    }
    Err(std::io::Error::other(
        "the task process guard cannot be started",
    ))
}

/// Puts a process group under the guard: it is killed if this process dies first.
///
/// # Errors
/// The guard cannot be started (no `bash`) or written to.
pub fn watch(group: i32) -> std::io::Result<()> {
    send(&format!("+{group}"))
}

/// Tells the guard this process still holds its tasks' leases for `within`: when no further
/// beat comes in that time, the guard kills every task group it watches.
pub fn beat(within: std::time::Duration) {
    let micros = within.as_micros().max(1);
    if let Err(e) = send(&format!("beat {micros}")) {
        tracing::warn!(error = %e, "could not reach the task process guard");
    }
}

/// Takes a process group off the guard once it is gone (so a reused id is never killed).
pub fn release(group: i32) {
    if let Err(e) = send(&format!("-{group}")) {
        tracing::warn!(error = %e, group, "could not release a process group from the guard");
    }
}
