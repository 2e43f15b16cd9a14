//! What each waiting task instance of a run should do now, from its upstream states: Airflow's
//! trigger-rule semantics, as a pure function over the run's rows.

use std::collections::HashMap;

use weir_model::{Dag, RunState, TaskState, TriggerRule};
use weir_store::TaskInstanceRow;

/// The outcome of a trigger rule for a waiting task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Upstream is not settled enough to decide.
    Wait,
    /// May run now.
    Run,
    /// Will not run: skipped.
    Skip,
    /// Will not run: something upstream failed.
    UpstreamFailed,
}

/// Counts of upstream task instances by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Instances upstream.
    pub total: usize,
    /// Succeeded.
    pub success: usize,
    /// Skipped.
    pub skipped: usize,
    /// Failed.
    pub failed: usize,
    /// Upstream-failed.
    pub upstream_failed: usize,
    /// Finished in any way (the four above, and removed).
    pub done: usize,
}

impl Upstream {
    /// Counts `states`.
    pub fn count<'a>(states: impl IntoIterator<Item = &'a TaskState>) -> Upstream {
        let mut u = Upstream::default();
        for s in states {
            u.total += 1;
            match s {
                TaskState::Success => u.success += 1,
                TaskState::Skipped => u.skipped += 1,
                TaskState::Failed => u.failed += 1,
                TaskState::UpstreamFailed => u.upstream_failed += 1,
                _ => {}
            }
            if s.is_finished() {
                u.done += 1;
            }
        }
        u
    }
}

