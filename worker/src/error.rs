//! The worker's error type: weir itself broke (not a task failing: that is a `TaskOutcome`).

use weir_store::StoreError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored DAG version that no longer validates.
    #[error("DAG version {0} is invalid: {1}")]
    InvalidVersion(i64, String),
    /// Recording a try's outcome failed (the message of the store's error).
    #[error("recording the outcome: {0}")]
    Record(String),
    /// A task the pinned DAG version does not have.
    #[error("task `{0}` is not in DAG version {1}")]
    UnknownTask(String, i64),
}

/// A version that could not be read or parsed (the shared cache's error).
impl From<weir_ops::OpsError> for WorkerError {
    fn from(e: weir_ops::OpsError) -> Self {
        match e {
            weir_ops::OpsError::Store(e) => WorkerError::Store(e),
            weir_ops::OpsError::InvalidVersion(id, m) => WorkerError::InvalidVersion(id, m),
            other => WorkerError::Record(other.to_string()),
        }
    }
}

/// Result of worker operations.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
