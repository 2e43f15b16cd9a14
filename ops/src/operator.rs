//! What an operator does, audited: each action carries out its core (in [`crate::actions`]
//! or the store) and writes its audit row: who, what, on what, with which details. The web
//! pages, the API and the CLI all come through here, so an action reads the same in the audit
//! log whichever way it was asked for.
//!
//! The audit row is written after the action commits: an action that fails leaves no row, and
//! a database lost between the two leaves the action done and unrecorded (the error says so).

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use weir_model::{Dag, DataInterval, TaskState};
use weir_store::{RunRow, Store};

use crate::actions::{self, Backfilled, ClearSelection, Rerun, Triggered};
use crate::error::{OpsError, Result};

/// Who asks, as the audit log names them: a weir user's name, or `cli:USER@HOST` for the CLI
/// on the database directly.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a>(pub &'a str);

async fn audit(
    store: &Store,
    actor: Actor<'_>,
    action: &str,
    target: &str,
    detail: Value,
    now: DateTime<Utc>,
) -> Result<()> {
    Ok(store.audit(actor.0, action, target, &detail, now).await?)
}

/// [`actions::trigger`], audited as `trigger` on the run.
///
/// # Errors
/// The action's, or the audit row's database failure.
pub async fn trigger(
    store: &Store,
    actor: Actor<'_>,
    dag_id: &str,
    params: &Map<String, Value>,
    logical_date: Option<DateTime<Utc>>,
    rerun: bool,
    now: DateTime<Utc>,
) -> Result<Triggered> {
    let t = actions::trigger(store, dag_id, params, logical_date, rerun, now).await?;
    let detail = json!({"dag_id": dag_id, "params": params, "rerun": t.rerun});
    audit(store, actor, "trigger", &t.run.run_id, detail, now).await?;
    Ok(t)
}

/// What a backfill was asked for, as its audit row records it.
#[derive(Debug, Clone)]
pub struct BackfillRequest<'a> {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
    /// Which existing runs run again.
    pub rerun: Rerun,
    /// Param overrides.
    pub params: &'a Map<String, Value>,
}

