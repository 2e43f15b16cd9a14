//! How a try ended. A task that fails is data, not an error: the outcome feeds the retry
//! decision; `Err` elsewhere means weir itself broke.

use std::time::Duration;

/// The end of one try.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Succeeded, with its outputs (a JSON object).
    Succeeded {
        /// `key=value` lines of `$WEIR_OUTPUT`, and step results.
        outputs: serde_json::Map<String, serde_json::Value>,
    },
    /// Failed.
    Failed {
        /// Why.
        error: String,
        /// Whether another try could help (a step kind that is not built never will).
        retryable: bool,
    },
    /// Ran to its end and found a problem it reports in its outputs (failed `validate`
    /// checks, a dbt model's error): recorded with the outputs.
    FailedWithOutputs {
        /// Why.
        error: String,
        /// What it found.
        outputs: serde_json::Map<String, serde_json::Value>,
        /// Whether another try could help: not for failed checks (the same data fails the same
        /// way; waiting for late data is a sensor's job), yes for a dbt model's error.
        retryable: bool,
    },
    /// A sensor's check found nothing yet: the instance goes back to the scheduler, to be
    /// checked again later (the try does not count).
    NotYet {
        /// What is missing.
        reason: String,
        /// When to check again.
        check_again_in: Duration,
    },
    /// Killed after running longer than the task's timeout.
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// Stopped by weir: the worker is shutting down or lost its lease.
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl TaskOutcome {
    /// A failure: `error`, and whether another try could help.
    pub fn failed(error: impl Into<String>, retryable: bool) -> TaskOutcome {
        TaskOutcome::Failed {
            error: error.into(),
            retryable,
        }
    }
}
