//! The YAML mirror of `kind: load`: its source (files, HTTP with pages, another connection),
//! target, typed columns, modes, rejects and incremental cursor.

use super::*;

/// `kind: load`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoadStep {
    /// Where rows come from.
    pub source: LoadSource,
    /// Where rows go.
    pub target: LoadTarget,
    /// Typed columns, in order; absent = the source's columns as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<IndexMap<String, ColumnSpec>>,
    /// Named sets of `columns`, one of which `column_set` picks at run time (a mapped task
    /// loading files of different shapes).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub column_sets: IndexMap<String, IndexMap<String, ColumnSpec>>,
    /// Which of `column_sets` to use: a template, e.g. `"{{ item.shape }}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_set: Option<String>,
    /// How rows meet what the table holds.
    #[serde(default)]
    pub mode: LoadMode,
    /// Key columns for `upsert`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Rows per write (1..=100000).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// What happens to rows that fail parsing or constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<Rejects>,
    /// Read only rows newer than the last cursor value seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
}

pub(super) fn default_batch_size() -> u32 {
    10_000
}

/// A load's source: exactly one of `file`, `http` or `conn` (with `query` or `table`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSource {
    /// Where the files are: a path or glob (relative to the worker's directory), or a location
    /// on a store, `s3://bucket/key`, `gs://…`, `az://container/…`, `sftp://host/path`, with
    /// globs; templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// URL to download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// HTTP headers for `http`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Connection to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Query on `conn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Table on `conn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// File format (default: from the extension, else csv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SourceFormat>,
    /// `file`: how the files are compressed, `gzip`, `zstd` or `none` (default: from the
    /// name, `.gz` or `.zst` after the format's extension). Parquet files carry their own codec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// CSV: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// CSV field separator (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// CSV quote character (default `"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<char>,
    /// `json`: where the records are in each document, a dot path to an array inside an object
    /// (`items`, `data.results`); absent: the document is the array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// `file`: move the matching files into a folder of this try's own before reading them, so
    /// that each arrived file is loaded by one run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// `http`: how to follow an API's pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Box<Paginate>>,
    /// CSV: accept rows with fewer or more fields than the header (or `columns`): missing
    /// fields are empty (NULL), extra ones are ignored. Off by default: such a row is a reject.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_ragged: bool,
}

/// Claiming a file source's files: moved (renamed, atomically) into
/// `move_to/<run id>/<task id>[.<map index>]/` before they are read; a retry reads the files
/// already claimed there. After the load commits they move on to the same place under
/// `archive_to`, when given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The folder claimed files are moved into (on the files' file system).
    pub move_to: String,
    /// The folder loaded files are moved to after the commit; absent: they stay claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_to: Option<String>,
}

/// How an HTTP source's pages are followed: exactly one of `next` (a `Link: rel="next"` header
/// or a value in each page's JSON), `page_param` (page numbers) or `offset_param` (offsets).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// `link_header`: the URL of `Link: <...>; rel="next"`; or a dot path in the page's JSON
    /// (`next`, `links.next`, `meta.next_cursor`) to the next page's URL, or to a cursor when
    /// `cursor_param` is set. No value (absent, null, empty): the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// With `next` holding a cursor: the query parameter the cursor is sent in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_param: Option<String>,
    /// The query parameter of the page number; pages are read until one has no records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,
    /// The query parameter of the offset (records to skip); it grows by each page's records
    /// until a page has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_param: Option<String>,
    /// The first page number or offset (default 1 for pages, 0 for offsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// At most this many pages (default 1000); an API that still has a next page after them
    /// fails the task rather than load part of the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u32>,
}

/// Formats a load can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Comma-separated values.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// A JSON array of objects.
    Json,
    /// Apache Parquet: typed columns, read a row group at a time.
    Parquet,
}

