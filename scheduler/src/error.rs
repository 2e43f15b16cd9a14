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
    /// An operator action or run planning refused (bad params, a conflict, a stored version
    /// that no longer validates); the message says which.
    #[error(transparent)]
    Ops(weir_ops::OpsError),
}

/// A store failure stays a store failure (the service loop tells those apart); the rest of
/// the shared actions' refusals keep their own type.
impl From<weir_ops::OpsError> for SchedulerError {
    fn from(e: weir_ops::OpsError) -> Self {
        match e {
            weir_ops::OpsError::Store(e) => SchedulerError::Store(e),
            other => SchedulerError::Ops(other),
        }
    }
}

/// Result of scheduler operations.
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;