/// Airflow's trigger rules (`airflow/ti_deps/deps/trigger_rule_dep.py`): whether a task with
/// these upstream outcomes runs, waits, is skipped, or is upstream-failed.
pub fn verdict(rule: TriggerRule, u: Upstream) -> Verdict {
    if u.total == 0 {
        return Verdict::Run;
    }
    let all_done = u.done == u.total;
    let failures = u.failed + u.upstream_failed;
    match rule {
        TriggerRule::AllSuccess => {
            if failures > 0 {
                Verdict::UpstreamFailed
            } else if u.skipped > 0 {
                Verdict::Skip
            } else if u.success == u.total {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::AllFailed => {
            if u.success > 0 || u.skipped > 0 {
                Verdict::Skip
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::AllDone => {
            if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::AllSkipped => {
            if u.success > 0 || failures > 0 {
                Verdict::Skip
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::OneSuccess => {
            if u.success > 0 {
                Verdict::Run
            } else if all_done {
                if u.skipped == u.total {
                    Verdict::Skip
                } else {
                    Verdict::UpstreamFailed
                }
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::OneFailed => {
            if failures > 0 {
                Verdict::Run
            } else if all_done {
                Verdict::Skip
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::OneDone => {
            if u.success + u.failed > 0 {
                Verdict::Run
            } else if all_done {
                Verdict::Skip
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::NoneFailed => {
            if failures > 0 {
                Verdict::UpstreamFailed
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::NoneFailedMinOneSuccess => {
            if failures > 0 {
                Verdict::UpstreamFailed
            } else if all_done {
                if u.success > 0 {
                    Verdict::Run
                } else {
                    Verdict::Skip
                }
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::NoneSkipped => {
            if u.skipped > 0 {
                Verdict::Skip
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::Always => Verdict::Run,
    }
}

/// What to do with a run's instances now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Instances that may run (subject to `when`, pools and limits), best priority first.
    pub ready: Vec<i64>,
    /// `foreach` placeholders whose upstream is settled: expand them.
    pub expand: Vec<i64>,
    /// Instances to mark skipped.
    pub skip: Vec<i64>,
    /// Instances to mark upstream_failed.
    pub upstream_failed: Vec<i64>,
    /// Set when every instance is finished: the run's final state (Airflow's leaf rule).
    pub finished: Option<RunState>,
}

/// Evaluates one run: for each `scheduled` instance, its trigger rule over the instances of
/// its upstream tasks; and, when nothing is left to do, the run's outcome.
pub fn plan_run(dag: &Dag, tis: &[TaskInstanceRow]) -> Plan {
    let mut by_task: HashMap<&str, Vec<&TaskInstanceRow>> = HashMap::new();
    for ti in tis {
        by_task.entry(ti.task_id.as_str()).or_default().push(ti);
    }
    let mut plan = Plan::default();
    for ti in tis.iter().filter(|t| t.state == TaskState::Scheduled) {
        let Some(task) = dag.tasks.get(&ti.task_id) else {
            // A task the pinned version does not have cannot run.
            plan.skip.push(ti.id);
            continue;
        };
        let upstream_states = task
            .depends_on
            .iter()
            .flat_map(|d| by_task.get(d.as_str()).into_iter().flatten())
            .map(|t| &t.state);
        match verdict(task.trigger_rule, Upstream::count(upstream_states)) {
            Verdict::Wait => {}
            Verdict::Run if task.foreach.is_some() && ti.map_index < 0 => plan.expand.push(ti.id),
            Verdict::Run => plan.ready.push(ti.id),
            Verdict::Skip => plan.skip.push(ti.id),
            Verdict::UpstreamFailed => plan.upstream_failed.push(ti.id),
        }
    }
    let priority: HashMap<i64, i32> = tis.iter().map(|t| (t.id, t.priority)).collect();
    plan.ready.sort_by_key(|id| {
        (
            std::cmp::Reverse(priority.get(id).copied().unwrap_or(0)),
            *id,
        )
    });
    if plan == Plan::default() && !tis.is_empty() && tis.iter().all(|t| t.state.is_finished()) {
        plan.finished = Some(run_outcome(dag, tis));
    }
    plan
}

/// Airflow's rule: a finished run failed when any leaf task (one nothing depends on) failed or
/// could not run; otherwise it succeeded, even if a task upstream of a leaf failed.
pub fn run_outcome(dag: &Dag, tis: &[TaskInstanceRow]) -> RunState {
    let leaves: Vec<&str> = dag
        .tasks
        .keys()
        .filter(|id| {
            dag.node(id)
                .is_some_and(|n| dag.graph.neighbors(n).next().is_none())
        })
        .map(String::as_str)
        .collect();
    let leaf_failed = tis
        .iter()
        .filter(|t| leaves.contains(&t.task_id.as_str()))
        .any(|t| matches!(t.state, TaskState::Failed | TaskState::UpstreamFailed));
    if leaf_failed {
        RunState::Failed
    } else {
        RunState::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(
        success: usize,
        skipped: usize,
        failed: usize,
        upstream_failed: usize,
        running: usize,
    ) -> Upstream {
        let mut states = Vec::new();
        states.extend(std::iter::repeat_n(TaskState::Success, success));
        states.extend(std::iter::repeat_n(TaskState::Skipped, skipped));
        states.extend(std::iter::repeat_n(TaskState::Failed, failed));
        states.extend(std::iter::repeat_n(
            TaskState::UpstreamFailed,
            upstream_failed,
        ));
        states.extend(std::iter::repeat_n(TaskState::Running, running));
        Upstream::count(&states)
    }

    /// Expected verdicts for each rule over six upstream situations (two upstream tasks),
    /// written from Airflow's documentation of trigger rules.
    #[test]
    fn every_rule_follows_airflows_semantics() {
        use TriggerRule::*;
        use Verdict::*;
        // Situations:            both ok     one running  one failed  both failed  one skipped  both skipped
        let situations = [
            up(2, 0, 0, 0, 0),
            up(1, 0, 0, 0, 1),
            up(1, 0, 1, 0, 0),
            up(0, 0, 1, 1, 0),
            up(1, 1, 0, 0, 0),
            up(0, 2, 0, 0, 0),
        ];
        let table: [(TriggerRule, [Verdict; 6]); 11] = [
            (
                AllSuccess,
                [Run, Wait, UpstreamFailed, UpstreamFailed, Skip, Skip],
            ),
            (AllFailed, [Skip, Skip, Skip, Run, Skip, Skip]),
            (AllDone, [Run, Wait, Run, Run, Run, Run]),
            (AllSkipped, [Skip, Skip, Skip, Skip, Skip, Run]),
            (OneSuccess, [Run, Run, Run, UpstreamFailed, Run, Skip]),
            (OneFailed, [Skip, Wait, Run, Run, Skip, Skip]),
            (OneDone, [Run, Run, Run, Run, Run, Skip]),
            (
                NoneFailed,
                [Run, Wait, UpstreamFailed, UpstreamFailed, Run, Run],
            ),
            (
                NoneFailedMinOneSuccess,
                [Run, Wait, UpstreamFailed, UpstreamFailed, Run, Skip],
            ),
            (NoneSkipped, [Run, Wait, Run, Run, Skip, Skip]),
            (Always, [Run, Run, Run, Run, Run, Run]),
        ];
        for (rule, expected) in table {
            for (situation, want) in situations.iter().zip(expected) {
                assert_eq!(
                    verdict(rule, *situation),
                    want,
                    "{} with {situation:?}",
                    rule.as_str()
                );
            }
        }
    }

    #[test]
    fn a_task_without_upstream_runs() {
        assert_eq!(
            verdict(TriggerRule::AllSuccess, Upstream::default()),
            Verdict::Run
        );
        assert_eq!(
            verdict(TriggerRule::AllFailed, Upstream::default()),
            Verdict::Run
        );
    }
}
