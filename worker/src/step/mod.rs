//! One executor per step kind. Each takes a rendered step and returns a [`TaskOutcome`].

pub mod guard;
pub mod shell;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_model::Step;

use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs one rendered step.
pub async fn execute(
    step: &Step,
    env: &shell::ShellEnv,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> TaskOutcome {
    match step {
        Step::Noop(_) => TaskOutcome::Succeeded {
            outputs: serde_json::Map::new(),
        },
        Step::Shell(s) => shell::run(s, env, timeout, log, cancel).await,
        other => {
            let error = format!(
                "step kind `{}` is not built yet in this version of weir (only shell and noop run)",
                other.kind()
            );
            log.note(&error);
            TaskOutcome::Failed {
                error,
                retryable: false,
            }
        }
    }
}
