//! The YAML mirror of the step kinds other than `load` and `validate`: noop, shell, sql,
//! migrate, export, http, wait_for.

use super::*;

/// `kind: noop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct NoopStep {}

/// `kind: shell`: `bash -eo pipefail -c RUN` in a new process group.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShellStep {
    /// The script.
    pub run: String,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Text>,
    /// Working directory (relative to the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `kind: sql`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SqlStep {
    /// Connection name.
    pub conn: String,
    /// One statement or a list, run in one transaction.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub sql: Vec<String>,
    /// A `.sql` file instead of `sql` (relative to the DAG file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `first_row`: the first row's columns become outputs.
    #[serde(default)]
    pub fetch: Fetch,
    /// `false`: running the statements twice would do harm (an `INSERT` that appends): weir
    /// records the commit in the target's `weir_commits` in the same transaction, and a retry
    /// after a commit whose outcome was lost records it instead of running again.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub idempotent: bool,
}

pub(super) fn yes() -> bool {
    true
}

/// What a `sql` step returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fetch {
    /// Nothing.
    #[default]
    None,
    /// The first row of the last statement, as outputs.
    FirstRow,
}

/// `kind: migrate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MigrateStep {
    /// Target connection.
    pub conn: String,
    /// Folder of `NNNN_name.sql` files (relative to the DAG file, or absolute).
    pub dir: String,
}

/// `kind: export`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportStep {
    /// Connection.
    pub conn: String,
    /// Table to export (or `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Query to export (or `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Where the file goes: a path, or a location on a store (`s3://bucket/key`, `gs://…`,
    /// `az://…`, `sftp://…`); templated. Nothing appears there until the file is complete.
    pub to: String,
    /// File format (default: from `to`'s extension, else csv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ExportFormat>,
    /// CSV and JSON lines: `gzip`, `zstd` or `none` (default: from `to`, `.gz` or `.zst`);
    /// Parquet: the columns' codec, `snappy` (default), `zstd`, `gzip`, `lz4` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<super::Compression>,
    /// Parquet: rows per row group (default 100000; 1..=10000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_group_size: Option<u32>,
}

/// Formats `export` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// CSV with a header.
    #[default]
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet, typed from the query's columns.
    Parquet,
}

/// `kind: http`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HttpStep {
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// URL, templated.
    pub url: String,
    /// Request headers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// Raw body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Accepted status codes (default: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    /// Write the response body to this path, or location on a store (`s3://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_to: Option<String>,
    /// Response headers to keep as the `headers` output (`{link: ..., x-total-count: ...}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_headers: Vec<String>,
    /// A GET's pages, followed as a `load` follows them; the records of every page go to
    /// `save_to`, one JSON value a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Box<Paginate>>,
    /// With `paginate`: where each JSON page's records are (a dot path); absent, the page is
    /// the array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    #[default]
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

/// `kind: transfer`: files copied from one location to another (local, S3, GCS, Azure,
/// SFTP), each verified against its source, parallel, resumable.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TransferStep {
    /// What to copy: a file or a glob, local or on a store; templated.
    pub from: String,
    /// Where to: a folder (ending in `/`: each file keeps its path below the glob's folder),
    /// or, for one file, its new name; templated.
    pub to: String,
    /// Files copied at once (default 4; 1..=64). Each large file also goes up in parallel parts.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Delete each source file once its copy is verified (a move).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_source: bool,
}

pub(super) fn default_parallel() -> u32 {
    4
}

/// `kind: wait_for`: exactly one of `file`, `sql` or `http`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WaitForStep {
    /// A glob that must match at least one file: a path, or a location on a store
    /// (`s3://bucket/in/*.csv`, `gs://…`, `az://…`, `sftp://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Query whose first cell must be truthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Connection for `sql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// URL that must answer 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Time between checks (default 30s).
    #[serde(default = "default_interval")]
    pub interval: Duration,
}

pub(super) fn default_interval() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
