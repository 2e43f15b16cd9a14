//! The model's error types at its boundary with the other crates. Each holds the sentence a
//! user reads (it names the template, the value or the name at fault); its type says which
//! kind of problem it is, so that a caller can tell them apart without reading the text.
//! Validation of DAG files does not use them: its problems are `Diagnostic`s with places.

/// A template that does not render: a syntax error, an undefined name, a value that may not
/// stand where it is put (a path with `..`, SQL whose value would change the statement).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// SQL text weir refuses to build: a name that cannot be quoted, a value that cannot be
/// written as a literal, values that would not stay data where they were placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SqlError(pub String);

/// The sentence of a problem found where only text is passed on.
impl From<String> for RenderError {
    fn from(message: String) -> RenderError {
        RenderError(message)
    }
}

impl From<SqlError> for RenderError {
    fn from(e: SqlError) -> RenderError {
        RenderError(e.0)
    }
}

impl From<String> for SqlError {
    fn from(message: String) -> SqlError {
        SqlError(message)
    }
}

/// The sentence alone, for callers that report text (a task's error, a diagnostic).
impl From<RenderError> for String {
    fn from(e: RenderError) -> String {
        e.0
    }
}

impl From<SqlError> for String {
    fn from(e: SqlError) -> String {
        e.0
    }
}
