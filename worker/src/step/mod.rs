//! One executor per step kind. Each takes a rendered step and returns a [`TaskOutcome`].

pub mod assets;
pub(crate) mod db;
pub mod dbt;
pub mod export;
pub mod guard;
pub mod http;
pub mod ledger;
pub mod load;
pub mod migrate;
pub mod process;
pub mod python;
pub mod shell;
pub mod sql;
pub mod sqltext;
pub mod transfer;
pub mod validate;
pub mod wait_for;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_model::Step;

use crate::conn::Connections;
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Where a file is written before it is renamed into place (`backups/x.csv` →
/// `backups/.x.csv.partial`): a reader never sees half a file.
pub(crate) fn partial_path(to: &std::path::Path) -> std::path::PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    to.with_file_name(format!(".{name}.partial"))
}

/// Longest one sensor check may take.
pub const SENSOR_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one rendered step. A step that runs past `timeout`, or is cancelled, is stopped: a
/// shell step's process group is killed; a database step's transaction is dropped (rolled
/// back).
pub async fn execute(
    step: &Step,
    env: &shell::ShellEnv,
    conns: &Connections,
    files: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> TaskOutcome {
    match step {
        Step::Noop(_) => TaskOutcome::Succeeded {
            outputs: serde_json::Map::new(),
        },
        Step::Shell(s) => shell::run(s, env, timeout, log, cancel).await,
        Step::Python(p) => python::run(p, env, conns, files, timeout, log, cancel)
            .await
            .unwrap_or_else(|failed| failed),
        Step::Dbt(d) => dbt::run(d, env, conns, files, timeout, log, cancel)
            .await
            .unwrap_or_else(|failed| failed),
        Step::Sql(s) => {
            let attempt = env.attempt.as_ref().filter(|_| !s.idempotent);
            bounded(sql::run(s, attempt, conns, log), timeout, log, cancel).await
        }
        Step::Load(l) => {
            let ctx = load::LoadContext {
                run_id: env.get("WEIR_RUN_ID").to_owned(),
                task_id: env.get("WEIR_TASK_ID").to_owned(),
                cursor: env.incremental_cursor.clone(),
                attempt: env.attempt.clone(),
                keep_rejects: env.keep_rejects,
                claims: env.claims.clone(),
            };
            bounded(load::run(l, &ctx, conns, log), timeout, log, cancel).await
        }
        Step::Http(h) => bounded(http::run(h, conns, log), timeout, log, cancel).await,
        // The task's timeout bounds a sensor's whole wait (the worker checks it); one check is
        // bounded on its own.
        Step::WaitFor(w) => {
            bounded(
                wait_for::check(w, conns, log),
                Some(SENSOR_CHECK_TIMEOUT),
                log,
                cancel,
            )
            .await
        }
        Step::Export(x) => bounded(export::run(x, conns, log), timeout, log, cancel).await,
        Step::Transfer(t) => bounded(transfer::run(t, conns, log), timeout, log, cancel).await,
        Step::Validate(v) => bounded(validate::run(v, conns, log), timeout, log, cancel).await,
        Step::Migrate(m) => {
            bounded(
                migrate::run(&m.conn, &m.dir, files, conns, log),
                timeout,
                log,
                cancel,
            )
            .await
        }
    }
}

/// Runs an in-process step (database work) until it ends, `timeout` passes or `cancel` fires;
/// the last two drop it, which rolls its transaction back.
async fn bounded(
    work: impl Future<Output = TaskOutcome>,
    timeout: Option<Duration>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> TaskOutcome {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        outcome = work => outcome,
        () = deadline => {
            let after = timeout.unwrap_or_default();
            log.note(format!("timed out after {}s: the transaction is rolled back", after.as_secs()));
            TaskOutcome::TimedOut { after }
        }
        () = cancel.cancelled() => {
            log.note("stopping: the try was cancelled; the transaction is rolled back");
            TaskOutcome::Cancelled { reason: "cancelled".into() }
        }
    }
}
