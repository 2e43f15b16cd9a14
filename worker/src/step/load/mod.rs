//! `kind: load`: rows from CSV, JSON-lines or JSON-array files (a glob, in name order; claimed
//! first with `claim`), from HTTP downloads (an API's pages with `paginate`), or from a table
//! or query on another connection, into a table, typed by `columns`; modes `append`,
//! `truncate_insert`, `replace` and `upsert`; `incremental` cursors.
//!
//! - **Every row is loaded or rejected with a reason**: rows_read = rows_loaded +
//!   rows_rejected. A row that does not parse (a bad number, an empty `not_null` field, a NUL
//!   byte, a wrong field count) or that the database refuses (any constraint, in every mode)
//!   is rejected; with `rejects: {on_error: reject}` it goes to `<table>__rejects` (run id,
//!   task, file, line, raw row, reason) and the load goes on up to `max`; without `rejects`, or
//!   with `on_error: fail`, the first bad row fails the task, naming its file and line.
//! - **A failed try leaves the target as it was**: everything happens in one transaction (what
//!   the database refuses is written again by halves inside savepoints, to find the bad rows);
//!   `replace` fills a staging table and swaps it in at the end (MySQL: an atomic `RENAME
//!   TABLE`, after the transaction). **A committed try is never loaded again**: its commit
//!   carries a marker in the target's ledger ([`super::ledger`]).
//! - **Memory does not grow with the input**: files are read as streams (HTTP pages are first
//!   streamed to temporary files), database sources by a reader task of their own,
//!   `batch_size` rows at a time. Postgres takes rows through `COPY` groups bounded in size,
//!   the others through multi-row `INSERT`s (`WriteRows`).
//!
//! # Layout
//! - this module: the step's entry ([`run`]), the load from start to outputs, its errors;
//! - `source`: where rows come from (files and their format, HTTP, another connection);
//!   `claim`, `pages`: claiming files, following an API's pages;
//! - `read`: rows read out of a source (`csv_rows`, `json_array`: the two streaming readers);
//! - `columns`: the columns and their types; `value`: a field typed, compared, shown;
//! - `plan`: the table side (DDL, staging, the transaction, `upsert`, the swap);
//!   `batch`: the rows side (batches, halving, rejects, the cursor);
//! - `write`: how each database takes a batch; `copy`: Postgres' `COPY` encoding.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use weir_model::spec::{
    ColumnSpec, ColumnType, CreateMode, LoadMode, LoadSource, LoadStep, OnError, RejectLimit,
    SourceFormat,
};
use weir_storage::{Compression, Location, Stores};

mod batch;
mod claim;
mod claim_objects;
mod columns;
mod copy;
mod csv_rows;
pub(crate) mod file_rows;
mod json_array;
pub(crate) mod pages;
mod parquet;
mod plan;
mod read;
mod source;
mod value;
mod write;

use batch::*;
use columns::*;
use copy::*;
use plan::*;
use read::*;
use source::*;
pub(crate) use value::Value;
use value::*;
use write::*;

use csv_rows::{CsvInput, CsvRows};
use json_array::JsonArray;
use parquet::ParquetRows;

use super::db::SqlDb;
use super::sqltext::Dialect;
use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Who is loading: recorded with each rejected row.
#[derive(Debug, Clone)]
pub struct LoadContext {
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// `incremental`: the largest cursor value loaded by earlier runs (rows up to it are
    /// skipped).
    pub cursor: Option<String>,
    /// The try, for the commit ledger (exactly-once loads); none in `weir tasks test`.
    pub attempt: Option<super::ledger::Attempt>,
    /// Reject rows older than this are deleted by the load (`None`: kept forever).
    pub keep_rejects: Option<std::time::Duration>,
    /// weir's database, where objects on stores are claimed (none in `weir tasks test`).
    pub claims: Option<weir_store::Store>,
}

/// A rejected row.
#[derive(Debug, Clone)]
struct Reject {
    file: Arc<str>,
    line: u64,
    raw: Raw,
    reason: String,
}

