//! The error type of fallible model operations that are not file validation.

/// What went wrong, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A DAG (stored or given) is not valid; each line is one problem.
    #[error("invalid DAG: {}", .0.join("; "))]
    InvalidDag(Vec<String>),
    /// A request that cannot be planned (e.g. a date range with no schedule).
    #[error("{0}")]
    Plan(String),
}
