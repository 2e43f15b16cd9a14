//! The YAML mirror of `kind: validate`: its checks, each a one-key mapping.

use super::*;

/// `kind: validate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ValidateStep {
    /// Connection for checks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// The checks, each a one-key mapping.
    pub checks: Vec<Check>,
}

/// A data-quality check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Row count within bounds.
    RowCount(RowCountCheck),
    /// Two row counts agree (within `tolerance`).
    CompareCount(CompareCountCheck),
    /// Columns hold no NULL.
    NotNull(ColumnsCheck),
    /// Column combination is unique.
    Unique(ColumnsCheck),
    /// Column holds only listed values.
    AcceptedValues(AcceptedValuesCheck),
    /// Column within bounds.
    Range(RangeCheck),
    /// Newest value of a timestamp column is recent enough.
    Freshness(FreshnessCheck),
    /// Fails when the query returns rows.
    Sql(SqlCheck),
    /// Row-level hashes agree between two tables.
    CompareChecksum(CompareChecksumCheck),
}

impl Check {
    /// The check's name as written.
    pub fn name(&self) -> &'static str {
        match self {
            Check::RowCount(_) => "row_count",
            Check::CompareCount(_) => "compare_count",
            Check::NotNull(_) => "not_null",
            Check::Unique(_) => "unique",
            Check::AcceptedValues(_) => "accepted_values",
            Check::Range(_) => "range",
            Check::Freshness(_) => "freshness",
            Check::Sql(_) => "sql",
            Check::CompareChecksum(_) => "compare_checksum",
        }
    }
}

/// Whether a failing check fails the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckSeverity {
    /// Fails the task.
    #[default]
    Error,
    /// Reported only.
    Warn,
}

/// `row_count`: of a table, or of the files a location names.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowCountCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table (or `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Files (or `table`): a path or glob, local or on a store (`s3://lake/hr/*.parquet`);
    /// their data rows are counted, read as a load reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The files' format (default: from the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<super::SourceFormat>,
    /// Fewest rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Most rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// One side of a comparison: a table or query on a connection, or a set of files.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSide {
    /// Connection (with `table` or `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table (or `query`, or `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Query (or `table`, or `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Files (or `table`, or `query`): a path or glob, local or on a store, read as a load
    /// reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The files' format (default: from the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<super::SourceFormat>,
}

/// `compare_count`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareCountCheck {
    /// Reference side.
    pub source: CheckSide,
    /// Side checked.
    pub target: CheckSide,
    /// Allowed difference: a count or `"0.5%"` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<RejectLimit>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `not_null` and `unique`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnsCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Columns.
    pub columns: Vec<String>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `accepted_values`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Allowed values.
    pub values: Vec<serde_json::Value>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `range`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Smallest allowed value (number or date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    /// Largest allowed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `freshness`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshnessCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Timestamp column.
    pub column: String,
    /// Oldest acceptable newest value.
    pub max_age: Duration,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `sql`: fails when the query returns rows.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Query returning the failing rows.
    pub query: String,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `compare_checksum`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareChecksumCheck {
    /// Reference side.
    pub source: CheckSide,
    /// Side checked.
    pub target: CheckSide,
    /// Key columns matching rows across sides.
    pub key: Vec<String>,
    /// Columns hashed (default: all of the source's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}