/// [`actions::backfill`] of every interval at once, audited as one `backfill` on the DAG.
///
/// # Errors
/// The action's, or the audit row's database failure.
pub async fn backfill(
    store: &Store,
    actor: Actor<'_>,
    dag: &Dag,
    version_id: i64,
    intervals: &[DataInterval],
    request: &BackfillRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Backfilled> {
    let done = actions::backfill(
        store,
        dag,
        version_id,
        intervals,
        request.rerun,
        request.params,
        now,
    )
    .await?;
    record_backfill(store, actor, dag.id(), request, done.run_ids.len(), now).await?;
    Ok(done)
}

/// The audit row of a backfill a caller paced itself (calling [`actions::backfill`] an
/// interval at a time): one `backfill` on the DAG with the runs it made.
///
/// # Errors
/// The database's.
pub async fn record_backfill(
    store: &Store,
    actor: Actor<'_>,
    dag_id: &str,
    request: &BackfillRequest<'_>,
    runs: usize,
    now: DateTime<Utc>,
) -> Result<()> {
    let rerun = match request.rerun {
        Rerun::None => "none",
        Rerun::Failed => "failed",
        Rerun::All => "all",
    };
    let detail = json!({"from": request.from, "to": request.to, "rerun": rerun, "params": request.params, "runs": runs});
    audit(store, actor, "backfill", dag_id, detail, now).await
}

/// [`actions::clear`], audited as `clear` on the run.
///
/// # Errors
/// The action's, or the audit row's database failure.
pub async fn clear(
    store: &Store,
    actor: Actor<'_>,
    run: &RunRow,
    selection: &ClearSelection,
    now: DateTime<Utc>,
) -> Result<u64> {
    let cleared = actions::clear(store, run, selection).await?;
    let detail = json!({"task_ids": selection.task_ids, "downstream": selection.downstream, "failed_only": selection.failed_only, "latest_version": selection.latest_version, "cleared": cleared});
    audit(store, actor, "clear", &run.run_id, detail, now).await?;
    Ok(cleared)
}

/// [`actions::mark`] to success or failed, audited as `mark_success` or `mark_failed` on the
/// run; an instance marked failed says who did it.
///
/// # Errors
/// The action's, or the audit row's database failure.
pub async fn mark(
    store: &Store,
    actor: Actor<'_>,
    run: &RunRow,
    task_ids: &[String],
    downstream: bool,
    to: TaskState,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (action, reason) = match to {
        TaskState::Success => ("mark_success", format!("marked success by {}", actor.0)),
        _ => ("mark_failed", format!("marked failed by {}", actor.0)),
    };
    let changed = actions::mark(store, run, task_ids, downstream, to, &reason, now).await?;
    let detail = json!({"task_ids": task_ids, "downstream": downstream, "changed": changed});
    audit(store, actor, action, &run.run_id, detail, now).await?;
    Ok(changed)
}

/// Cancels a queued or running run (running tries are stopped and failed, the rest skipped),
/// audited as `cancel`; the run as it is afterwards.
///
/// # Errors
/// [`OpsError::Conflict`] for a run that has ended, unknown run, database failures.
pub async fn cancel(
    store: &Store,
    actor: Actor<'_>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<RunRow> {
    let run = store.run(run_id).await?;
    let reason = format!("run cancelled by {}", actor.0);
    if !store.cancel_run(run_id, &reason, now).await? {
        return Err(OpsError::Conflict(format!(
            "run {run_id} is {}: only a queued or running run can be cancelled",
            run.state
        )));
    }
    audit(store, actor, "cancel", run_id, json!({}), now).await?;
    Ok(store.run(run_id).await?)
}

/// Pauses or unpauses a DAG, audited as `pause` or `unpause`; whether it changed.
///
/// # Errors
/// Unknown DAG, database failures.
pub async fn set_paused(
    store: &Store,
    actor: Actor<'_>,
    dag_id: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    let changed = store.set_paused(dag_id, paused).await?;
    let action = if paused { "pause" } else { "unpause" };
    audit(
        store,
        actor,
        action,
        dag_id,
        json!({"changed": changed}),
        now,
    )
    .await?;
    Ok(changed)
}

/// Forgets the incremental cursors of a DAG's loads (or of one task), so that their next run
/// reads the source from the start; audited as `reset_incremental`. How many were forgotten.
///
/// # Errors
/// The database's.
pub async fn reset_incremental(
    store: &Store,
    actor: Actor<'_>,
    dag_id: &str,
    task_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let forgotten = store.reset_incremental(dag_id, task_id).await?;
    let detail = json!({"task_id": task_id, "forgotten": forgotten});
    audit(store, actor, "reset_incremental", dag_id, detail, now).await?;
    Ok(forgotten)
}

/// Records an update of an asset from outside weir (`weir assets touch`, `POST
/// /api/v1/assets/events`), audited as `touch_asset`: the DAGs scheduled on it run as for an
/// update by a task. Returns the event's id.
///
/// # Errors
/// A key that is not an asset's, an interval whose end is before its start, database
/// failures.
pub async fn touch_asset(
    store: &Store,
    actor: Actor<'_>,
    mut event: weir_store::ExternalEvent,
    now: DateTime<Utc>,
) -> Result<i64> {
    event.key = weir_model::asset::parse_asset_key(&event.key).map_err(OpsError::Invalid)?;
    if let Some((start, end)) = event.interval
        && end < start
    {
        return Err(OpsError::Invalid(format!(
            "the interval ends ({end}) before it starts ({start})"
        )));
    }
    if event.details.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(OpsError::Invalid("`details` is a JSON object".into()));
    }
    let id = store.record_external_event(&event, now).await?;
    let detail = json!({"event_id": id, "source": event.source, "counts": event.counts});
    audit(store, actor, "touch_asset", &event.key, detail, now).await?;
    Ok(id)
}
