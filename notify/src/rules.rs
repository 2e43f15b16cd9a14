//! Which notifications a state change writes to the outbox: a try's end (`on_retry`,
//! `on_failure` of the task) and a run's end (`on_failure`, `on_success` of the DAG). The
//! writer passes them to the store call that changes the state, so they commit with it.

use chrono::{DateTime, Utc};
use weir_model::dag::Task;
use weir_model::{Dag, RunState, TaskState};
use weir_store::{Notice, NoticeEvent, Notification, RunRow, TaskInstanceRow};

/// The notifications a try's end calls for: `on_retry` when another try follows, `on_failure`
/// when the task failed for good, none otherwise.
#[must_use]
pub fn try_notifications(
    task: &Task,
    run: &RunRow,
    ti: &TaskInstanceRow,
    to: TaskState,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Vec<Notification> {
    let (event, names) = match to {
        TaskState::UpForRetry => (NoticeEvent::TaskRetry, &task.on_retry),
        TaskState::Failed => (NoticeEvent::TaskFailed, &task.on_failure),
        _ => return Vec::new(),
    };
    if names.is_empty() {
        return Vec::new();
    }
    Notice::for_try(run, ti, event, error.map(str::to_owned), at).to(names)
}

/// The notifications of a run's end: the DAG's `on_failure` with its failed tasks and their
/// errors, or its `on_success`.
#[must_use]
pub fn run_notifications(
    dag: &Dag,
    run: &RunRow,
    tis: &[TaskInstanceRow],
    outcome: RunState,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    /// Failed tasks named in a run's failure notice; the rest are counted.
    const LISTED: usize = 5;
    let (event, names) = match outcome {
        RunState::Failed => (NoticeEvent::RunFailed, &dag.spec.on_failure),
        RunState::Success => (NoticeEvent::RunSucceeded, &dag.spec.on_success),
        _ => return Vec::new(),
    };
    if names.is_empty() {
        return Vec::new();
    }
    let failed: Vec<&TaskInstanceRow> = tis
        .iter()
        .filter(|t| t.state == TaskState::Failed)
        .collect();
    let error = (outcome == RunState::Failed).then(|| {
        let mut lines: Vec<String> = failed
            .iter()
            .take(LISTED)
            .map(|t| {
                let name = if t.map_index >= 0 {
                    format!("{}[{}]", t.task_id, t.map_index)
                } else {
                    t.task_id.clone()
                };
                format!("{name}: {}", t.error.as_deref().unwrap_or("failed"))
            })
            .collect();
        if failed.len() > LISTED {
            lines.push(format!("and {} more failed task(s)", failed.len() - LISTED));
        }
        if lines.is_empty() {
            lines.push("no task failed itself (the run failed on upstream failures)".to_owned());
        }
        lines.join("\n")
    });
    Notice::for_run(run, event, error, now).to(names)
}
