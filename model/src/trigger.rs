//! Trigger rules: when a task may run given the states of its upstream tasks (Airflow's names).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Airflow's trigger rules, with its meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default).
    #[default]
    AllSuccess,
    /// Every upstream task failed or is upstream_failed.
    AllFailed,
    /// Every upstream task finished, whatever its state.
    AllDone,
    /// Every upstream task was skipped.
    AllSkipped,
    /// At least one upstream task succeeded (runs as soon as one does).
    OneSuccess,
    /// At least one upstream task failed (runs as soon as one does).
    OneFailed,
    /// At least one upstream task succeeded or failed.
    OneDone,
    /// No upstream task failed or is upstream_failed (skips are fine).
    NoneFailed,
    /// No upstream task failed, and at least one succeeded.
    NoneFailedMinOneSuccess,
    /// No upstream task was skipped.
    NoneSkipped,
    /// Runs whatever happened upstream.
    Always,
}

impl TriggerRule {
    /// Every rule, in the order of the SPEC.
    pub const ALL: [TriggerRule; 11] = [
        TriggerRule::AllSuccess,
        TriggerRule::AllFailed,
        TriggerRule::AllDone,
        TriggerRule::AllSkipped,
        TriggerRule::OneSuccess,
        TriggerRule::OneFailed,
        TriggerRule::OneDone,
        TriggerRule::NoneFailed,
        TriggerRule::NoneFailedMinOneSuccess,
        TriggerRule::NoneSkipped,
        TriggerRule::Always,
    ];

    /// The rule's name as written in DAG files.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllFailed => "all_failed",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AllSkipped => "all_skipped",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::OneDone => "one_done",
            TriggerRule::NoneFailed => "none_failed",
            TriggerRule::NoneFailedMinOneSuccess => "none_failed_min_one_success",
            TriggerRule::NoneSkipped => "none_skipped",
            TriggerRule::Always => "always",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TriggerRule;

    #[test]
    fn as_str_matches_the_serde_name() {
        for rule in TriggerRule::ALL {
            assert_eq!(
                serde_json::to_value(rule).ok(),
                Some(serde_json::Value::String(rule.as_str().to_owned()))
            );
        }
    }
}
