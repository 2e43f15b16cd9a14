//! The store's error type. sqlx errors are mapped here and nowhere else.

/// What went wrong, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("no {0}")]
    NotFound(String),
    /// The change conflicts with what is stored (a state that moved on); the message is
    /// weir's own and may be shown.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row with the same unique key exists already; the database's words, for the log.
    #[error("duplicate: {}", .0.message())]
    Duplicate(Box<dyn sqlx::error::DatabaseError>),
    /// A worker's transition found the task instance no longer running under its lease.
    #[error("lease lost on task instance {0}")]
    LeaseLost(i64),
    /// A stored value that weir cannot read (a state token, a JSON document).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL is not one weir can use.
    #[error("{0}")]
    Config(String),
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("migrating the metadata database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound("row".to_owned()),
            sqlx::Error::Database(db) if db.is_unique_violation() => match e {
                sqlx::Error::Database(db) => StoreError::Duplicate(db),
                other => StoreError::Database(other),
            },
            _ => StoreError::Database(e),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("JSON: {e}"))
    }
}
