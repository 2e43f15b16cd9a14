//! What an operator asks for, by CLI or web: trigger a run, backfill a date range, clear
//! task instances. One implementation for both, so `weir trigger` and `POST /dags/{id}/runs`
//! cannot drift apart.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use weir_model::{Dag, DataInterval, RunType, TaskState};
use weir_store::{DagRow, RunRow, Store, StoreError, TaskInstanceRow};

use crate::error::{OpsError, Result};
use crate::runs::new_run;

/// A DAG's latest stored version, parsed; an unknown id is [`OpsError::NotFound`] with a
/// "did you mean" when a DAG id is close.
///
/// # Errors
/// Unknown DAG, invalid stored version, database failures.
pub async fn latest_dag(store: &Store, dag_id: &str) -> Result<(i64, Dag)> {
    let (row, dag) = latest_dag_and_row(store, dag_id).await?;
    Ok((row.version_id, dag))
}

/// [`latest_dag`] with the DAG's row.
async fn latest_dag_and_row(store: &Store, dag_id: &str) -> Result<(DagRow, Dag)> {
    let row = match store.dag(dag_id).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => {
            let ids: Vec<String> = store
                .list_dags()
                .await?
                .into_iter()
                .map(|d| d.dag_id)
                .collect();
            let hint = weir_model::suggest::did_you_mean(dag_id, ids.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(OpsError::NotFound(format!("no DAG `{dag_id}`{hint}")));
        }
        Err(e) => return Err(e.into()),
    };
    let dag = version_dag(store, row.version_id).await?;
    Ok((row, dag))
}

/// Refuses to start runs of a DAG that no file defines any more ([`OpsError::Conflict`],
/// saying why and how to bring it back).
///
/// # Errors
/// A removed or unknown DAG, database failures.
pub async fn ensure_active(store: &Store, dag_id: &str) -> Result<()> {
    refuse_removed(&store.dag(dag_id).await?)
}

fn refuse_removed(row: &DagRow) -> Result<()> {
    let dag_id = &row.dag_id;
    match row.removed_at {
        Some(at) => Err(OpsError::Conflict(format!(
            "DAG `{dag_id}` was removed at {}: no file in the dags folder defines it any more (it was read from {}); \
             its history is kept, and it can run again once a file defines it",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            row.file
        ))),
        None => Ok(()),
    }
}

/// The DAG as a stored version describes it (what a run pins).
///
/// # Errors
/// Unknown or invalid version, database failures.
pub async fn version_dag(store: &Store, version_id: i64) -> Result<Dag> {
    let version = store.dag_version(version_id).await?;
    crate::versions::parse(version_id, version.spec)
}

/// Tries a cleared instance gets: a full set again (`retries + 1`).
#[must_use]
pub fn extra_tries(dag: &Dag, task_id: &str) -> i32 {
    dag.tasks.get(task_id).map_or(1, |t| {
        i32::try_from(t.retry.retries).unwrap_or(i32::MAX - 1) + 1
    })
}

/// A manual run, created or rerun.
#[derive(Debug)]
pub struct Triggered {
    /// The run.
    pub run: RunRow,
    /// Whether an existing run was cleared rather than a new one created.
    pub rerun: bool,
}

