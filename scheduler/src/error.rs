//! The scheduler's error type.

use weir_store::StoreError;

/// What went wrong, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dags folder could not be read.
    #[error("{0}")]
    Folder(String),
    /// A DAG, run or task that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out (bad params, no schedule, ...).
    #[error("{0}")]
    Invalid(String),
    /// A param a trigger or backfill may not pass: unknown to the DAG, of the wrong type, or
    /// too large; the message names it.
    #[error("{0}")]
    InvalidParam(String),
    /// A request that collides with what exists (a run at that date).
    #[error("{0}")]
    Conflict(String),
    /// A stored DAG version that no longer validates.
    #[error("DAG version {0} is invalid: {1}")]
    InvalidVersion(i64, String),
}

/// The same kinds of failure, from the shared operator actions and run planning.
impl From<weir_ops::OpsError> for SchedulerError {
    fn from(e: weir_ops::OpsError) -> Self {
        use weir_ops::OpsError;
        match e {
            OpsError::Store(e) => SchedulerError::Store(e),
            OpsError::NotFound(m) => SchedulerError::NotFound(m),
            OpsError::Invalid(m) => SchedulerError::Invalid(m),
            OpsError::InvalidParam(m) => SchedulerError::InvalidParam(m),
            OpsError::Conflict(m) => SchedulerError::Conflict(m),
            OpsError::InvalidVersion(id, m) => SchedulerError::InvalidVersion(id, m),
        }
    }
}

/// Result of scheduler operations.
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;
