//! `kind: export`: a table or a query streamed to a CSV (with a header), JSON-lines or Parquet
//! file, on the local disk or a store (`s3://…`, `gs://…`, `az://…`, `sftp://…`), optionally
//! compressed.
//!
//! Rows are streamed from the database to the destination (memory holds a buffer of encoded
//! bytes, or one Parquet row group). The file appears at `to` only when it is complete: an
//! object store's upload is committed at the end (and aborted on failure), a local or SFTP
//! file is written under a temporary name beside `to` and renamed. A failed export leaves
//! nothing at `to` (and whatever was there before stays).
//!
//! CSV and JSON lines hold values as the database prints them; NULL is an empty field in CSV
//! and `null` in JSON lines (CSV cannot tell NULL from an empty string: use JSON lines or
//! Parquet for an exact round trip). Parquet columns are typed from the query's columns
//! (`parquet`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use weir_model::spec::{Compression as StepCompression, ExportFormat, ExportStep};
use weir_storage::{Compression, Encoder, Location, ObjectWriter};

use super::sqltext::{column_names, row_values};
use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;
use crate::step::db::SqlDb;

mod parquet;

/// Encoded bytes gathered before they are handed to the destination.
const FLUSH_AT: usize = 1024 * 1024;

/// Runs a rendered `export` step.
pub async fn run(step: &ExportStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    match export(step, conns).await {
        Ok((rows, bytes, to)) => {
            log.note(format!("exported {rows} row(s), {bytes} bytes to {to}"));
            let mut outputs = serde_json::Map::new();
            outputs.insert("rows".into(), rows.into());
            outputs.insert("bytes".into(), bytes.into());
            outputs.insert("path".into(), to.to_string().into());
            TaskOutcome::Succeeded { outputs }
        }
        Err(Failed { error, retryable }) => {
            log.note(format!(
                "export failed, nothing written at {}: {error}",
                step.to
            ));
            TaskOutcome::Failed { error, retryable }
        }
    }
}

/// Why an export failed.
struct Failed {
    error: String,
    retryable: bool,
}

impl Failed {
    fn fatal(error: impl Into<String>) -> Failed {
        Failed {
            error: error.into(),
            retryable: false,
        }
    }
}

impl From<weir_storage::StorageError> for Failed {
    fn from(e: weir_storage::StorageError) -> Failed {
        Failed {
            error: e.message,
            retryable: e.retryable,
        }
    }
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Failed {
        Failed {
            retryable: crate::conn::is_transient(&e),
            error: crate::conn::db_error(&e),
        }
    }
}

/// The format an export writes: `format`, else `to`'s extension (a compression extension
/// ignored), else CSV.
pub(crate) fn format_of(step: &ExportStep) -> ExportFormat {
    step.format.unwrap_or_else(|| {
        let (_, name) = Compression::of_name(&step.to);
        match name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("jsonl" | "ndjson") => ExportFormat::Jsonl,
            Some("parquet" | "pq") => ExportFormat::Parquet,
            _ => ExportFormat::Csv,
        }
    })
}

async fn export(step: &ExportStep, conns: &Connections) -> Result<(u64, u64, Location), Failed> {
    let pool = conns.pool(&step.conn).await.map_err(|e| Failed {
        retryable: e.retryable(),
        error: e.to_string(),
    })?;
    let sql = match (&step.table, &step.query) {
        (Some(t), None) => format!(
            "SELECT * FROM {}",
            pool.dialect().ident(t).map_err(|e| Failed::fatal(e.0))?
        ),
        (None, Some(q)) => q.clone(),
        _ => return Err(Failed::fatal("export needs `table` or `query`")),
    };
    let to = Location::parse(&step.to)?;
    let stores = conns.stores();
    let mut writer = stores.create(&to).await?;
    let streamed = match &pool {
        DataPool::Postgres(p) => stream(p, &sql, step, &mut writer).await,
        DataPool::MySql(p) => stream(p, &sql, step, &mut writer).await,
        DataPool::Sqlite(p) => stream(p, &sql, step, &mut writer).await,
    };
    let rows = match streamed {
        Ok(rows) => rows,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    let bytes = writer.commit().await?;
    if to.is_local() {
        // The file is complete on disk before the task says so.
        if let Ok(f) = std::fs::File::open(&to.path) {
            let _ = f.sync_all();
        }
    }
    Ok((rows, bytes, to))
}

/// Where the rows of one export go, encoded.
trait Sink {
    /// One row of text values (`None`: NULL).
    fn row(
        &mut self,
        names: &[String],
        types: &[&str],
        values: Vec<Option<String>>,
    ) -> Result<(), Failed>;
    /// Encoded bytes ready to upload (possibly none).
    fn take(&mut self) -> Vec<u8>;
    /// Ends the file; the last bytes.
    fn finish(self: Box<Self>) -> Result<Vec<u8>, Failed>;
}

async fn stream<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    step: &ExportStep,
    writer: &mut ObjectWriter,
) -> Result<u64, Failed>
where
    DB: SqlDb,
{
    use futures_util::TryStreamExt;
    use sqlx::{Column as _, Row as _, TypeInfo as _};
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(DB::on(&mut *conn));
    let mut sink: Option<Box<dyn Sink + Send>> = None;
    let mut names: Vec<String> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    let mut count = 0_u64;
    while let Some(row) = rows.try_next().await? {
        let sink = match &mut sink {
            Some(s) => s,
            None => {
                names = column_names(&row);
                types = row
                    .columns()
                    .iter()
                    .map(|c| c.type_info().name().to_ascii_uppercase())
                    .collect();
                sink.insert(new_sink(step)?)
            }
        };
        let values = row_values::<DB>(&row)?;
        count += 1;
        let type_names: Vec<&str> = types.iter().map(String::as_str).collect();
        sink.row(&names, &type_names, values)?;
        let ready = sink.take();
        if !ready.is_empty() {
            writer.write(ready).await?;
        }
    }
    // No rows: the file still has its shape where the format can say it without rows (a CSV
    // header needs names, which an empty result does not give).
    let sink = match sink {
        Some(s) => s,
        None => new_sink(step)?,
    };
    let last = sink.finish()?;
    if !last.is_empty() {
        writer.write(last).await?;
    }
    Ok(count)
}

