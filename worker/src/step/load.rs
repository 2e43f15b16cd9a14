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
//! This file is still larger than one module should be: reading (files, CSV rows, pages,
//! claims) has moved into the submodules beside it, and the plan and its writers are to
//! follow in the structural step planned next, as a move of its own rather than inside this
//! change's behaviour.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use weir_model::spec::{
    ColumnSpec, ColumnType, CreateMode, LoadMode, LoadStep, OnError, RejectLimit, SourceFormat,
};

mod claim;
mod csv_rows;
mod json_array;
pub(crate) mod pages;

use csv_rows::CsvRows;
use json_array::JsonArray;

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
}

/// A typed value ready to bind.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(Option<i32>),
    BigInt(Option<i64>),
    Float(Option<f64>),
    /// Text, and numbers and JSON kept as their text (cast by the database).
    Text(Option<String>),
    Bool(Option<bool>),
    Date(Option<NaiveDate>),
    Timestamp(Option<NaiveDateTime>),
    TimestampTz(Option<DateTime<Utc>>),
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
    /// A CSV row: bytes `start..end` of the file, read back when the row is rejected.
    Range {
        path: Arc<Path>,
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
            Raw::Range { path, start, end } => {
                csv_rows::raw_text(&csv_rows::read_range(path, *start, *end))
            }
            Raw::Fields(values) => serde_json::to_string(values).unwrap_or_default(),
            Raw::InCopyGroup | Raw::Typed => String::new(),
        }
    }
}

/// The columns loaded, in order.
#[derive(Clone)]
struct Columns {
    names: Vec<String>,
    specs: Vec<ColumnSpec>,
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
            outputs.insert("files".into(), paths(&claim::archive(c, ctx)?));
        }
        return Ok(outputs);
    }
    // Holds an HTTP source's download until the load is over.
    let mut _download = None;
    // A file source's files, for the `files` output.
    let mut read_files = None;
    let (input, columns) = if let Some(pattern) = &step.source.file {
        let format = step
            .source
            .format
            .or_else(|| format_of_name(pattern))
            .unwrap_or(SourceFormat::Csv);
        let files = match claim {
            Some(c) => claim::claim(pattern, c, ctx)?,
            None => matching_files(pattern)?,
        };
        read_files = Some(files.clone());
        let columns = columns(step, &files, format)?;
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
                labels: Vec::new(),
            },
            columns,
        )
    } else if let Some(url) = &step.source.http {
        let pages = pages::download(&step.source, url, log).await?;
        let format = pages.first().map_or(SourceFormat::Csv, |p| p.format);
        let files: Vec<PathBuf> = pages.iter().map(|p| p.file.path().to_path_buf()).collect();
        let labels = pages.iter().map(|p| p.label.clone()).collect();
        let columns = columns(step, &files, format)?;
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
                labels,
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
            Some(_) => columns(step, &[], SourceFormat::Csv)?,
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
            Some(c) => claim::archive(c, ctx)?,
            None => files,
        };
        out.insert("files".into(), paths(&files));
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

/// The format a file or URL name implies: `.csv`, `.jsonl`/`.ndjson`, `.json` (any case, a
/// URL's query ignored).
fn format_of_name(name: &str) -> Option<SourceFormat> {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "tsv" | "txt" => Some(SourceFormat::Csv),
        "jsonl" | "ndjson" => Some(SourceFormat::Jsonl),
        "json" => Some(SourceFormat::Json),
        _ => None,
    }
}

/// The format a response's `Content-Type` implies.
fn format_of_content_type(content_type: &str) -> Option<SourceFormat> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "text/csv" | "application/csv" => Some(SourceFormat::Csv),
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            Some(SourceFormat::Jsonl)
        }
        "application/json" => Some(SourceFormat::Json),
        _ => None,
    }
}

fn matching_files(pattern: &str) -> Result<Vec<PathBuf>, LoadError> {
    let mut files: Vec<PathBuf> = glob::glob(pattern)
        .map_err(|e| LoadError::fatal(format!("`{pattern}` is not a valid glob: {e}")))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        return Err(LoadError {
            // The file may not have arrived yet.
            retryable: true,
            message: format!("no file matches `{pattern}` (relative to {cwd})"),
        });
    }
    Ok(files)
}

/// The loaded columns: `columns` as written, or the source's own (as text).
fn columns(step: &LoadStep, files: &[PathBuf], format: SourceFormat) -> Result<Columns, LoadError> {
    if let Some(cols) = &step.columns {
        return Ok(Columns {
            names: cols.keys().cloned().collect(),
            specs: cols.values().cloned().collect(),
        });
    }
    let first = &files[0];
    let names: Vec<String> = match format {
        SourceFormat::Csv => {
            if step.source.header == Some(false) {
                return Err(LoadError::fatal(
                    "a csv source without a header needs `columns` (fields are matched by position)",
                ));
            }
            csv_rows::header(step, first)?
        }
        SourceFormat::Jsonl => {
            use std::io::BufRead;
            let file = std::fs::File::open(first)
                .map_err(|e| LoadError::fatal(format!("{}: {e}", first.display())))?;
            let mut line = String::new();
            for read in std::io::BufReader::new(file).lines() {
                line = read.map_err(|e| LoadError::fatal(format!("{}: {e}", first.display())))?;
                if !line.trim().is_empty() {
                    break;
                }
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
                _ => {
                    return Err(LoadError::fatal(format!(
                        "{}: the first line is not a JSON object; give `columns`",
                        first.display()
                    )));
                }
            }
        }
        SourceFormat::Json => {
            let file = std::fs::File::open(first)
                .map_err(|e| LoadError::fatal(format!("{}: {e}", first.display())))?;
            match JsonArray::new(std::io::BufReader::new(file)).next_element() {
                Ok(Some((_, serde_json::Value::Object(m)))) => m.keys().cloned().collect(),
                Ok(_) => {
                    return Err(LoadError::fatal(format!(
                        "{}: the first element is not a JSON object; give `columns`",
                        first.display()
                    )));
                }
                Err(e) => return Err(LoadError::fatal(format!("{}: {e}", first.display()))),
            }
        }
    };
    Ok(Columns {
        specs: names
            .iter()
            .map(|_| ColumnSpec {
                ty: ColumnType::Text,
                not_null: false,
                from: None,
                format: None,
            })
            .collect(),
        names,
    })
}

/// Parses one field as a column's type. `None` is NULL (an empty CSV field, a JSON null or a
/// missing key). Text is kept exactly as written (a JSON `""` stays an empty string); other
/// types ignore surrounding spaces, and blank is NULL.
fn parse_value(column: &str, spec: &ColumnSpec, field: Option<&str>) -> Result<Value, String> {
    let text = match spec.ty {
        ColumnType::Text => field,
        _ => field.map(str::trim).filter(|t| !t.is_empty()),
    };
    if let Some(problem) = text_problem(column, spec, text) {
        return Err(problem);
    }
    let bad = |what: &str, t: &str| format!("`{column}`: `{t}` is not {what}");
    Ok(match spec.ty {
        ColumnType::Int => Value::Int(
            text.map(|t| t.parse().map_err(|_| bad("an int", t)))
                .transpose()?,
        ),
        ColumnType::Bigint => Value::BigInt(
            text.map(|t| t.parse().map_err(|_| bad("a bigint", t)))
                .transpose()?,
        ),
        ColumnType::Float => Value::Float(
            text.map(|t| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| bad("a float", t))
            })
            .transpose()?,
        ),
        ColumnType::Numeric => Value::Text(
            text.map(|t| {
                let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
                let ok = !digits.is_empty()
                    && digits.chars().filter(|c| *c == '.').count() <= 1
                    && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
                    && digits.chars().any(|c| c.is_ascii_digit());
                if ok {
                    Ok(t.to_owned())
                } else {
                    Err(bad("a number", t))
                }
            })
            .transpose()?,
        ),
        ColumnType::Text => Value::Text(text.map(str::to_owned)),
        ColumnType::Json => Value::Text(
            text.map(|t| {
                serde_json::from_str::<serde_json::Value>(t)
                    .map(|_| t.to_owned())
                    .map_err(|e| format!("`{column}`: not JSON ({e})"))
            })
            .transpose()?,
        ),
        ColumnType::Bool => Value::Bool(
            text.map(|t| {
                let is = |words: [&str; 5]| words.iter().any(|w| t.eq_ignore_ascii_case(w));
                if is(["true", "t", "1", "yes", "y"]) {
                    Ok(true)
                } else if is(["false", "f", "0", "no", "n"]) {
                    Ok(false)
                } else {
                    Err(bad("a boolean", t))
                }
            })
            .transpose()?,
        ),
        ColumnType::Date => Value::Date(
            text.map(|t| match spec.format.as_deref() {
                Some(f) => {
                    NaiveDate::parse_from_str(t, f).map_err(|_| bad(&format!("a date ({f})"), t))
                }
                None => iso_date(t)
                    .or_else(|| t.parse().ok())
                    .ok_or_else(|| bad("a date (%Y-%m-%d)", t)),
            })
            .transpose()?,
        ),
        ColumnType::Timestamp => Value::Timestamp(
            text.map(|t| match spec.format.as_deref() {
                Some(f) => NaiveDateTime::parse_from_str(t, f)
                    .map_err(|_| bad(&format!("a timestamp ({f})"), t)),
                None => iso_timestamp(t)
                    .or_else(|| {
                        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                            .iter()
                            .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                    })
                    .or_else(|| DateTime::parse_from_rfc3339(t).ok().map(|d| d.naive_utc()))
                    .ok_or_else(|| bad("a timestamp (ISO 8601)", t)),
            })
            .transpose()?,
        ),
        ColumnType::Timestamptz => Value::TimestampTz(
            text.map(|t| match spec.format.as_deref() {
                Some(f) => DateTime::parse_from_str(t, f)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| bad(&format!("a timestamp with offset ({f})"), t)),
                None => iso_timestamp(t)
                    .map(|n| n.and_utc())
                    .ok_or(())
                    .or_else(|()| DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc)))
                    .or_else(|_| {
                        // No offset written: UTC.
                        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                            .iter()
                            .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                            .map(|n| n.and_utc())
                            .ok_or(())
                    })
                    .map_err(|()| bad("a timestamp (ISO 8601)", t)),
            })
            .transpose()?,
        ),
    })
}