/// How a file's bytes are compressed (`load`'s and `export`'s `compression`). `gzip` and `zstd`
/// compress a CSV, JSON or JSON-lines file whole; in a Parquet file each column is compressed
/// with the codec (`snappy`, the default there, `zstd`, `gzip`, `lz4` or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
    /// Snappy: Parquet only.
    Snappy,
    /// LZ4: Parquet only.
    Lz4,
}

/// A load's target table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadTarget {
    /// Connection name.
    pub conn: String,
    /// `table` or `schema.table`.
    pub table: String,
    /// Create the table from `columns` when missing (default) or never.
    #[serde(default)]
    pub create: CreateMode,
}

/// Whether a load creates its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateMode {
    /// Create it from `columns` when it does not exist.
    #[default]
    IfMissing,
    /// Fail when it does not exist.
    Never,
}

/// One typed column of a load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Reject rows where the value is empty.
    #[serde(default)]
    pub not_null: bool,
    /// Source field name, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// chrono format for dates and timestamps (e.g. `%d/%m/%Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Column types of `load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Bigint,
    /// Double precision.
    Float,
    /// Exact decimal.
    Numeric,
    /// Text.
    Text,
    /// Boolean.
    Bool,
    /// Calendar date.
    Date,
    /// Date and time without zone.
    Timestamp,
    /// Date and time with zone.
    Timestamptz,
    /// JSON document.
    Json,
}

/// How a load writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Add rows.
    #[default]
    Append,
    /// Replace the table atomically.
    Replace,
    /// Insert or update by `key`.
    Upsert,
    /// Empty the table, then insert, in one transaction.
    TruncateInsert,
}

/// Reject handling of a load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejects {
    /// Keep bad rows in `<table>__rejects` (default) or fail the task.
    #[serde(default)]
    pub on_error: OnError,
    /// Most rejects tolerated: a count, or a percentage like `"1%"` (default 0 with `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<RejectLimit>,
}

/// What a bad row does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Goes to the rejects table.
    #[default]
    Reject,
    /// Fails the task.
    Fail,
}

/// A limit on rejected rows (or on a difference of counts): a count, or a share of the rows
/// read written `"5%"`. The text is read once, here, into a number from 0 to 100; a value
/// that is neither is an error at its line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RejectLimit {
    /// At most this many rows.
    Count(u64),
    /// At most this percentage of the rows read (`"5%"` is `Percent(5.0)`).
    Percent(f64),
}

impl Serialize for RejectLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RejectLimit::Count(n) => s.serialize_u64(*n),
            RejectLimit::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for RejectLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RejectLimit, D::Error> {
        struct Limit;
        impl serde::de::Visitor<'_> for Limit {
            type Value = RejectLimit;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count of rows or a percentage like \"5%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RejectLimit, E> {
                Ok(RejectLimit::Count(n))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RejectLimit, E> {
                u64::try_from(n).map(RejectLimit::Count).map_err(|_| {
                    E::custom(format!(
                        "`{n}` must be a count of rows (0 or more) or a percentage like \"5%\""
                    ))
                })
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RejectLimit, E> {
                text.strip_suffix('%')
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .filter(|p| (0.0..=100.0).contains(p))
                    .map(RejectLimit::Percent)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "`{text}` must be a count of rows or a percentage from \"0%\" to \"100%\", like \"5%\""
                        ))
                    })
            }
        }
        d.deserialize_any(Limit)
    }
}

// The schema of `RejectLimit`: what a DAG file writes.
/// A limit on rejected rows: a count or a percentage of rows read.
#[derive(JsonSchema)]
#[schemars(rename = "RejectLimit")]
#[serde(untagged)]
#[allow(dead_code)]
enum RejectLimitSchema {
    /// At most this many rows.
    Count(u64),
    /// At most this share of rows read, written `"5%"`.
    Percent(String),
}

impl JsonSchema for RejectLimit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        RejectLimitSchema::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RejectLimitSchema::json_schema(generator)
    }
}

/// Incremental loading state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// Column whose largest value is kept between runs.
    pub cursor: String,
}