/// One parsed input row: where it came from, and its values or why it cannot load.
struct InputRow {
    file: Arc<str>,
    line: u64,
    raw: Raw,
    parsed: Result<Vec<Value>, String>,
}

/// Rows done with, sent back to the reader thread to be freed there.
type Spent = Box<dyn std::any::Any + Send>;

/// A row as it was read, kept cheaply and turned into text only when the row is rejected
/// (most rows never are; a string per row was a large share of a CSV load's time).
#[derive(Debug, Clone)]
enum Raw {
    /// A JSON array's element, as JSON.
    Text(String),
    /// A JSON-lines line's bytes.
    Bytes(Vec<u8>),
    /// A CSV row: bytes `start..end` of the file (or of a stream's spool), read back when the
    /// row is rejected.
    Range {
        file: Arc<std::fs::File>,
        start: u64,
        end: u64,
    },
    /// A database source's row, written as a JSON array.
    Fields(Vec<Option<String>>),
    /// A database source's row in a `COPY` group: its fields are read back from its line
    /// ([`CopyGroup::origin`]).
    InCopyGroup,
    /// A database source's row that typed: its fields are its typed values ([`Plan::origin_of`]).
    Typed,
}

impl Raw {
    /// The row as the rejects table keeps it: its bytes as text ([`csv_rows::raw_text`]).
    fn text(&self) -> String {
        match self {
            Raw::Text(t) => t.clone(),
            Raw::Bytes(b) => csv_rows::raw_text(b),
            Raw::Range { file, start, end } => {
                csv_rows::raw_text(&csv_rows::read_range(file, *start, *end))
            }
            Raw::Fields(values) => serde_json::to_string(values).unwrap_or_default(),
            Raw::InCopyGroup | Raw::Typed => String::new(),
        }
    }
}

/// Runs a rendered `load` step.
pub async fn run(
    step: &LoadStep,
    ctx: &LoadContext,
    conns: &Connections,
    log: &LogSink,
) -> TaskOutcome {
    match load(step, ctx, conns, log).await {
        Ok(outputs) => TaskOutcome::Succeeded { outputs },
        Err(LoadError { message, retryable }) => {
            log.note(format!("load failed, target unchanged: {message}"));
            TaskOutcome::Failed {
                error: message,
                retryable,
            }
        }
    }
}

pub(crate) struct LoadError {
    pub(crate) message: String,
    pub(crate) retryable: bool,
}