/// `YYYY-MM-DD` read directly (the common case; chrono's general parser was a tenth of a
/// load's reading time). `None`: another shape, or no such day.
fn iso_date(t: &str) -> Option<NaiveDate> {
    let b = t.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0_u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}

/// Why a field cannot load whatever its type: empty but `not_null`, or holding a NUL byte.
fn text_problem(column: &str, spec: &ColumnSpec, text: Option<&str>) -> Option<String> {
    match text {
        None if spec.not_null => Some(format!("`{column}` is empty but not_null")),
        Some(t) if t.contains('\0') => Some(format!(
            "`{column}` holds a NUL byte (0x00), which a database's text cannot hold"
        )),
        _ => None,
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` (or with `T`), without an offset, read directly: what
/// databases print and most files hold (chrono's format-driven parser was a fifth of a
/// database copy's time). `None`: another shape (an offset included), or no such time.
fn iso_timestamp(t: &str) -> Option<NaiveDateTime> {
    let b = t.as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = iso_date(t.get(..10)?)?;
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0_u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let n = number(20..b.len())?;
            n * 10_u32.pow(u32::try_from(9 - digits.len()).ok()?)
        }
        _ => return None,
    };
    let time = chrono::NaiveTime::from_hms_nano_opt(
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        nanos,
    )?;
    Some(date.and_time(time))
}

/// The ranges of a refused batch left to write again, each refused one halved in turn down to
/// single rows: a few bad rows cost a few dozen statements, not one per row. (A batch of one
/// row is its own bad row: nothing to try.)
struct Halving(Vec<std::ops::Range<usize>>);

impl Halving {
    fn new(len: usize) -> Halving {
        let mut h = Halving(Vec::new());
        if len > 1 {
            h.split(0..len);
        }
        h
    }

    /// Queues both halves of `range`, the first to be tried first.
    fn split(&mut self, range: std::ops::Range<usize>) {
        let middle = range.start + range.len() / 2;
        self.0.push(middle..range.end);
        self.0.push(range.start..middle);
    }

    fn next_range(&mut self) -> Option<std::ops::Range<usize>> {
        self.0.pop()
    }

    /// Records that the database refused `range`: `true` when it is a single row (the bad
    /// one), else its halves are queued.
    fn refused(&mut self, range: std::ops::Range<usize>) -> bool {
        if range.len() == 1 {
            return true;
        }
        self.split(range);
        false
    }
}

/// Where rows come from.
enum Input {
    /// Files, in name order.
    Files {
        files: Vec<PathBuf>,
        format: SourceFormat,
        /// The names rejects give the files instead of their paths (an HTTP source's pages), in
        /// the same order; empty: the paths.
        labels: Vec<String>,
    },
    /// A query's rows, streamed from another connection and typed by a task of their own.
    Database {
        /// Batches of typed rows; `Ok(None)` after the last.
        rows: Batches,
        /// Rows done with, back to the reader to be freed there.
        spent: std::sync::mpsc::Sender<Spent>,
    },
}

/// Batches of read rows on their way to the writer; `Ok(None)` after the last.
type Batches = tokio::sync::mpsc::Receiver<Result<Option<Vec<InputRow>>, LoadError>>;

/// How a database source's reader types its rows, sent to it once the columns are known
/// (from the first row's names and the target's types).
struct Typing {
    columns: Columns,
    /// Source position of each loaded column.
    at: Vec<usize>,
    /// Rows per batch.
    batch: usize,
    to_free: std::sync::mpsc::Receiver<Spent>,
}

impl Typing {
    /// One source row as a typed input row, read from the row's own text (only a text column
    /// is copied out of it); a row that does not type keeps all its fields for the reject.
    fn row<R>(&self, row: &R, file: &Arc<str>, line: u64) -> Result<InputRow, sqlx::Error>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> Option<&'r str>: sqlx::Decode<'r, R::Database>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    {
        let mut typed = Vec::with_capacity(self.at.len());
        for ((name, spec), i) in self
            .columns
            .names
            .iter()
            .zip(&self.columns.specs)
            .zip(&self.at)
        {
            let field: Option<&str> = row.try_get_unchecked(*i)?;
            let value = if spec.ty == ColumnType::Text {
                text_problem(name, spec, field)
                    .map_or_else(|| Ok(Value::Text(field.map(str::to_owned))), Err)
            } else {
                parse_value(name, spec, field)
            };
            match value {
                Ok(v) => typed.push(v),
                Err(reason) => {
                    return Ok(InputRow {
                        file: Arc::clone(file),
                        line,
                        raw: Raw::Fields(super::sqltext::row_values(row)?),
                        parsed: Err(reason),
                    });
                }
            }
        }
        Ok(InputRow {
            file: Arc::clone(file),
            line,
            raw: Raw::Typed,
            parsed: Ok(typed),
        })
    }
}

/// Starts streaming `sql` on `source`: returns the column names (empty when there are no
/// rows), where to send how the rows are typed, and the batches of typed rows. The reader
/// reads, types and batches on its own task (reading and typing the source, and writing the
/// target, overlap), at most a batch ahead of the writer.
async fn stream_source(
    source: DataPool,
    sql: String,
    label: Arc<str>,
) -> (Vec<String>, tokio::sync::oneshot::Sender<Typing>, Batches) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (names_tx, names_rx) = tokio::sync::oneshot::channel();
    let (typing_tx, typing_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = match &source {
            DataPool::Postgres(p) => produce(p, &sql, &label, names_tx, typing_rx, &tx).await,
            DataPool::MySql(p) => produce(p, &sql, &label, names_tx, typing_rx, &tx).await,
            DataPool::Sqlite(p) => produce(p, &sql, &label, names_tx, typing_rx, &tx).await,
        };
        if let Err(e) = result {
            // The source failed mid-way: nothing is committed.
            let _ = tx
                .send(Err(LoadError {
                    message: format!("{label}: {e}"),
                    retryable: true,
                }))
                .await;
        }
    });
    let names = names_rx.await.unwrap_or_default();
    (names, typing_tx, rx)
}

async fn produce<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    label: &Arc<str>,
    names_tx: tokio::sync::oneshot::Sender<Vec<String>>,
    typing: tokio::sync::oneshot::Receiver<Typing>,
    tx: &tokio::sync::mpsc::Sender<Result<Option<Vec<InputRow>>, LoadError>>,
) -> Result<(), String>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> Option<String>: sqlx::Decode<'r, DB>,
    for<'r> Option<&'r str>: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use futures_util::TryStreamExt;
    let db = |e: sqlx::Error| crate::conn::db_error(&e);
    let mut conn = pool.acquire().await.map_err(db)?;
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(&mut *conn);
    let Some(first) = rows.try_next().await.map_err(db)? else {
        let _ = names_tx.send(Vec::new());
        let _ = tx.send(Ok(None)).await;
        return Ok(());
    };
    let _ = names_tx.send(super::sqltext::column_names(&first));
    // The load gave up before typing anything (a missing column): stop.
    let Ok(typing) = typing.await else {
        return Ok(());
    };
    let mut number = 1_u64;
    let mut batch = Vec::with_capacity(typing.batch.min(10_000));
    batch.push(typing.row(&first, label, number).map_err(db)?);
    while let Some(row) = rows.try_next().await.map_err(db)? {
        number += 1;
        batch.push(typing.row(&row, label, number).map_err(db)?);
        if batch.len() >= typing.batch {
            while let Ok(done) = typing.to_free.try_recv() {
                drop(done);
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(typing.batch.min(10_000)));
            if tx.send(Ok(Some(full))).await.is_err() {
                // The load stopped reading (it failed): stop streaming.
                return Ok(());
            }
        }
    }
    if !batch.is_empty() && tx.send(Ok(Some(batch))).await.is_err() {
        return Ok(());
    }
    let _ = tx.send(Ok(None)).await;
    Ok(())
}

/// Columns named like the source's, typed from `types` (text where a name is not there).
fn typed_columns(source: &[String], types: &[(String, ColumnType)]) -> Result<Columns, LoadError> {
    if source.is_empty() {
        // No rows came: the target's own columns (nothing will be written but, with `replace`
        // or `truncate_insert`, its old rows go).
        if types.is_empty() {
            return Err(LoadError::fatal(
                "the source returned no rows, `columns` is not given and the target does not exist: the table's shape is unknown",
            ));
        }
        return Ok(Columns {
            names: types.iter().map(|(n, _)| n.clone()).collect(),
            specs: types
                .iter()
                .map(|(_, ty)| ColumnSpec {
                    ty: *ty,
                    not_null: false,
                    from: None,
                    format: None,
                })
                .collect(),
        });
    }
    Ok(Columns {
        names: source.to_vec(),
        specs: source
            .iter()
            .map(|n| ColumnSpec {
                ty: types
                    .iter()
                    .find(|(name, _)| name == n)
                    .map_or(ColumnType::Text, |(_, ty)| *ty),
                not_null: false,
                from: None,
                format: None,
            })
            .collect(),
    })
}

/// A table's column types as load types (empty when the table does not exist).
async fn table_types(pool: &DataPool, table: &str) -> Result<Vec<(String, ColumnType)>, LoadError> {
    let d = pool.dialect();
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, table),
    };
    let literal = |v: &str| {
        d.literal(&serde_json::Value::String(v.to_owned()))
            .map_err(LoadError::fatal)
    };
    let sql = match d {
        Dialect::Postgres => format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = {} AND table_schema = {} ORDER BY ordinal_position",
            literal(name)?,
            schema.map_or(Ok("current_schema()".to_owned()), literal)?
        ),
        Dialect::MySql => format!(
            "SELECT column_name AS column_name, data_type AS data_type FROM information_schema.columns WHERE table_name = {} AND table_schema = {} ORDER BY ordinal_position",
            literal(name)?,
            schema.map_or(Ok("DATABASE()".to_owned()), literal)?
        ),
        Dialect::Sqlite => format!(
            "SELECT name AS column_name, type AS data_type FROM pragma_table_info({}) ORDER BY cid",
            literal(name)?
        ),
    };
    let found = super::sqltext::text_rows(pool, &sql, 10_000).await?;
    Ok(found
        .iter()
        .filter_map(|r| {
            let get = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            Some((
                get("column_name")?,
                column_type(&get("data_type")?.to_ascii_lowercase()),
            ))
        })
        .collect())
}

/// A database's name of a column type, as a load column type.
fn column_type(t: &str) -> ColumnType {
    match t {
        "integer" | "int" | "int4" | "smallint" | "tinyint" | "mediumint" => ColumnType::Int,
        "bigint" | "int8" => ColumnType::Bigint,
        "real" | "double precision" | "double" | "float" | "float8" => ColumnType::Float,
        _ if t.starts_with("numeric") || t.starts_with("decimal") => ColumnType::Numeric,
        "boolean" | "bool" => ColumnType::Bool,
        "date" => ColumnType::Date,
        "timestamp with time zone" | "timestamptz" => ColumnType::Timestamptz,
        "timestamp without time zone" | "timestamp" | "datetime" => ColumnType::Timestamp,
        "json" | "jsonb" => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

/// Where a column's field is in a csv record.
struct FieldAt(usize);

/// Reads every row of the files, in order, a batch at a time (memory holds one batch).
struct RowReader<'a> {
    step: &'a LoadStep,
    columns: &'a Columns,
    format: SourceFormat,
    files: &'a [PathBuf],
    labels: &'a [String],
    /// The next file to open.
    next: usize,
    current: Option<Source>,
}

/// The file being read.
enum Source {
    Csv(CsvRows),
    Jsonl {
        name: Arc<str>,
        lines: std::io::BufReader<std::fs::File>,
        /// Lines read so far.
        number: u64,
    },
    Json {
        name: Arc<str>,
        array: JsonArray<std::io::BufReader<std::fs::File>>,
    },
}

impl<'a> RowReader<'a> {
    fn new(
        step: &'a LoadStep,
        columns: &'a Columns,
        format: SourceFormat,
        files: &'a [PathBuf],
        labels: &'a [String],
    ) -> RowReader<'a> {
        RowReader {
            step,
            columns,
            format,
            files,
            labels,
            next: 0,
            current: None,
        }
    }

    /// The next rows, at most `batch`; `None` once every file is read.
    fn next_batch(&mut self, batch: usize) -> Result<Option<Vec<InputRow>>, LoadError> {
        let mut rows = Vec::with_capacity(batch.min(10_000));
        while rows.len() < batch {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next) else {
                    break;
                };
                let label = self.labels.get(self.next);
                self.next += 1;
                self.current = Some(self.open(path, label)?);
            }
            let row = match self.current.as_mut() {
                Some(Source::Csv(csv)) => csv.next_row(self.columns)?,
                Some(Source::Jsonl {
                    name,
                    lines,
                    number,
                }) => next_json_line(name, lines, number, self.columns),
                Some(Source::Json { name, array }) => match array.next_element() {
                    Ok(None) => None,
                    Ok(Some((line, value))) => Some(InputRow {
                        file: Arc::clone(name),
                        line,
                        raw: Raw::Text(value.to_string()),
                        parsed: parse_object(self.columns, value),
                    }),
                    // Past a syntax error nothing can be read: the load fails (and rolls back).
                    Err(e) => return Err(LoadError::fatal(format!("{name}: {e}"))),
                },
                None => None,
            };
            match row {
                Some(r) => rows.push(r),
                None => self.current = None,
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }

    fn open(&self, path: &Path, label: Option<&String>) -> Result<Source, LoadError> {
        let name: Arc<str> = label
            .map_or_else(|| path.display().to_string(), Clone::clone)
            .into();
        let open = || {
            std::fs::File::open(path)
                .map(std::io::BufReader::new)
                .map_err(|e| LoadError::fatal(format!("{name}: {e}")))
        };
        Ok(match self.format {
            SourceFormat::Csv => Source::Csv(CsvRows::open(
                self.step,
                self.columns,
                path,
                Arc::clone(&name),
            )?),
            SourceFormat::Jsonl => Source::Jsonl {
                lines: open()?,
                name,
                number: 0,
            },
            SourceFormat::Json => {
                let array = JsonArray::new(open()?);
                Source::Json { name, array }
            }
        })
    }
}

/// The next non-blank line of a JSON-lines file, parsed (`None` at its end). A line that is not
/// UTF-8 is a reject that keeps its bytes.
fn next_json_line(
    name: &Arc<str>,
    lines: &mut std::io::BufReader<std::fs::File>,
    number: &mut u64,
    columns: &Columns,
) -> Option<InputRow> {
    use std::io::BufRead;
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        *number += 1;
        let row = |raw: Raw, parsed| {
            Some(InputRow {
                file: Arc::clone(name),
                line: *number,
                raw,
                parsed,
            })
        };
        match lines.read_until(b'\n', &mut bytes) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return row(Raw::Bytes(Vec::new()), Err(format!("unreadable line: {e}"))),
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(line) => parse_json(columns, line),
            Err(e) => Err(format!(
                "not valid UTF-8 (byte {} of the line)",
                e.valid_up_to() + 1
            )),
        };
        return row(Raw::Bytes(bytes), parsed);
    }
}

fn parse_json(columns: &Columns, line: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) => parse_object(columns, value),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// The columns of one JSON object (a JSON-lines line, a JSON array's element).
fn parse_object(columns: &Columns, value: serde_json::Value) -> Result<Vec<Value>, String> {
    let serde_json::Value::Object(object) = value else {
        return Err("not a JSON object".into());
    };
    columns
        .names
        .iter()
        .zip(&columns.specs)
        .map(|(name, spec)| {
            let key = spec.from.as_deref().unwrap_or(name);
            let text = match object.get(key) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            parse_value(name, spec, text.as_deref())
        })
        .collect()
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

/// Rows gathered for one Postgres `COPY`, already in its CSV form: a `COPY` spans several
/// read batches (each `COPY` and its savepoint cost the server about 2 ms, a seventh of a
/// 10,000-row batch), while memory holds only text, not typed rows.
#[derive(Default)]
struct CopyGroup {
    /// The rows' `COPY` lines, one after the other.
    lines: Vec<u8>,
    /// Per parsed row: its line's end in `lines`, and where it came from.
    rows: Vec<(usize, Origin)>,
    /// `incremental`: per parsed row, its cursor value (empty otherwise).
    cursors: Vec<Option<Value>>,
    /// Rows that did not parse.
    rejects: Vec<Reject>,
    read: u64,
    skipped: u64,
    /// `upsert`: the staging sequence number of the group's first row (row `i` has
    /// `first_seq + i`).
    first_seq: u64,
    /// Whether each line ends with the staging sequence number (`upsert`).
    seq_column: bool,
}

impl CopyGroup {
    /// Where row `i` came from, its raw row read back from its `COPY` line when it was a
    /// database row's (as a JSON array of its fields, like [`Raw::Fields`]).
    fn origin(&self, i: usize) -> Reject {
        let mut reject: Reject = self.rows[i].1.clone().into();
        if matches!(reject.raw, Raw::InCopyGroup) {
            let line = self.lines_of(i, i + 1);
            let mut fields: Vec<Option<String>> = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line)
                .byte_records()
                .next()
                .and_then(Result::ok)
                .map(|r| {
                    r.iter()
                        .map(|f| (!f.is_empty()).then(|| String::from_utf8_lossy(f).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            // An upsert's line ends with its staging sequence number.
            if self.seq_column {
                fields.pop();
            }
            reject.raw = Raw::Fields(fields);
        }
        reject
    }

    /// The `COPY` lines of rows `from..to`.
    fn lines_of(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 { 0 } else { self.rows[from - 1].0 };
        let end = if to == 0 { 0 } else { self.rows[to - 1].0 };
        &self.lines[start..end]
    }
}

/// Where a row came from (a reject without its reason: what a `COPY` group keeps per row).
#[derive(Debug, Clone)]
struct Origin {
    file: Arc<str>,
    line: u64,
    raw: Raw,
}

impl From<Origin> for Reject {
    fn from(o: Origin) -> Reject {
        Reject {
            file: o.file,
            line: o.line,
            raw: o.raw,
            reason: String::new(),
        }
    }
}

/// The staging table's column numbering rows in load order (`upsert`).
const SEQ: &str = "__weir_seq";

/// Rows per Postgres `COPY` at most (at least one read batch). Each `COPY` ends with a wait
/// for the server and a savepoint; fewer, larger ones were a tenth faster on a 1M-row copy.
const COPY_GROUP_ROWS: usize = 250_000;

/// Text per Postgres `COPY` at most: the group's text is kept until the server took it (to
/// write it again in halves when it refused a row), so this bounds a load's memory.
const COPY_GROUP_BYTES: usize = 6 * 1024 * 1024;

struct Plan {
    dialect: Dialect,
    /// When the load began (for the outputs the commit ledger keeps).
    started: Instant,
    /// The loaded columns.
    columns: Columns,
    /// `incremental`: the cursor column's position, and the stored value rows must exceed.
    cursor: Option<(usize, Option<Value>)>,
    /// The table rows go into during the load (the target, or the staging table of `replace`).
    into: String,
    target: String,
    /// `replace` and `upsert`: the staging table and its column definitions.
    staging: Option<(String, String)>,
    /// Quoted key columns (`upsert`).
    keys: Vec<String>,
    /// Merge the staging table into the target rather than swap it in.
    upsert: bool,
    rejects: String,
    /// The rejects table's name as written (`schema.table__rejects`).
    rejects_name: String,
    column_list: String,
    create_target: Option<String>,
    create_rejects: String,
    on_error: OnError,
    max: Option<RejectLimit>,
    batch: usize,
}

impl Plan {
    fn new(
        step: &LoadStep,
        dialect: Dialect,
        columns: Columns,
        stored_cursor: Option<&str>,
        started: Instant,
    ) -> Result<Plan, LoadError> {
        let target = dialect
            .ident(&step.target.table)
            .map_err(LoadError::fatal)?;
        // An upsert stages in a temporary table of its connection (no WAL, nothing left
        // behind); `replace` stages the table that becomes the target.
        let bare_table = step
            .target
            .table
            .rsplit('.')
            .next()
            .unwrap_or(&step.target.table);
        let staging_name = match step.mode {
            LoadMode::Replace => Some(format!("{}__weir_new", step.target.table)),
            LoadMode::Upsert => Some(format!("{bare_table}__weir_stage")),
            _ => None,
        };
        let staging = staging_name
            .map(|n| dialect.ident(&n))
            .transpose()
            .map_err(LoadError::fatal)?;
        if step.mode == LoadMode::Upsert {
            if step.key.is_empty() {
                return Err(LoadError::fatal("mode `upsert` needs `key`"));
            }
            if let Some(missing) = step.key.iter().find(|k| !columns.names.contains(k)) {
                return Err(LoadError::fatal(format!(
                    "key column `{missing}` is not a loaded column"
                )));
            }
        }
        let rejects_name = format!("{}__rejects", step.target.table);
        let rejects = dialect.ident(&rejects_name).map_err(LoadError::fatal)?;
        let quoted: Vec<String> = columns
            .names
            .iter()
            .map(|n| dialect.ident(n))
            .collect::<Result<_, _>>()
            .map_err(LoadError::fatal)?;
        let definition = quoted
            .iter()
            .zip(&columns.names)
            .zip(&columns.specs)
            .map(|((q, name), spec)| {
                let ty = match (dialect, spec.ty) {
                    // MySQL indexes text only with a length: key columns are VARCHAR.
                    (Dialect::MySql, ColumnType::Text) if step.key.contains(name) => "VARCHAR(255)",
                    (d, t) => sql_type(d, t),
                };
                format!("{q} {ty}{}", if spec.not_null { " NOT NULL" } else { "" })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let keys: Vec<String> = step
            .key
            .iter()
            .map(|k| dialect.ident(k))
            .collect::<Result<_, _>>()
            .map_err(LoadError::fatal)?;
        // The staging table of an upsert refuses a key twice: the later row is rejected.
        // Its rows are numbered in load order (`__weir_seq`) and merged a batch at a time, so
        // that a row the target refuses is found and rejected like any other.
        let staging_definition = if step.mode == LoadMode::Upsert {
            format!(
                "{definition}, {SEQ} BIGINT NOT NULL, PRIMARY KEY ({}), UNIQUE ({SEQ})",
                keys.join(", ")
            )
        } else {
            definition.clone()
        };
        let create_target = match (step.mode, step.target.create) {
            (LoadMode::Replace, _) => None,
            (_, CreateMode::IfMissing) => Some(format!(
                "CREATE TABLE IF NOT EXISTS {target} ({definition})"
            )),
            (_, CreateMode::Never) => None,
        };
        let text = sql_type(dialect, ColumnType::Text);
        let create_rejects = format!(
            "CREATE TABLE IF NOT EXISTS {rejects} (run_id {text} NOT NULL, task_id {text} NOT NULL, \
             source_file {text} NOT NULL, line_number BIGINT NOT NULL, raw_row {text} NOT NULL, reason {text} NOT NULL, \
             rejected_at {} NOT NULL)",
            sql_type(dialect, ColumnType::Timestamptz)
        );
        let (on_error, max) = match &step.rejects {
            Some(r) => (r.on_error, r.max.clone()),
            None => (OnError::Fail, None),
        };
        let into = staging.clone().unwrap_or_else(|| target.clone());
        let cursor = match &step.incremental {
            None => None,
            Some(inc) => {
                let i = columns
                    .names
                    .iter()
                    .position(|n| *n == inc.cursor)
                    .ok_or_else(|| {
                        LoadError::fatal(format!(
                            "incremental cursor `{}` is not a loaded column",
                            inc.cursor
                        ))
                    })?;
                let after = match stored_cursor {
                    None => None,
                    Some(text) => Some(
                        parse_value(&inc.cursor, &columns.specs[i], Some(text)).map_err(|e| {
                            LoadError::fatal(format!(
                                "the stored cursor does not parse as the column: {e}"
                            ))
                        })?,
                    ),
                };
                Some((i, after))
            }
        };
        Ok(Plan {
            dialect,
            started,
            columns,
            cursor,
            into,
            target,
            staging: staging.map(|s| (s, staging_definition)),
            keys,
            upsert: step.mode == LoadMode::Upsert,
            rejects,
            rejects_name,
            column_list: if step.mode == LoadMode::Upsert {
                format!("{}, {SEQ}", quoted.join(", "))
            } else {
                quoted.join(", ")
            },
            create_target,
            create_rejects,
            on_error,
            max,
            batch: usize::try_from(step.batch_size)
                .unwrap_or(10_000)
                .clamp(1, 100_000),
        })
    }

    async fn execute<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
        input: Input,
        step: &LoadStep,
        ctx: &LoadContext,
        log: &LogSink,
    ) -> Result<Counts, LoadError>
    where
        DB: WriteRows,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'r> Option<String>: sqlx::Decode<'r, DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let mut ddl = Vec::new();
        if let Some(create) = &self.create_target {
            ddl.push(create.clone());
        }
        // An upsert's temporary stage is made in the transaction's own connection, below.
        if let Some((name, definition)) = self.staging.as_ref().filter(|_| !self.upsert) {
            ddl.push(format!("DROP TABLE IF EXISTS {name}"));
            ddl.push(format!("CREATE TABLE {name} ({definition})"));
        }
        if self.on_error == OnError::Reject {
            ddl.push(self.create_rejects.clone());
        }
        if self.dialect == Dialect::MySql {
            // MySQL commits around DDL: tables are created before the transaction (an empty
            // table, or an empty staging table, is all a failure can leave behind).
            let mut conn = pool.acquire().await?;
            for statement in &ddl {
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&mut *conn)
                    .await?;
            }
            ddl.clear();
        }
        let mut tx = crate::conn::begin_write(pool).await?;
        if let Some((name, definition)) = self.staging.as_ref().filter(|_| self.upsert) {
            // One a failed load left in this pooled connection goes first (MySQL does not roll
            // back a temporary table's creation).
            ddl.push(self.drop_stage(name));
            ddl.push(format!("CREATE TEMPORARY TABLE {name} ({definition})"));
        }
        for statement in ddl {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await?;
        }
        if step.mode == LoadMode::TruncateInsert {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DELETE FROM {}", self.target)))
                .execute(&mut *tx)
                .await?;
        }
        // `[retention] keep_rejects`: the table's old rejects go, with this load's commit.
        if self.on_error == OnError::Reject
            && let Some(keep) = ctx.keep_rejects
            && let Ok(keep) = chrono::Duration::from_std(keep)
        {
            let mut prune = sqlx::QueryBuilder::<DB>::new(format!(
                "DELETE FROM {} WHERE rejected_at < ",
                self.rejects
            ));
            prune.push_bind(Utc::now() - keep);
            prune.build().execute(&mut *tx).await?;
        }
        let mut counts = Counts::default();
        let casts: Vec<Option<&str>> = self
            .columns
            .specs
            .iter()
            .map(|s| match (self.dialect, s.ty) {
                (Dialect::Postgres, ColumnType::Numeric) => Some("NUMERIC"),
                (Dialect::Postgres, ColumnType::Json) => Some("JSONB"),
                _ => None,
            })
            .collect();
        // Rows are read and typed by a task of their own, a batch ahead of the database:
        // reading and writing overlap. Dropping the receiver (a failed batch, a timeout) stops
        // the reader at its next batch. Loaded rows go back to the reader to be freed there:
        // freeing them here cost the writer (the critical path) a tenth of its time, and
        // glibc's allocator more when memory crosses threads.
        let (mut received, spent) = match input {
            Input::Files {
                files,
                format,
                labels,
            } => {
                let (batches, received) = tokio::sync::mpsc::channel(1);
                let (spent, to_free) = std::sync::mpsc::channel::<Spent>();
                let (read_step, read_columns, batch) =
                    (step.clone(), self.columns.clone(), self.batch);
                tokio::task::spawn_blocking(move || {
                    let mut reader =
                        RowReader::new(&read_step, &read_columns, format, &files, &labels);
                    loop {
                        while let Ok(rows) = to_free.try_recv() {
                            drop(rows);
                        }
                        let next = reader.next_batch(batch);
                        let last = !matches!(next, Ok(Some(_)));
                        if batches.blocking_send(next).is_err() || last {
                            return;
                        }
                    }
                });
                (received, spent)
            }
            // The database reader types and batches its rows itself (`stream_source`).
            Input::Database { rows, spent } => (rows, spent),
        };
        if DB::COPY {
            // A group's rows stream into one COPY (in a savepoint) as they are read; the
            // group's text is kept until it is known whether the database took it.
            loop {
                let (chunks, to_copy) = tokio::sync::mpsc::channel(4);
                let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                let (copied, gathered) = tokio::join!(
                    DB::copy_chunks(&mut *sp, &self.into, &self.column_list, to_copy),
                    self.gather_group(&mut received, &spent, chunks, counts.seq)
                );
                let Some(group) = gathered? else {
                    sp.rollback().await?;
                    break;
                };
                match copied {
                    Ok(()) => sp.commit().await?,
                    Err(_) => sp.rollback().await?,
                }
                counts.seq += u64::try_from(group.rows.len()).unwrap_or(0);
                self.settle_group(&mut tx, group, copied, ctx, &mut counts, log)
                    .await?;
            }
        }
        while let Some(rows) = received.recv().await.transpose()?.flatten() {
            let done = self
                .write_batch(&mut tx, rows, &casts, ctx, &mut counts, log)
                .await?;
            let _ = spent.send(Box::new(done));
        }
        if let Some(limit) = &self.max
            && exceeds(limit, counts.rejected, counts.read)
        {
            return Err(LoadError::fatal(format!(
                "{} of {} row(s) rejected, more than `max` allows; see {} (nothing was loaded)",
                counts.rejected, counts.read, self.rejects
            )));
        }
        // The commit ledger's marker goes in with the rows (MySQL's `replace` swaps tables
        // after its transaction: its marker follows the swap).
        let swapped_later = self.dialect == Dialect::MySql && step.mode == LoadMode::Replace;
        if !swapped_later {
            self.mark::<DB>(&mut tx, step, ctx, &counts).await?;
        }
        if self.upsert
            && let Some((stage, _)) = &self.staging
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(self.drop_stage(stage)))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        } else if let Some((name, _)) = &self.staging {
            let bare = step
                .target
                .table
                .rsplit('.')
                .next()
                .unwrap_or(&step.target.table);
            let bare = self.dialect.ident(bare).map_err(LoadError::fatal)?;
            match self.dialect {
                // Transactional DDL: the swap commits with the rows.
                Dialect::Postgres | Dialect::Sqlite => {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP TABLE IF EXISTS {}; ALTER TABLE {name} RENAME TO {bare}",
                        self.target
                    )))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                }
                // DDL commits implicitly: commit the rows, then one atomic RENAME TABLE.
                Dialect::MySql => {
                    tx.commit().await?;
                    let old = self
                        .dialect
                        .ident(&format!("{}__weir_old", step.target.table))
                        .map_err(LoadError::fatal)?;
                    let mut conn = pool.acquire().await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                        .execute(&mut *conn)
                        .await?;
                    let exists = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "SELECT 1 FROM {} LIMIT 0",
                        self.target
                    )))
                    .execute(&mut *conn)
                    .await
                    .is_ok();
                    let rename = if exists {
                        format!(
                            "RENAME TABLE {} TO {old}, {name} TO {}",
                            self.target, self.target
                        )
                    } else {
                        format!("RENAME TABLE {name} TO {}", self.target)
                    };
                    sqlx::raw_sql(sqlx::AssertSqlSafe(rename))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                        .execute(&mut *conn)
                        .await?;
                    self.mark::<DB>(&mut conn, step, ctx, &counts).await?;
                }
            }
        } else {
            tx.commit().await?;
        }
        if self.on_error == OnError::Reject {
            self.create_latest_view(pool).await;
        }
        if counts.read != counts.loaded + counts.rejected {
            // The invariant is structural; this would be a bug, and must not pass silently.
            return Err(LoadError::fatal(format!(
                "internal error: read {} != loaded {} + rejected {}",
                counts.read, counts.loaded, counts.rejected
            )));
        }
        Ok(counts)
    }

    /// `<table>__rejects_latest`: the newest reject of each source line of each task (a rerun
    /// appends its rejects again; the history stays in `<table>__rejects`). Made once, after
    /// the commit; failing to make it does not fail the load.
    async fn create_latest_view<DB>(&self, pool: &sqlx::Pool<DB>)
    where
        DB: sqlx::Database,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    {
        let Ok(view) = self.dialect.ident(&format!("{}_latest", self.rejects_name)) else {
            return;
        };
        let create = match self.dialect {
            Dialect::Sqlite => "CREATE VIEW IF NOT EXISTS",
            Dialect::Postgres | Dialect::MySql => "CREATE OR REPLACE VIEW",
        };
        let sql = format!(
            "{create} {view} AS SELECT run_id, task_id, source_file, line_number, raw_row, reason, rejected_at \
             FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY task_id, source_file, line_number \
             ORDER BY rejected_at DESC, run_id DESC) AS weir_n FROM {} r) x WHERE weir_n = 1",
            self.rejects
        );
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await {
            tracing::debug!(error = %e, "creating the latest-rejects view failed");
        }
    }

    /// Where a row written by value came from; a typed database row's raw row is rebuilt from
    /// its values (the loaded columns only: an upsert's row also carries its staging number).
    fn origin_of(&self, (values, at): &(Vec<Value>, Reject)) -> Reject {
        let mut origin = at.clone();
        if matches!(origin.raw, Raw::Typed) {
            origin.raw = Raw::Fields(
                values
                    .iter()
                    .take(self.columns.names.len())
                    .map(value_text)
                    .collect(),
            );
        }
        origin
    }

    /// Drops an upsert's temporary stage, and only a temporary table of that name.
    fn drop_stage(&self, stage: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("DROP TABLE IF EXISTS pg_temp.{stage}"),
            Dialect::MySql => format!("DROP TEMPORARY TABLE IF EXISTS {stage}"),
            Dialect::Sqlite => format!("DROP TABLE IF EXISTS temp.{stage}"),
        }
    }

    /// Records in the commit ledger that this try's load committed (see [`super::ledger`]).
    async fn mark<DB>(
        &self,
        conn: &mut DB::Connection,
        step: &LoadStep,
        ctx: &LoadContext,
        counts: &Counts,
    ) -> Result<(), LoadError>
    where
        DB: sqlx::Database,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let Some(attempt) = &ctx.attempt else {
            return Ok(());
        };
        attempt
            .record::<DB>(conn, &outputs(step, ctx, counts, self.started))
            .await?;
        Ok(())
    }

    /// `upsert`: merges the staged rows `first..first + n` (one batch) into the target; a
    /// range the target refuses (a foreign key, a unique column, a check, a trigger) is merged
    /// again by halves down to the refused rows, which become rejects. `origin(i)` is where row
    /// `first + i` came from.
    async fn merge_staged<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        first: u64,
        n: usize,
        origin: impl Fn(usize) -> Reject,
        counts: &mut Counts,
    ) -> Result<Vec<Reject>, LoadError>
    where
        DB: WriteRows,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'r> Option<String>: sqlx::Decode<'r, DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let mut rejects = Vec::new();
        let Some((stage, _)) = self.staging.as_ref().filter(|_| self.upsert) else {
            return Ok(rejects);
        };
        if n == 0 {
            return Ok(rejects);
        }
        let seqs = |range: &std::ops::Range<usize>| {
            let at = |i: usize| first + u64::try_from(i).unwrap_or(u64::MAX);
            (at(range.start), at(range.end) - 1)
        };
        let mut try_range = async |tx: &mut sqlx::Transaction<'static, DB>, range| {
            let mut sp = sqlx::Connection::begin(&mut **tx).await?;
            match self.merge(&mut sp, stage, seqs(&range)).await {
                Ok((updated, inserted)) => {
                    sp.commit().await?;
                    counts.updated += updated;
                    counts.inserted += inserted;
                    Ok::<_, sqlx::Error>(None)
                }
                Err(e) => {
                    sp.rollback().await?;
                    Ok(Some(e))
                }
            }
        };
        let Some(error) = try_range(tx, 0..n).await? else {
            return Ok(rejects);
        };
        tracing::debug!(%error, "merge refused; narrowing down the refused rows");
        let reject = |i: usize, e: &sqlx::Error| Reject {
            reason: database_reason(e),
            ..origin(i)
        };
        if n == 1 {
            rejects.push(reject(0, &error));
        }
        let mut halving = Halving::new(n);
        while let Some(range) = halving.next_range() {
            if let Some(e) = try_range(tx, range.clone()).await?
                && halving.refused(range.clone())
            {
                rejects.push(reject(range.start, &e));
            }
        }
        // They were counted as loaded when they reached the staging table.
        counts.loaded -= u64::try_from(rejects.len()).unwrap_or(0);
        Ok(rejects)
    }

    /// Merges the staged rows numbered `seqs` (inclusive) into the target: rows whose key
    /// exists and whose other columns differ are updated (an unchanged row is not rewritten);
    /// rows with a new key are inserted. Returns (updated, inserted).
    async fn merge<DB>(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        stage: &str,
        seqs: (u64, u64),
    ) -> Result<(u64, u64), sqlx::Error>
    where
        DB: WriteRows,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'r> Option<String>: sqlx::Decode<'r, DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let d = self.dialect;
        let in_range = format!("s.{SEQ} BETWEEN {} AND {}", seqs.0, seqs.1);
        let quoted: Vec<String> = self
            .columns
            .names
            .iter()
            .map(|n| d.ident(n))
            .collect::<Result<_, _>>()
            .map_err(sqlx::Error::Protocol)?;
        let others: Vec<&String> = quoted.iter().filter(|q| !self.keys.contains(q)).collect();
        let join = self
            .keys
            .iter()
            .map(|k| format!("t.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let updated = if others.is_empty() {
            0
        } else {
            let differs = others
                .iter()
                .map(|c| match d {
                    Dialect::Postgres => format!("t.{c} IS DISTINCT FROM s.{c}"),
                    Dialect::Sqlite => format!("t.{c} IS NOT s.{c}"),
                    Dialect::MySql => format!("NOT (t.{c} <=> s.{c})"),
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let sql = match d {
                Dialect::Postgres | Dialect::Sqlite => format!(
                    "UPDATE {} AS t SET {} FROM {stage} AS s WHERE {join} AND ({differs}) AND {in_range}",
                    self.target,
                    others
                        .iter()
                        .map(|c| format!("{c} = s.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Dialect::MySql => format!(
                    "UPDATE {} AS t JOIN {stage} AS s ON {join} SET {} WHERE ({differs}) AND {in_range}",
                    self.target,
                    others
                        .iter()
                        .map(|c| format!("t.{c} = s.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await?;
            DB::affected(&result)
        };
        let list = quoted.join(", ");
        let from_stage = quoted
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let new_keys = format!(
            "FROM {stage} AS s WHERE {in_range} AND NOT EXISTS (SELECT 1 FROM {} AS t WHERE {join})",
            self.target
        );
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} ({list}) SELECT {from_stage} {new_keys}",
            self.target
        )))
        .execute(&mut **tx)
        .await?;
        Ok((updated, DB::affected(&result)))
    }

    /// Raises the high-water mark to a loaded row's cursor value.
    fn track_cursor(&self, values: &[Value], counts: &mut Counts) {
        let Some((i, _)) = &self.cursor else { return };
        let Some(v) = values.get(*i) else { return };
        Self::raise_cursor(v, counts);
    }

    /// Makes `v` the loaded cursor if it is higher.
    fn raise_cursor(v: &Value, counts: &mut Counts) {
        if value_text(v).is_none() {
            return;
        }
        let higher = counts
            .cursor
            .as_ref()
            .is_none_or(|c| compare(v, c) == Some(std::cmp::Ordering::Greater));
        if higher {
            counts.cursor = Some(v.clone());
        }
    }

    /// Inserts one batch: parsed rows in one multi-row INSERT (inside a savepoint); if the
    /// database refuses it, row by row (each in a savepoint) to reject only the bad rows.
    async fn write_batch<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        rows: Vec<InputRow>,
        casts: &[Option<&str>],
        ctx: &LoadContext,
        counts: &mut Counts,
        log: &LogSink,
    ) -> Result<Vec<(Vec<Value>, Reject)>, LoadError>
    where
        DB: WriteRows,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'r> Option<String>: sqlx::Decode<'r, DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let rows = self.past_cursor(rows, counts);
        counts.read += u64::try_from(rows.len()).unwrap_or(u64::MAX);
        // The batch's parsed rows, handed back to the caller to free.
        let mut loaded = Vec::new();
        let mut good: Vec<(Vec<Value>, Reject)> = Vec::with_capacity(rows.len());
        let mut rejects = Vec::new();
        for row in rows {
            let at = Reject {
                file: row.file,
                line: row.line,
                raw: row.raw,
                reason: String::new(),
            };
            match row.parsed {
                Ok(values) => good.push((values, at)),
                Err(reason) => rejects.push(Reject { reason, ..at }),
            }
        }
        let first_seq = counts.seq;
        if self.upsert {
            for (values, _) in &mut good {
                values.push(Value::BigInt(Some(
                    i64::try_from(counts.seq).unwrap_or(i64::MAX),
                )));
                counts.seq += 1;
            }
        }
        if !good.is_empty() {
            let values: Vec<&Vec<Value>> = good.iter().map(|(v, _)| v).collect();
            let mut sp = sqlx::Connection::begin(&mut **tx).await?;
            let inserted = self.insert(&mut sp, &values, casts).await;
            match inserted {
                Ok(()) => {
                    sp.commit().await?;
                    counts.loaded += u64::try_from(good.len()).unwrap_or(u64::MAX);
                    for (values, _) in &good {
                        self.track_cursor(values, counts);
                    }
                    loaded = good;
                }
                Err(batch_error) => {
                    sp.rollback().await?;
                    tracing::debug!(error = %batch_error, "batch refused; narrowing down the bad rows");
                    let reject = |row: usize, e: &sqlx::Error| Reject {
                        reason: database_reason(e),
                        ..self.origin_of(&good[row])
                    };
                    if good.len() == 1 {
                        rejects.push(reject(0, &batch_error));
                    }
                    let mut halving = Halving::new(good.len());
                    while let Some(range) = halving.next_range() {
                        let rows: Vec<&Vec<Value>> =
                            good[range.clone()].iter().map(|(v, _)| v).collect();
                        let mut sp = sqlx::Connection::begin(&mut **tx).await?;
                        match self.insert(&mut sp, &rows, casts).await {
                            Ok(()) => {
                                sp.commit().await?;
                                counts.loaded += u64::try_from(rows.len()).unwrap_or(u64::MAX);
                                for values in rows {
                                    self.track_cursor(values, counts);
                                }
                            }
                            Err(e) => {
                                sp.rollback().await?;
                                if halving.refused(range.clone()) {
                                    rejects.push(reject(range.start, &e));
                                }
                            }
                        }
                    }
                    loaded = good;
                }
            }
        }
        let refused = self
            .merge_staged(
                tx,
                first_seq,
                loaded.len(),
                |i| self.origin_of(&loaded[i]),
                counts,
            )
            .await?;
        rejects.extend(refused);
        self.record_rejects(tx, rejects, ctx, counts, log).await?;
        Ok(loaded)
    }

    /// Reads batches until a `COPY` group is full or the input ends (`None`: nothing left).
    /// Typed rows go back to the reader to be freed as soon as they are in `COPY` form.
    async fn gather_group(
        &self,
        received: &mut tokio::sync::mpsc::Receiver<Result<Option<Vec<InputRow>>, LoadError>>,
        spent: &std::sync::mpsc::Sender<Spent>,
        chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
        first_seq: u64,
    ) -> Result<Option<CopyGroup>, LoadError> {
        /// Bytes handed to the COPY at a time.
        const CHUNK: usize = 64 * 1024;
        // Bytes of `lines` handed to the COPY so far.
        let mut sent = 0;
        let mut group = CopyGroup {
            first_seq,
            seq_column: self.upsert,
            ..CopyGroup::default()
        };
        let mut any = false;
        // Counted over every row taken (rejects are held until the group is written too).
        let mut taken = 0;
        while taken < COPY_GROUP_ROWS.max(self.batch) && group.lines.len() < COPY_GROUP_BYTES {
            let Some(rows) = received.recv().await.transpose()?.flatten() else {
                break;
            };
            let first = !any;
            any = true;
            taken += rows.len();
            let mut counts = Counts::default();
            let rows = self.past_cursor(rows, &mut counts);
            group.skipped += counts.skipped;
            group.read += u64::try_from(rows.len()).unwrap_or(u64::MAX);
            let mut typed = Vec::with_capacity(rows.len());
            for row in rows {
                let at = Reject {
                    file: row.file,
                    line: row.line,
                    raw: row.raw,
                    reason: String::new(),
                };
                match row.parsed {
                    Ok(values) => {
                        for (i, value) in values.iter().enumerate() {
                            if i > 0 {
                                group.lines.push(b',');
                            }
                            copy_field(&mut group.lines, value);
                        }
                        if self.upsert {
                            let seq =
                                group.first_seq + u64::try_from(group.rows.len()).unwrap_or(0);
                            group.lines.push(b',');
                            group
                                .lines
                                .extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                        }
                        group.lines.push(b'\n');
                        if let Some((i, _)) = &self.cursor {
                            group.cursors.push(values.get(*i).cloned());
                        }
                        let Reject {
                            file, line, raw, ..
                        } = at;
                        // A database row's fields are in its COPY line: not kept twice.
                        let raw = match raw {
                            Raw::Fields(_) | Raw::Typed => Raw::InCopyGroup,
                            other => other,
                        };
                        group
                            .rows
                            .push((group.lines.len(), Origin { file, line, raw }));
                        typed.push(values);
                        if group.lines.len() - sent >= CHUNK {
                            // A COPY that already failed takes no more; the rows are still
                            // gathered for the retry.
                            let _ = chunks.send(group.lines[sent..].to_vec()).await;
                            sent = group.lines.len();
                        }
                    }
                    Err(reason) => group.rejects.push(Reject { reason, ..at }),
                }
            }
            let _ = spent.send(Box::new(typed));
            if first {
                // Sized once, from the first batch (growing by doubling left freed blocks).
                let per_row = group.lines.len() / taken.max(1) + 1;
                let want = (per_row * COPY_GROUP_ROWS.max(self.batch))
                    .min(COPY_GROUP_BYTES + group.lines.len());
                group.lines.reserve(want.saturating_sub(group.lines.len()));
            }
        }
        if group.lines.len() > sent {
            let _ = chunks.send(group.lines[sent..].to_vec()).await;
        }
        Ok(any.then_some(group))
    }

    /// Counts a `COPY` group the database took (`copied` is `Ok`), or, when it refused it,
    /// writes it again read batch by read batch, and a refused batch row by row, to reject
    /// only the bad rows; then records the rejects.
    async fn settle_group<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        group: CopyGroup,
        copied: Result<(), sqlx::Error>,
        ctx: &LoadContext,
        counts: &mut Counts,
        log: &LogSink,
    ) -> Result<(), LoadError>
    where
        DB: WriteRows,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'r> Option<String>: sqlx::Decode<'r, DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        counts.read += group.read;
        counts.skipped += group.skipped;
        let mut rejects = Vec::new();
        // Rows `from..to` in one COPY inside a savepoint; whether the database took them.
        let try_rows = async |tx: &mut sqlx::Transaction<'static, DB>, from: usize, to: usize| {
            let mut sp = sqlx::Connection::begin(&mut **tx).await?;
            let (chunks, to_copy) = tokio::sync::mpsc::channel(1);
            let lines = group.lines_of(from, to).to_vec();
            // The sender goes with its send: the COPY ends when it is dropped.
            let (copied, _) = tokio::join!(
                DB::copy_chunks(&mut *sp, &self.into, &self.column_list, to_copy),
                async move { chunks.send(lines).await }
            );
            match copied {
                Ok(()) => sp.commit().await.map(|()| Ok(())),
                Err(e) => sp.rollback().await.map(|()| Err(e)),
            }
        };
        let mut loaded: Vec<usize> = Vec::with_capacity(group.rows.len());
        let all = group.rows.len();
        match copied {
            Ok(()) => loaded.extend(0..all),
            Err(group_error) => {
                tracing::debug!(error = %group_error, "COPY refused; narrowing down the bad rows");
                let reject = |row: usize, e: &sqlx::Error| Reject {
                    reason: database_reason(e),
                    ..group.origin(row)
                };
                if all == 1 {
                    rejects.push(reject(0, &group_error));
                }
                let mut halving = Halving::new(all);
                while let Some(range) = halving.next_range() {
                    match try_rows(tx, range.start, range.end).await? {
                        Ok(()) => loaded.extend(range),
                        Err(e) => {
                            if halving.refused(range.clone()) {
                                rejects.push(reject(range.start, &e));
                            }
                        }
                    }
                }
            }
        }
        counts.loaded += u64::try_from(loaded.len()).unwrap_or(u64::MAX);
        for row in loaded {
            if let Some(Some(v)) = group.cursors.get(row) {
                Self::raise_cursor(v, counts);
            }
        }
        let refused = self
            .merge_staged(tx, group.first_seq, all, |i| group.origin(i), counts)
            .await?;
        rejects.extend(refused);
        rejects.extend(group.rejects);
        self.record_rejects(tx, rejects, ctx, counts, log).await
    }

    /// `incremental`: the rows past the stored cursor (the others are counted as skipped).
    fn past_cursor(&self, rows: Vec<InputRow>, counts: &mut Counts) -> Vec<InputRow> {
        match &self.cursor {
            Some((i, Some(after))) => rows
                .into_iter()
                .filter(|r| {
                    let old = r
                        .parsed
                        .as_ref()
                        .ok()
                        .and_then(|v| v.get(*i))
                        .is_some_and(|v| {
                            compare(v, after).is_some_and(|o| o != std::cmp::Ordering::Greater)
                        });
                    if old {
                        counts.skipped += 1;
                    }
                    !old
                })
                .collect(),
            _ => rows,
        }
    }

    /// Counts rejected rows and writes them to the rejects table, or fails the load when
    /// rejects are not kept or exceed `max`.
    async fn record_rejects<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        rejects: Vec<Reject>,
        ctx: &LoadContext,
        counts: &mut Counts,
        log: &LogSink,
    ) -> Result<(), LoadError>
    where
        DB: WriteRows,
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        /// Rows per `INSERT`: 7 binds a row stays under SQLite's 32,766 binds.
        const REJECTS_PER_INSERT: usize = 1000;
        if rejects.is_empty() {
            return Ok(());
        }
        if self.on_error == OnError::Fail {
            let first = &rejects[0];
            return Err(LoadError::fatal(format!(
                "{} line {}: {} (nothing was loaded; set `rejects: {{on_error: reject}}` to load the other rows)",
                first.file, first.line, first.reason
            )));
        }
        counts.rejected += u64::try_from(rejects.len()).unwrap_or(u64::MAX);
        if let Some(RejectLimit::Count(max)) = &self.max
            && counts.rejected > *max
        {
            return Err(LoadError::fatal(format!(
                "more than {max} row(s) rejected (the last: {} line {}: {}); nothing was loaded",
                rejects[rejects.len() - 1].file,
                rejects[rejects.len() - 1].line,
                rejects[rejects.len() - 1].reason
            )));
        }
        for r in rejects.iter().take(3) {
            log.note(format!("rejected {} line {}: {}", r.file, r.line, r.reason));
        }
        let room = REJECTS_IN_OUTPUTS.saturating_sub(counts.first_rejects.len());
        counts.first_rejects.extend(
            rejects
                .iter()
                .take(room)
                .map(|r| (Arc::clone(&r.file), r.line, r.reason.clone())),
        );
        let now = Utc::now();
        for chunk in rejects.chunks(REJECTS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<DB>::new(format!(
                "INSERT INTO {} (run_id, task_id, source_file, line_number, raw_row, reason, rejected_at) ",
                self.rejects
            ));
            insert.push_values(chunk, |mut b, r| {
                b.push_bind(ctx.run_id.clone())
                    .push_bind(ctx.task_id.clone())
                    .push_bind(r.file.to_string())
                    .push_bind(i64::try_from(r.line).unwrap_or(i64::MAX))
                    .push_bind(r.raw.text())
                    .push_bind(r.reason.clone())
                    .push_bind(now);
            });
            insert.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn insert<DB: WriteRows>(
        &self,
        conn: &mut sqlx::Transaction<'_, DB>,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        DB::write_rows(&mut **conn, &self.into, &self.column_list, rows, casts).await
    }
}

/// How a database takes a batch of typed rows: Postgres through `COPY`, the others through
/// multi-row `INSERT`s with bound values.
trait WriteRows: sqlx::Database {
    /// Whether [`WriteRows::copy_lines`] works (Postgres).
    const COPY: bool = false;

    /// The rows a statement changed.
    fn affected(result: &Self::QueryResult) -> u64;

    /// Writes rows already in `COPY` CSV form (one line each), as they come from `chunks`,
    /// with one `COPY` that ends when `chunks` closes.
    fn copy_chunks(
        _conn: &mut Self::Connection,
        _into: &str,
        _columns: &str,
        _chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send {
        async { Err(sqlx::Error::Protocol("COPY is Postgres only".into())) }
    }

    fn write_rows(
        conn: &mut Self::Connection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send;
}

impl WriteRows for sqlx::Postgres {
    const COPY: bool = true;

    fn affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn copy_chunks(
        conn: &mut sqlx::PgConnection,
        into: &str,
        columns: &str,
        mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), sqlx::Error> {
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY {into} ({columns}) FROM STDIN WITH (FORMAT csv)"
            ))
            .await?;
        while let Some(chunk) = chunks.recv().await {
            if let Err(e) = copy.send(chunk).await {
                let _ = copy.abort("weir: sending the rows failed").await;
                return Err(e);
            }
        }
        copy.finish().await?;
        Ok(())
    }

    async fn write_rows(
        conn: &mut sqlx::PgConnection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        _casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        // CSV: an unquoted empty field is NULL, a quoted one an empty string.
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY {into} ({columns}) FROM STDIN WITH (FORMAT csv)"
            ))
            .await?;
        // One buffer, sized once and reused, sent in small chunks: the server parses one
        // chunk while the next is written (a batch sent whole made client and server wait
        // for each other).
        const CHUNK: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
        for row in rows {
            for (i, value) in row.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                copy_field(&mut buf, value);
            }
            buf.push(b'\n');
            if buf.len() >= CHUNK {
                copy.send(buf.as_slice()).await?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_slice()).await?;
        }
        copy.finish().await?;
        Ok(())
    }
}

/// One value as a field of Postgres's CSV `COPY` format.
fn copy_field(buf: &mut Vec<u8>, value: &Value) {
    use std::io::Write as _;
    // Written in place (no string per value); NULL is an empty unquoted field. Writing to a
    // `Vec` cannot fail.
    let _ = match value {
        Value::Int(Some(v)) => {
            buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
            Ok(())
        }
        Value::BigInt(Some(v)) => {
            buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
            Ok(())
        }
        Value::Float(Some(v)) => write!(buf, "{v}"),
        Value::Bool(Some(v)) => {
            buf.extend_from_slice(if *v { b"true" } else { b"false" });
            Ok(())
        }
        Value::Date(Some(v)) => {
            push_date(buf, *v);
            Ok(())
        }
        Value::Timestamp(Some(v)) => {
            push_timestamp(buf, *v);
            Ok(())
        }
        Value::TimestampTz(Some(v)) => {
            push_timestamp(buf, v.naive_utc());
            buf.extend_from_slice(b"+00");
            Ok(())
        }
        // Quoted only when it must be (the server parses unquoted fields faster): an empty
        // string (unquoted is NULL), a delimiter, quote or line break, a leading backslash
        // (`\.` alone ends the data), or spaces at either end.
        Value::Text(Some(text)) => {
            let bytes = text.as_bytes();
            let quote = bytes.is_empty()
                || bytes[0] == b'\\'
                || bytes[0] == b' '
                || bytes[bytes.len() - 1] == b' '
                || bytes
                    .iter()
                    .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
            if quote {
                buf.push(b'"');
                for &b in bytes {
                    if b == b'"' {
                        buf.push(b'"');
                    }
                    buf.push(b);
                }
                buf.push(b'"');
            } else {
                buf.extend_from_slice(bytes);
            }
            Ok(())
        }
        _ => Ok(()),
    };
}

/// `n` with at least `width` digits (zero-padded), as `{n:0width$}` writes it.
fn push_padded(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n);
    buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    buf.extend_from_slice(text.as_bytes());
}

/// `YYYY-MM-DD` (years outside 0..=9999 as chrono writes them).
fn push_date(buf: &mut Vec<u8>, d: NaiveDate) {
    use chrono::Datelike;
    match u32::try_from(d.year()) {
        Ok(y) if y <= 9999 => push_padded(buf, y, 4),
        _ => {
            buf.extend_from_slice(d.to_string().as_bytes());
            return;
        }
    }
    buf.push(b'-');
    push_padded(buf, d.month(), 2);
    buf.push(b'-');
    push_padded(buf, d.day(), 2);
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` (the fraction without trailing zeros).
fn push_timestamp(buf: &mut Vec<u8>, t: NaiveDateTime) {
    use chrono::Timelike;
    push_date(buf, t.date());
    buf.push(b' ');
    push_padded(buf, t.hour(), 2);
    buf.push(b':');
    push_padded(buf, t.minute(), 2);
    buf.push(b':');
    // A leap second is nanosecond 1e9 and up: second 60.
    let (second, nanos) = match t.nanosecond() {
        n if n >= 1_000_000_000 => (t.second() + 1, n - 1_000_000_000),
        n => (t.second(), n),
    };
    push_padded(buf, second, 2);
    if nanos > 0 {
        buf.push(b'.');
        let start = buf.len();
        push_padded(buf, nanos, 9);
        while buf.len() > start + 1 && buf.last() == Some(&b'0') {
            buf.pop();
        }
    }
}

impl WriteRows for sqlx::MySql {
    fn affected(result: &sqlx::mysql::MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn write_rows(
        conn: &mut sqlx::MySqlConnection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        insert_values::<sqlx::MySql>(conn, into, columns, rows, casts).await
    }
}

impl WriteRows for sqlx::Sqlite {
    fn affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn write_rows(
        conn: &mut sqlx::SqliteConnection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        insert_values::<sqlx::Sqlite>(conn, into, columns, rows, casts).await
    }
}

/// Multi-row `INSERT`s with bound values.
async fn insert_values<DB>(
    conn: &mut DB::Connection,
    into: &str,
    columns: &str,
    rows: &[&Vec<Value>],
    casts: &[Option<&str>],
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> Option<i32>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<f64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<bool>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<NaiveDate>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<NaiveDateTime>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<DateTime<Utc>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    // Binds per statement stay under SQLite's 32,766 and MySQL's 65,535.
    let per_statement = (30_000 / casts.len().max(1)).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut q =
            sqlx::QueryBuilder::<DB>::new(format!("INSERT INTO {into} ({columns}) VALUES "));
        for (r, row) in chunk.iter().enumerate() {
            if r > 0 {
                q.push(", ");
            }
            q.push("(");
            for (i, value) in row.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                let cast = casts.get(i).copied().flatten();
                if cast.is_some() {
                    q.push("CAST(");
                }
                match value.clone() {
                    Value::Int(v) => q.push_bind(v),
                    Value::BigInt(v) => q.push_bind(v),
                    Value::Float(v) => q.push_bind(v),
                    Value::Text(v) => q.push_bind(v),
                    Value::Bool(v) => q.push_bind(v),
                    Value::Date(v) => q.push_bind(v),
                    Value::Timestamp(v) => q.push_bind(v),
                    Value::TimestampTz(v) => q.push_bind(v),
                };
                if let Some(c) = cast {
                    q.push(format!(" AS {c})"));
                }
            }
            q.push(")");
        }
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Orders two values of one column (`None`: NULL, or different types).
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(Some(x)), Value::Int(Some(y))) => Some(x.cmp(y)),
        (Value::BigInt(Some(x)), Value::BigInt(Some(y))) => Some(x.cmp(y)),
        (Value::Float(Some(x)), Value::Float(Some(y))) => x.partial_cmp(y),
        (Value::Text(Some(x)), Value::Text(Some(y))) => Some(x.cmp(y)),
        (Value::Bool(Some(x)), Value::Bool(Some(y))) => Some(x.cmp(y)),
        (Value::Date(Some(x)), Value::Date(Some(y))) => Some(x.cmp(y)),
        (Value::Timestamp(Some(x)), Value::Timestamp(Some(y))) => Some(x.cmp(y)),
        (Value::TimestampTz(Some(x)), Value::TimestampTz(Some(y))) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A value as the text a cursor is stored as (`None` for NULL).
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Int(x) => x.map(|x| x.to_string()),
        Value::BigInt(x) => x.map(|x| x.to_string()),
        Value::Float(x) => x.map(|x| x.to_string()),
        Value::Text(x) => x.clone(),
        Value::Bool(x) => x.map(|x| x.to_string()),
        Value::Date(x) => x.map(|x| x.format("%Y-%m-%d").to_string()),
        Value::Timestamp(x) => x.map(|x| x.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        Value::TimestampTz(x) => x.map(|x| x.to_rfc3339()),
    }
}

/// The database's own words for a refused row.
fn database_reason(e: &sqlx::Error) -> String {
    format!("refused by the database: {}", crate::conn::db_error(e))
}

fn exceeds(limit: &RejectLimit, rejected: u64, read: u64) -> bool {
    match limit {
        RejectLimit::Count(n) => rejected > *n,
        RejectLimit::Percent(p) => {
            let share: f64 = p.trim_end_matches('%').trim().parse().unwrap_or(0.0);
            #[expect(
                clippy::cast_precision_loss,
                reason = "row counts fit f64 exactly below 2^53"
            )]
            let over = (rejected as f64) > (read as f64) * share / 100.0;
            over
        }
    }
}

