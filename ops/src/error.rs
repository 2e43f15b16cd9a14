//! The error of operator actions and shared views.

use weir_store::StoreError;

/// What went wrong, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A DAG, run or task that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out (no schedule, a bad date range, ...).
    #[error("{0}")]
    Invalid(String),
    /// A param a trigger or backfill may not pass: unknown to the DAG, of the wrong type, not
    /// allowed by its declaration, or too large; the message names it.
    #[error("{0}")]
    InvalidParam(String),
    /// A request that collides with what exists (a run at that date).
    #[error("{0}")]
    Conflict(String),
    /// A stored DAG version that no longer validates.
    #[error("DAG version {0} is invalid: {1}")]
    InvalidVersion(i64, String),
}

/// Result of operator actions.
pub type Result<T, E = OpsError> = std::result::Result<T, E>;
