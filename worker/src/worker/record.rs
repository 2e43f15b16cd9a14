//! Recording finished tries: the outcome becomes a state, outputs, an error and the next
//! due time, written in batches by one task and retried through a database outage.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use weir_model::clock::Clock;
use weir_model::dag::Task;
use weir_model::{Dag, TaskState};
use weir_notify::try_notifications;
use weir_store::{AssetRecord, ClaimedTask, Completion, NewLogLine, RunRow, Store};

use super::Worker;
use crate::error::{Result, WorkerError};
use crate::outcome::TaskOutcome;

/// A finished try waiting to be written, and who waits for the result (recorded or lease
/// lost; or the store's error).
pub(super) type Pending = (
    Completion,
    oneshot::Sender<std::result::Result<bool, String>>,
);

/// Most completions written in one statement.
const COMPLETIONS_PER_WRITE: usize = 64;

/// Writes finished tries as they come, in batches: while one write is in flight, tries that
/// finish queue and go together in the next (one statement and one commit for all; a lone
/// try waits for nothing). Under a fan-out this halves the database round trips per try.
pub(super) async fn record_batches(
    store: Store,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < COMPLETIONS_PER_WRITE {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (completions, waiters): (Vec<Completion>, Vec<_>) = batch.into_iter().unzip();
        match store.complete_tasks(&completions, clock.now()).await {
            Ok(recorded) => {
                for (w, r) in waiters.into_iter().zip(recorded) {
                    let _ = w.send(Ok(r));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Recording a try's outcome is retried after this, doubling up to [`RECORD_RETRY_MAX`], for
/// [`RECORD_RETRY_FOR`] in all: a database restart or failover costs seconds, and the outcome
/// is kept meanwhile.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);
const RECORD_RETRY_FOR: Duration = Duration::from_secs(600);
impl Worker {
    /// Records a try's outcome, deciding retry or failure from the policy of `owner` (the DAG,
    /// the task and its run; a try that could not even be prepared has none, and fails), with
    /// the notifications the task asks for.
    pub(super) async fn record(
        &self,
        ti: &ClaimedTask,
        outcome: &TaskOutcome,
        owner: Option<(&Dag, &Task, &RunRow)>,
        wait_limit: Option<Duration>,
        log: Vec<NewLogLine>,
        assets: Vec<AssetRecord>,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut give_back_try = false;
        let after_failure = || match owner {
            Some((_, task, _)) => task.retry.after_failure(ti.try_number, ti.max_tries, now),
            None => (TaskState::Failed, None),
        };
        let (state, outputs, error, due_at) = match outcome {
            TaskOutcome::Succeeded { outputs } => (
                TaskState::Success,
                Some(serde_json::Value::Object(outputs.clone())),
                None,
                None,
            ),
            TaskOutcome::Cancelled { reason } => (
                TaskState::UpForRetry,
                None,
                Some(format!("interrupted: {reason}")),
                Some(now),
            ),
            TaskOutcome::Failed {
                error,
                retryable: false,
            } => (TaskState::Failed, None, Some(error.clone()), None),
            TaskOutcome::Failed { error, .. } => {
                let (state, due) = after_failure();
                (state, None, Some(error.clone()), due)
            }
            TaskOutcome::NotYet {
                reason,
                check_again_in,
            } => {
                // When the sensor first checked, kept in its outputs across checks.
                let since = ti
                    .outputs
                    .as_ref()
                    .and_then(|o| o.get("waiting_since"))
                    .and_then(|v| v.as_str())
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map_or(now, |t| t.with_timezone(&Utc));
                let waited = (now - since).to_std().unwrap_or_default();
                match wait_limit {
                    Some(limit) if waited >= limit => (
                        TaskState::Failed,
                        None,
                        Some(format!(
                            "gave up after waiting {}s: {reason}",
                            waited.as_secs()
                        )),
                        None,
                    ),
                    _ => {
                        give_back_try = true;
                        let next = weir_model::duration::later(now, *check_again_in);
                        (
                            TaskState::UpForRetry,
                            Some(serde_json::json!({ "waiting_since": since.to_rfc3339() })),
                            Some(format!("waiting: {reason}")),
                            Some(next),
                        )
                    }
                }
            }
            // The data failed the checks: another try finds the same.
            TaskOutcome::FailedWithOutputs {
                error,
                outputs,
                retryable: false,
            } => (
                TaskState::Failed,
                Some(serde_json::Value::Object(outputs.clone())),
                Some(error.clone()),
                None,
            ),
            TaskOutcome::FailedWithOutputs { error, outputs, .. } => {
                let (state, due) = after_failure();
                (
                    state,
                    Some(serde_json::Value::Object(outputs.clone())),
                    Some(error.clone()),
                    due,
                )
            }
            TaskOutcome::TimedOut { after } => {
                let (state, due) = after_failure();
                (
                    state,
                    None,
                    Some(format!("timed out after {}s", after.as_secs())),
                    due,
                )
            }
        };
        let error = error.map(|e| self.masker.mask(&e).into_owned());
        tracing::debug!(state = %state, error = error.as_deref(), "try finished");
        let notify = match owner {
            // A sensor's check that found nothing yet is not a retry.
            Some((_, task, run)) if !give_back_try => {
                try_notifications(task, run, ti, state, error.as_deref(), now)
            }
            _ => Vec::new(),
        };
        let lineage = match (&self.cfg.lineage_namespace, owner) {
            (Some(ns), Some((_, task, run)))
                if !matches!(task.step, weir_model::Step::WaitFor(_)) =>
            {
                let kind = match (state, outcome) {
                    (TaskState::Success, _) => "COMPLETE",
                    (_, TaskOutcome::Cancelled { .. }) => "ABORT",
                    _ => "FAIL",
                };
                vec![crate::lineage::event(
                    ns,
                    kind,
                    now,
                    run,
                    ti,
                    error.as_deref(),
                    &assets,
                    &self.conns,
                )]
            }
            _ => Vec::new(),
        };
        let completion = Completion {
            ti_id: ti.id,
            worker_id: self.id.clone(),
            try_number: ti.try_number,
            state,
            outputs,
            error,
            due_at,
            log,
            give_back_try,
            notify,
            assets,
            lineage,
            // A success with nothing downstream changes no decision (unless the run is then
            // over or has instances waiting: the store checks those).
            wake: state != TaskState::Success
                || owner.is_none_or(|(dag, _, _)| dag.has_downstream(&ti.task_id)),
        };
        // The outcome is known: it is recorded, however long the database takes to come back
        // (a restart, a failover), rather than forgotten and the task run again. The try stays
        // tracked meanwhile, so heartbeats keep its lease once the database answers.
        let started = std::time::Instant::now();
        let mut wait = RECORD_RETRY_FIRST;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (done, recorded) = oneshot::channel();
            if self.recorder.send((completion.clone(), done)).is_err() {
                return Err(WorkerError::Record("the recorder stopped".into()));
            }
            match recorded.await {
                Ok(Ok(true)) => {
                    if started.elapsed() > RECORD_RETRY_FIRST {
                        tracing::info!(ti_id = ti.id, "the try's outcome is recorded after all");
                    }
                    return Ok(());
                }
                // Reaped, cleared or cancelled meanwhile: someone else owns the instance now.
                // (After a failed attempt, that attempt may also have committed unseen.)
                Ok(Ok(false)) if attempts > 1 => {
                    tracing::warn!(
                        ti_id = ti.id,
                        try_number = ti.try_number,
                        "the try is no longer this worker's: an earlier attempt recorded it, or it was taken over"
                    );
                    return Ok(());
                }
                Ok(Ok(false)) => {
                    tracing::warn!(
                        ti_id = ti.id,
                        try_number = ti.try_number,
                        "lease lost before the try ended; its outcome is dropped"
                    );
                    return Ok(());
                }
                Ok(Err(e)) if started.elapsed() < RECORD_RETRY_FOR => {
                    tracing::warn!(ti_id = ti.id, error = %e, retry_in_ms = wait.as_millis() as u64, "recording the try's outcome failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECORD_RETRY_MAX);
                }
                Ok(Err(e)) => return Err(WorkerError::Record(e)),
                Err(_) => return Err(WorkerError::Record("the recorder stopped".into())),
            }
        }
    }
}