fn sql_type(dialect: Dialect, ty: ColumnType) -> &'static str {
    match (dialect, ty) {
        (Dialect::Postgres, ColumnType::Int) => "INTEGER",
        (Dialect::Postgres, ColumnType::Bigint) => "BIGINT",
        (Dialect::Postgres, ColumnType::Float) => "DOUBLE PRECISION",
        (Dialect::Postgres, ColumnType::Numeric) => "NUMERIC",
        (Dialect::Postgres, ColumnType::Text) => "TEXT",
        (Dialect::Postgres, ColumnType::Bool) => "BOOLEAN",
        (Dialect::Postgres, ColumnType::Date) => "DATE",
        (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMP",
        (Dialect::Postgres, ColumnType::Timestamptz) => "TIMESTAMPTZ",
        (Dialect::Postgres, ColumnType::Json) => "JSONB",
        (Dialect::MySql, ColumnType::Int) => "INT",
        (Dialect::MySql, ColumnType::Bigint) => "BIGINT",
        (Dialect::MySql, ColumnType::Float) => "DOUBLE",
        (Dialect::MySql, ColumnType::Numeric) => "DECIMAL(38, 10)",
        (Dialect::MySql, ColumnType::Text) => "TEXT",
        (Dialect::MySql, ColumnType::Bool) => "BOOLEAN",
        (Dialect::MySql, ColumnType::Date) => "DATE",
        (Dialect::MySql, ColumnType::Timestamp | ColumnType::Timestamptz) => "DATETIME(6)",
        (Dialect::MySql, ColumnType::Json) => "JSON",
        (Dialect::Sqlite, ColumnType::Int | ColumnType::Bigint | ColumnType::Bool) => "INTEGER",
        (Dialect::Sqlite, ColumnType::Float) => "REAL",
        (Dialect::Sqlite, ColumnType::Numeric) => "NUMERIC",
        (Dialect::Sqlite, _) => "TEXT",
    }
}

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
        assert!(!exceeds(&RejectLimit::Percent("5%".into()), 5, 100));
        assert!(exceeds(&RejectLimit::Percent("5%".into()), 6, 100));
    }
}