/// Creates a manual run of the DAG's latest version at `logical_date` (default `now`), with
/// `params` over the defaults. A run already at that date is cleared and rerun when `rerun`,
/// else refused with [`OpsError::Conflict`].
///
/// # Errors
/// Unknown DAG, bad params, an existing run, database failures.
pub async fn trigger(
    store: &Store,
    dag_id: &str,
    params: &Map<String, Value>,
    logical_date: Option<DateTime<Utc>>,
    rerun: bool,
    now: DateTime<Utc>,
) -> Result<Triggered> {
    let (row, dag) = latest_dag_and_row(store, dag_id).await?;
    let version_id = row.version_id;
    refuse_removed(&row)?;
    let logical_date = logical_date.unwrap_or(now);
    match store.run_at(dag.id(), logical_date).await? {
        Some(existing) if rerun => {
            let instances = store.task_instances(&existing.run_id).await?;
            let items = with_extra_tries(&dag, instances.iter());
            store.clear_tasks(&existing.run_id, &items).await?;
            Ok(Triggered {
                run: store.run(&existing.run_id).await?,
                rerun: true,
            })
        }
        Some(existing) => Err(OpsError::Conflict(format!(
            "DAG `{}` already has a run at {} ({})",
            dag.id(),
            logical_date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            existing.run_id
        ))),
        None => {
            let interval = DataInterval {
                start: logical_date,
                end: logical_date,
            };
            let new = new_run(&dag, version_id, RunType::Manual, interval, params)?;
            let run = store.create_run(&new, now).await?.ok_or_else(|| {
                OpsError::Conflict("the run was created concurrently by someone else".into())
            })?;
            Ok(Triggered { run, rerun: false })
        }
    }
}

/// Which existing runs a backfill runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rerun {
    /// Keep them as they are.
    #[default]
    None,
    /// Clear their failed and upstream-failed instances.
    Failed,
    /// Clear all their instances.
    All,
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct Backfilled {
    /// The run of each interval, in order.
    pub run_ids: Vec<String>,
    /// Runs created.
    pub created: usize,
    /// Existing runs cleared to run again.
    pub rerun: usize,
    /// Existing runs left alone.
    pub kept: usize,
}

/// The intervals among `intervals` that `dag` never materialized: no run of it there
/// succeeded (and no write of a run deleted since covers it). A `--missing` backfill runs
/// only these.
///
/// # Errors
/// Database failures.
pub async fn missing_intervals(
    store: &Store,
    dag: &Dag,
    intervals: &[DataInterval],
) -> Result<Vec<DataInterval>> {
    let (Some(first), Some(last)) = (intervals.first(), intervals.last()) else {
        return Ok(Vec::new());
    };
    let done = store
        .materialized_starts(dag.id(), first.start, last.start)
        .await?;
    Ok(intervals
        .iter()
        .filter(|i| !done.contains(&i.start))
        .copied()
        .collect())
}