fn new_sink(step: &ExportStep) -> Result<Box<dyn Sink + Send>, Failed> {
    let format = format_of(step);
    if format == ExportFormat::Parquet {
        return Ok(Box::new(parquet::ParquetSink::new(step)));
    }
    let compression = match step.compression {
        Some(StepCompression::Gzip) => Compression::Gzip,
        Some(StepCompression::Zstd) => Compression::Zstd,
        Some(StepCompression::None) => Compression::None,
        Some(other) => {
            return Err(Failed::fatal(format!(
                "`compression: {other:?}` is a Parquet codec; CSV and JSON lines take gzip, zstd or none"
            )));
        }
        None => Compression::of_name(&step.to).0,
    };
    let encoder =
        Arc::new(Mutex::new(compression.encoder().map_err(|e| {
            Failed::fatal(format!("starting {compression:?}: {e}"))
        })?));
    Ok(Box::new(TextSink {
        format,
        csv: csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Shared(Arc::clone(&encoder))),
        encoder,
        header_written: false,
    }))
}

/// The compressor, shared by the CSV writer (which buffers in front of it) and the sink.
struct Shared(Arc<Mutex<Encoder>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lock(m: &Mutex<Encoder>) -> std::sync::MutexGuard<'_, Encoder> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CSV or JSON lines, through a compressor.
struct TextSink {
    format: ExportFormat,
    csv: csv::Writer<Shared>,
    encoder: Arc<Mutex<Encoder>>,
    header_written: bool,
}

impl Sink for TextSink {
    fn row(
        &mut self,
        names: &[String],
        _: &[&str],
        values: Vec<Option<String>>,
    ) -> Result<(), Failed> {
        if self.format == ExportFormat::Csv {
            if !self.header_written {
                self.csv
                    .write_record(names)
                    .map_err(|e| Failed::fatal(e.to_string()))?;
                self.header_written = true;
            }
            self.csv
                .write_record(values.iter().map(|v| v.as_deref().unwrap_or("")))
                .map_err(|e| Failed::fatal(e.to_string()))?;
            return Ok(());
        }
        let object: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .cloned()
            .zip(
                values
                    .into_iter()
                    .map(|v| v.map_or(serde_json::Value::Null, serde_json::Value::String)),
            )
            .collect();
        let mut line = serde_json::to_vec(&object).map_err(|e| Failed::fatal(e.to_string()))?;
        line.push(b'\n');
        lock(&self.encoder)
            .write_all(&line)
            .map_err(|e| Failed::fatal(format!("encoding: {e}")))
    }

    fn take(&mut self) -> Vec<u8> {
        if lock(&self.encoder).pending() < FLUSH_AT {
            return Vec::new();
        }
        // The CSV writer's own buffer first, so that bytes stay in order.
        let _ = self.csv.flush();
        lock(&self.encoder).take()
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, Failed> {
        self.csv
            .flush()
            .map_err(|e| Failed::fatal(format!("encoding: {e}")))?;
        drop(self.csv);
        let encoder = Arc::try_unwrap(self.encoder)
            .map_err(|_| Failed::fatal("the encoder is still in use"))?
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        encoder
            .finish()
            .map_err(|e| Failed::fatal(format!("encoding: {e}")))
    }
}