impl LoadError {
    fn fatal(message: impl Into<String>) -> LoadError {
        LoadError {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<crate::conn::ConnError> for LoadError {
    fn from(e: crate::conn::ConnError) -> LoadError {
        LoadError {
            retryable: e.retryable(),
            message: e.to_string(),
        }
    }
}

impl From<weir_storage::StorageError> for LoadError {
    fn from(e: weir_storage::StorageError) -> LoadError {
        LoadError {
            message: e.message,
            retryable: e.retryable,
        }
    }
}

impl From<sqlx::Error> for LoadError {
    fn from(e: sqlx::Error) -> LoadError {
        let retryable = crate::conn::is_transient(&e);
        LoadError {
            message: crate::conn::db_error(&e),
            retryable,
        }
    }
}

async fn load(
    step: &LoadStep,
    ctx: &LoadContext,
    conns: &Connections,
    log: &LogSink,
) -> Result<serde_json::Map<String, serde_json::Value>, LoadError> {
    let started = Instant::now();
    let step = &with_column_set(step)?;
    let claim = step.source.claim.as_ref();
    let pool = conns.pool(&step.target.conn).await?;
    let dialect = pool.dialect();
    if let Some(attempt) = &ctx.attempt
        && let Some((earlier, mut outputs)) = super::ledger::committed_before(&pool, attempt)
            .await
            .map_err(|e| LoadError {
                message: e.message,
                retryable: e.retryable,
            })?
    {
        log.note(format!(
            "try {earlier} committed this load ({} row(s)) but its outcome was never recorded: recording it instead of loading again",
            outputs.get("rows_loaded").cloned().unwrap_or_default()
        ));
        // Its files may not have been archived yet.
        if let Some(c) = claim {
            let files = match step.source.file.as_deref() {
                Some(p) if weir_storage::is_store_url(p) => {
                    claim_objects::archive(c, ctx, conns.stores()).await?.into()
                }
                _ => paths(&claim::archive(c, ctx)?),
            };
            outputs.insert("files".into(), files);
        }
        return Ok(outputs);
    }
    // Holds an HTTP source's download until the load is over.
    let mut _download = None;
    // A file source's files, for the `files` output.
    let mut read_files = None;
    let stores = conns.stores();
    let (input, columns) = if let Some(pattern) = &step.source.file {
        let format = step
            .source
            .format
            .or_else(|| format_of_name(pattern))
            .unwrap_or(SourceFormat::Csv);
        let files = match claim {
            Some(c) if weir_storage::is_store_url(pattern) => {
                claim_objects::claim(pattern, c, ctx, stores, &step.source).await?
            }
            Some(c) => claim::claim(pattern, c, ctx)?
                .into_iter()
                .map(|p| local_file(&p, &step.source))
                .collect(),
            None => matching_files(&step.source, pattern, stores).await?,
        };
        read_files = Some(
            files
                .iter()
                .map(|f| f.label.to_string())
                .collect::<Vec<_>>(),
        );
        let columns = file_columns(step, &files, format, stores).await?;
        log.note(format!(
            "loading {} file(s) matching `{pattern}` into `{}` ({:?}, {} column(s))",
            files.len(),
            step.target.table,
            step.mode,
            columns.names.len()
        ));
        (
            Input::Files {
                files,
                format,
                stores: stores.clone(),
            },
            columns,
        )
    } else if let Some(url) = &step.source.http {
        let pages = pages::download(&step.source, url, log).await?;
        let format = pages.first().map_or(SourceFormat::Csv, |p| p.format);
        let files: Vec<SourceFile> = pages
            .iter()
            .map(|p| {
                let mut file = local_file(p.file.path(), &step.source);
                file.label = p.label.as_str().into();
                if step.source.compression.is_none() {
                    file.compression = Compression::of_name(url).0;
                }
                file
            })
            .collect();
        let columns = file_columns(step, &files, format, stores).await?;
        _download = Some(pages);
        log.note(format!(
            "loading the download into `{}` ({:?}, {} column(s))",
            step.target.table,
            step.mode,
            columns.names.len()
        ));
        (
            Input::Files {
                files,
                format,
                stores: stores.clone(),
            },
            columns,
        )
    } else if let Some(conn) = &step.source.conn {
        let source = conns.pool(conn).await?;
        let (sql, label) = match (&step.source.table, &step.source.query) {
            (Some(t), None) => (
                format!(
                    "SELECT * FROM {}",
                    source.dialect().ident(t).map_err(LoadError::fatal)?
                ),
                format!("{conn}:{t}"),
            ),
            (None, Some(q)) => (q.clone(), format!("{conn}:query")),
            _ => {
                return Err(LoadError::fatal(
                    "a database source needs `table` or `query`",
                ));
            }
        };
        // Only rows past the stored cursor are read.
        let sql = match (&step.incremental, &ctx.cursor) {
            (Some(inc), Some(after)) => {
                let d = source.dialect();
                format!(
                    "SELECT * FROM ({sql}) q WHERE {} > {}",
                    d.ident(&inc.cursor).map_err(LoadError::fatal)?,
                    d.literal(&serde_json::Value::String(after.clone()))
                        .map_err(LoadError::fatal)?
                )
            }
            _ => sql,
        };
        let source_pool = source.clone();
        let (names, typing, rows) = stream_source(source, sql, label.clone().into()).await;
        let columns = match &step.columns {
            Some(_) => given_columns(step).ok_or_else(|| LoadError::fatal("no columns"))?,
            None => {
                // The target's types when it exists; else the source table's (a copy keeps
                // its types); else text.
                let mut types = table_types(&pool, &step.target.table).await?;
                if types.is_empty()
                    && let Some(t) = &step.source.table
                {
                    types = table_types(&source_pool, t).await?;
                }
                typed_columns(&names, &types)?
            }
        };
        // No rows (so no column names): nothing to map.
        let at = columns
            .names
            .iter()
            .zip(&columns.specs)
            .filter(|_| !names.is_empty())
            .map(|(n, spec)| {
                let wanted = spec.from.as_deref().unwrap_or(n);
                names.iter().position(|s| s == wanted).ok_or_else(|| {
                    LoadError::fatal(format!("{label}: the source has no column `{wanted}`"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        log.note(format!(
            "loading `{label}` into `{}` ({:?}, {} column(s))",
            step.target.table,
            step.mode,
            columns.names.len()
        ));
        let (spent, to_free) = std::sync::mpsc::channel::<Spent>();
        // The reader types the rows itself from here on (a closed channel: it already ended).
        let _ = typing.send(Typing {
            columns: columns.clone(),
            at,
            batch: usize::try_from(step.batch_size)
                .unwrap_or(10_000)
                .clamp(1, 100_000),
            to_free,
        });
        (Input::Database { rows, spent }, columns)
    } else {
        return Err(LoadError::fatal(
            "the source needs `file`, `http` or `conn` (with `table` or `query`)",
        ));
    };
    let plan = Plan::new(step, dialect, columns, ctx.cursor.as_deref(), started)?;
    let counts = match &pool {
        DataPool::Postgres(p) => plan.execute(p, input, step, ctx, log).await?,
        DataPool::MySql(p) => plan.execute(p, input, step, ctx, log).await?,
        DataPool::Sqlite(p) => plan.execute(p, input, step, ctx, log).await?,
    };
    let mut out = outputs(step, ctx, &counts, started);
    if let Some(files) = read_files {
        let files = match claim {
            Some(c)
                if step
                    .source
                    .file
                    .as_deref()
                    .is_some_and(weir_storage::is_store_url) =>
            {
                claim_objects::archive(c, ctx, stores).await?.into()
            }
            Some(c) => paths(&claim::archive(c, ctx)?),
            None => files.into(),
        };
        out.insert("files".into(), files);
    }
    log.note(format!(
        "read {}, loaded {}, rejected {} in {:.3}s",
        counts.read,
        counts.loaded,
        counts.rejected,
        started.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// A local file a load reads (a claimed file, a downloaded page).
fn local_file(path: &Path, source: &LoadSource) -> SourceFile {
    let text = path.display().to_string();
    SourceFile::new(
        Location {
            scheme: weir_storage::Scheme::Local,
            root: String::new(),
            path: text,
        },
        None,
        source,
    )
}

/// Paths as a JSON list.
fn paths(files: &[PathBuf]) -> serde_json::Value {
    files.iter().map(|p| p.display().to_string()).collect()
}

/// The step with `columns` taken from `column_sets` by its (rendered) `column_set`.
fn with_column_set(step: &LoadStep) -> Result<std::borrow::Cow<'_, LoadStep>, LoadError> {
    let Some(name) = &step.column_set else {
        return Ok(std::borrow::Cow::Borrowed(step));
    };
    let set = step.column_sets.get(name.trim()).ok_or_else(|| {
        LoadError::fatal(format!(
            "`column_set` is `{name}`, which is not one of `column_sets` ({})",
            step.column_sets
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut chosen = step.clone();
    chosen.columns = Some(set.clone());
    Ok(std::borrow::Cow::Owned(chosen))
}

/// A load's outputs (see docs/dag-format.md).
fn outputs(
    step: &LoadStep,
    ctx: &LoadContext,
    counts: &Counts,
    started: Instant,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let (inserted, updated) = if step.mode == LoadMode::Upsert {
        (counts.inserted, counts.updated)
    } else {
        (counts.loaded, 0)
    };
    for (k, v) in [
        ("rows_read", counts.read),
        ("rows_loaded", counts.loaded),
        ("rows_inserted", inserted),
        ("rows_updated", updated),
        (
            "rows_unchanged",
            counts.loaded.saturating_sub(inserted + updated),
        ),
        ("rows_rejected", counts.rejected),
    ] {
        out.insert(k.into(), v.into());
    }
    if !counts.first_rejects.is_empty() {
        out.insert(
            "rejects".into(),
            counts
                .first_rejects
                .iter()
                .map(|(file, line, reason)| {
                    serde_json::json!({"file": file.as_ref(), "line": line, "reason": reason})
                })
                .collect(),
        );
    }
    if step.incremental.is_some() {
        out.insert("rows_skipped".into(), counts.skipped.into());
        // The new high-water mark (the old one when nothing newer came).
        let cursor = counts
            .cursor
            .as_ref()
            .and_then(value_text)
            .or_else(|| ctx.cursor.clone());
        out.insert(
            "cursor".into(),
            cursor.map_or(serde_json::Value::Null, Into::into),
        );
    }
    out.insert(
        "seconds".into(),
        serde_json::json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    );
    out
}

/// Counts of a load.
#[derive(Debug, Default, Clone)]
struct Counts {
    read: u64,
    loaded: u64,
    rejected: u64,
    /// `incremental`: rows at or below the stored cursor, not read.
    skipped: u64,
    /// `incremental`: the largest cursor value loaded.
    cursor: Option<Value>,
    /// `upsert` only: rows whose key was new, and rows that changed an existing row.
    inserted: u64,
    updated: u64,
    /// `upsert`: the sequence number the next staged row gets (rows are merged by ranges of it).
    seq: u64,
    /// The first rejects (file, line, reason), for the `rejects` output.
    first_rejects: Vec<(Arc<str>, u64, String)>,
}

/// Rejects named in a load's outputs at most (the table has them all).
const REJECTS_IN_OUTPUTS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps_are_read_directly_and_checked() {
        let at = |t: &str| iso_timestamp(t).map(|d| d.to_string());
        assert_eq!(
            at("2024-02-29 23:59:58").as_deref(),
            Some("2024-02-29 23:59:58")
        );
        assert_eq!(
            at("2024-02-29T01:02:03.000450").as_deref(),
            Some("2024-02-29 01:02:03.000450")
        );
        assert_eq!(
            at("2024-01-01T00:00:00.5").as_deref(),
            Some("2024-01-01 00:00:00.500")
        );
        for other in [
            "2023-02-29 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01T00:00:00Z",
            "2024-01-01 00:00:00+02:00",
            "2024-01-01 00:00",
            "2024-01-01 00:00:00.",
            "2024-01-01 00:00:00.1234567890",
        ] {
            assert_eq!(at(other), None, "{other}");
        }
    }

    #[test]
    fn iso_dates_are_read_directly_and_checked() {
        assert_eq!(iso_date("2024-02-29"), NaiveDate::from_ymd_opt(2024, 2, 29));
        assert_eq!(iso_date("0001-01-01"), NaiveDate::from_ymd_opt(1, 1, 1));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "2024/01/01",
            "2024-01-0x",
            "",
        ] {
            assert_eq!(iso_date(bad), None, "{bad}");
        }
        let date = spec(ColumnType::Date, false, None);
        assert!(parse_value("d", &date, Some("2023-02-29")).is_err());
        assert_eq!(
            parse_value("d", &date, Some(" 2024-03-01 ")),
            Ok(Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1)))
        );
    }

    /// COPY fields written by hand read back, through chrono's parser, as the same values.
    #[test]
    fn copy_dates_and_timestamps_read_back_the_same() {
        let stamps = [
            "2024-01-01 00:00:00",
            "0001-02-03 04:05:06.5",
            "1999-12-31 23:59:59.123456789",
            "2024-02-29 12:00:00.000001",
            "9999-12-31 23:59:59.100",
        ];
        for text in stamps {
            let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect(text);
            let mut buf = Vec::new();
            copy_field(&mut buf, &Value::Timestamp(Some(t)));
            let written = String::from_utf8(buf).expect("utf8");
            let back = NaiveDateTime::parse_from_str(&written, "%Y-%m-%d %H:%M:%S%.f");
            assert_eq!(back, Ok(t), "{text} written as {written}");
            let mut buf = Vec::new();
            copy_field(&mut buf, &Value::TimestampTz(Some(t.and_utc())));
            let written = String::from_utf8(buf).expect("utf8");
            let back = DateTime::parse_from_str(&written, "%Y-%m-%d %H:%M:%S%.f%#z");
            assert_eq!(back.map(|d| d.naive_utc()), Ok(t), "{written}");
            let mut buf = Vec::new();
            copy_field(&mut buf, &Value::Date(Some(t.date())));
            assert_eq!(
                String::from_utf8(buf).expect("utf8").parse::<NaiveDate>(),
                Ok(t.date())
            );
        }
        let mut buf = Vec::new();
        for v in [
            Value::BigInt(Some(-42)),
            Value::Int(None),
            Value::Bool(Some(false)),
            Value::Text(Some(String::new())),
            Value::Text(Some("a,b".into())),
            Value::Text(Some("say \"hi\"".into())),
            Value::Text(Some("\\.".into())),
            Value::Text(Some(" padded".into())),
            Value::Text(Some("plain".into())),
        ] {
            copy_field(&mut buf, &v);
            buf.push(b'|');
        }
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "-42||false|\"\"|\"a,b\"|\"say \"\"hi\"\"\"|\"\\.\"|\" padded\"|plain|"
        );
    }

    fn spec(ty: ColumnType, not_null: bool, format: Option<&str>) -> ColumnSpec {
        ColumnSpec {
            ty,
            not_null,
            from: None,
            format: format.map(str::to_owned),
        }
    }

    #[test]
    fn fields_parse_by_type_and_empty_is_null() {
        assert_eq!(
            parse_value("n", &spec(ColumnType::Int, false, None), Some(" 42 ")),
            Ok(Value::Int(Some(42)))
        );
        assert_eq!(
            parse_value("n", &spec(ColumnType::Int, false, None), Some("")),
            Ok(Value::Int(None))
        );
        assert!(
            parse_value("n", &spec(ColumnType::Int, true, None), Some(""))
                .unwrap_err()
                .contains("not_null")
        );
        assert!(
            parse_value("n", &spec(ColumnType::Int, false, None), Some("4x"))
                .unwrap_err()
                .contains("not an int")
        );
        assert!(parse_value("n", &spec(ColumnType::Numeric, false, None), Some("1.2.3")).is_err());
        assert_eq!(
            parse_value("n", &spec(ColumnType::Numeric, false, None), Some("-1.50")),
            Ok(Value::Text(Some("-1.50".into())))
        );
        assert_eq!(
            parse_value(
                "d",
                &spec(ColumnType::Date, false, Some("%d/%m/%Y")),
                Some("31/01/2024")
            ),
            Ok(Value::Date(NaiveDate::from_ymd_opt(2024, 1, 31)))
        );
        let tz = parse_value(
            "t",
            &spec(ColumnType::Timestamptz, false, None),
            Some("2021-11-07T01:30:00Z"),
        )
        .expect("ts");
        assert_eq!(
            tz,
            Value::TimestampTz(Some("2021-11-07T01:30:00Z".parse().expect("dt")))
        );
        assert!(parse_value("j", &spec(ColumnType::Json, false, None), Some("{bad")).is_err());
        assert_eq!(
            parse_value("b", &spec(ColumnType::Bool, false, None), Some("Yes")),
            Ok(Value::Bool(Some(true)))
        );
    }

    #[test]
    fn reject_limits_count_or_share() {
        assert!(!exceeds(&RejectLimit::Count(2), 2, 100));
        assert!(exceeds(&RejectLimit::Count(2), 3, 100));
        assert!(!exceeds(&RejectLimit::Percent(5.0), 5, 100));
        assert!(exceeds(&RejectLimit::Percent(5.0), 6, 100));
    }
}