/// Creates a backfill run for each interval (or reruns the existing one per `rerun`), of the
/// DAG's version `version_id`, with `params` over the defaults (new runs only). One interval at
/// a time: a caller pacing the backfill calls it with a slice at a time.
///
/// # Errors
/// Database failures.
pub async fn backfill(
    store: &Store,
    dag: &Dag,
    version_id: i64,
    intervals: &[DataInterval],
    rerun: Rerun,
    params: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Backfilled> {
    ensure_active(store, dag.id()).await?;
    let mut done = Backfilled::default();
    for interval in intervals {
        let run_id = match store.run_at(dag.id(), interval.start).await? {
            Some(existing) => {
                let instances = store.task_instances(&existing.run_id).await?;
                let wanted = with_extra_tries(
                    dag,
                    instances.iter().filter(|t| match rerun {
                        Rerun::None => false,
                        Rerun::Failed => {
                            matches!(t.state, TaskState::Failed | TaskState::UpstreamFailed)
                        }
                        Rerun::All => true,
                    }),
                );
                if wanted.is_empty() {
                    done.kept += 1;
                } else {
                    store.clear_tasks(&existing.run_id, &wanted).await?;
                    done.rerun += 1;
                }
                existing.run_id
            }
            None => {
                let new = new_run(dag, version_id, RunType::Backfill, *interval, params)?;
                done.created += 1;
                store
                    .create_run(&new, now)
                    .await?
                    .ok_or_else(|| OpsError::Conflict("created concurrently".into()))?
                    .run_id
            }
        };
        done.run_ids.push(run_id);
    }
    Ok(done)
}

/// Which instances of a run to clear.
#[derive(Debug, Clone, Default)]
pub struct ClearSelection {
    /// These tasks (all when empty).
    pub task_ids: Vec<String>,
    /// And everything downstream of them.
    pub downstream: bool,
    /// Only the failed and upstream-failed ones.
    pub failed_only: bool,
    /// Rerun on the DAG's current version instead of the run's pinned one (the run moves to
    /// it: new tasks are added, dropped ones removed).
    pub latest_version: bool,
}

/// Clears instances of a run so they run again (with a full set of tries). How many.
///
/// # Errors
/// Unknown run or task, database failures.
pub async fn clear(store: &Store, run: &RunRow, selection: &ClearSelection) -> Result<u64> {
    let dag = if selection.latest_version {
        let (version_id, dag) = latest_dag(store, &run.dag_id).await?;
        if version_id != run.version_id {
            move_to_version(store, run, version_id, &dag).await?;
        }
        dag
    } else {
        version_dag(store, run.version_id).await?
    };
    let selected = select_tasks(&dag, &selection.task_ids, selection.downstream)?;
    let instances = store.task_instances(&run.run_id).await?;
    let items = with_extra_tries(
        &dag,
        instances
            .iter()
            .filter(|t| selected.contains(&t.task_id))
            .filter(|t| {
                !selection.failed_only
                    || matches!(t.state, TaskState::Failed | TaskState::UpstreamFailed)
            }),
    );
    Ok(store.clear_tasks(&run.run_id, &items).await?)
}

/// Moves `run` to `version_id` (whose DAG is `dag`): instances for its new tasks, `removed`
/// for the tasks it dropped.
async fn move_to_version(store: &Store, run: &RunRow, version_id: i64, dag: &Dag) -> Result<()> {
    let existing: BTreeSet<String> = store
        .task_instances(&run.run_id)
        .await?
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    let change = weir_store::VersionMove {
        add: dag
            .tasks
            .values()
            .filter(|t| !existing.contains(&t.id))
            .map(crate::runs::new_instance)
            .collect(),
        remove: existing
            .into_iter()
            .filter(|id| !dag.tasks.contains_key(id))
            .collect(),
    };
    store
        .move_run_to_version(&run.run_id, &run.dag_id, version_id, &change)
        .await?;
    Ok(())
}

/// Marks instances of a run (the tasks, and downstream of them when asked) success or
/// failed. How many changed.
///
/// # Errors
/// Unknown task, database failures.
pub async fn mark(
    store: &Store,
    run: &RunRow,
    task_ids: &[String],
    downstream: bool,
    state: TaskState,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let dag = version_dag(store, run.version_id).await?;
    let selected = select_tasks(&dag, task_ids, downstream)?;
    let ids: Vec<i64> = store
        .task_instances(&run.run_id)
        .await?
        .iter()
        .filter(|t| selected.contains(&t.task_id))
        .map(|t| t.id)
        .collect();
    Ok(store
        .mark_tasks(&run.run_id, &ids, state, reason, now)
        .await?)
}

/// The named tasks (every task when none is named), with their downstream when asked.
fn select_tasks(dag: &Dag, task_ids: &[String], downstream: bool) -> Result<BTreeSet<String>> {
    if task_ids.is_empty() {
        return Ok(dag.tasks.keys().cloned().collect());
    }
    let mut selected = BTreeSet::new();
    for task in task_ids {
        if !dag.tasks.contains_key(task) {
            return Err(OpsError::NotFound(format!(
                "DAG `{}` has no task `{task}`",
                dag.id()
            )));
        }
        selected.insert(task.clone());
        if downstream {
            selected.extend(dag.downstream(task));
        }
    }
    Ok(selected)
}

fn with_extra_tries<'a>(
    dag: &Dag,
    instances: impl Iterator<Item = &'a TaskInstanceRow>,
) -> Vec<(i64, i32)> {
    instances
        .map(|t| (t.id, extra_tries(dag, &t.task_id)))
        .collect()
}
