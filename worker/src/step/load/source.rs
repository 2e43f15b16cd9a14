//! Where a load's rows come from: the files a glob matches (and their format), a downloaded
//! HTTP source, or a table or query on another connection read by a task of its own.

use super::*;

/// The format a file or URL name implies: `.csv`, `.jsonl`/`.ndjson`, `.json`, `.parquet` (any
/// case, a URL's query and a compression extension, `.gz` or `.zst`, ignored).
pub(super) fn format_of_name(name: &str) -> Option<SourceFormat> {
    let (_, path) = Compression::of_name(name);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "tsv" | "txt" => Some(SourceFormat::Csv),
        "jsonl" | "ndjson" => Some(SourceFormat::Jsonl),
        "json" => Some(SourceFormat::Json),
        "parquet" | "pq" => Some(SourceFormat::Parquet),
        _ => None,
    }
}

/// The format a response's `Content-Type` implies.
pub(super) fn format_of_content_type(content_type: &str) -> Option<SourceFormat> {
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

/// A file a load reads: where it is, the name rejects and outputs give it, and how its bytes
/// are compressed.
#[derive(Debug, Clone)]
pub(super) struct SourceFile {
    pub(super) at: Location,
    pub(super) label: Arc<str>,
    pub(super) compression: Compression,
}

impl SourceFile {
    /// A file at `at`, compressed as `source` says or as its name implies.
    pub(super) fn new(at: Location, label: Option<String>, source: &LoadSource) -> SourceFile {
        let compression = match source.compression {
            Some(c) => storage_compression(c),
            None => Compression::of_name(&at.path).0,
        };
        SourceFile {
            label: label.unwrap_or_else(|| at.to_string()).into(),
            at,
            compression,
        }
    }

    /// A local file read as it is: a CSV's rejected rows are read back from it by position.
    pub(super) fn local_plain(&self) -> Option<&Path> {
        (self.at.is_local() && self.compression == Compression::None)
            .then(|| Path::new(&self.at.path))
    }

    /// The file's bytes as a stream, decompressed. A file on a store is read in ranged parts as
    /// the stream is consumed; call it off the async runtime's threads (a blocking task).
    pub(super) fn open(
        &self,
        stores: &Stores,
        handle: &tokio::runtime::Handle,
    ) -> Result<Box<dyn std::io::BufRead + Send>, LoadError> {
        const BUF: usize = 256 * 1024;
        let raw: Box<dyn std::io::BufRead + Send> = if self.at.is_local() {
            let file = std::fs::File::open(&self.at.path)
                .map_err(|e| LoadError::fatal(format!("{}: {e}", self.label)))?;
            Box::new(std::io::BufReader::with_capacity(BUF, file))
        } else {
            let reader = handle
                .block_on(stores.open(&self.at))
                .map_err(LoadError::from)?;
            Box::new(std::io::BufReader::with_capacity(
                BUF,
                tokio_util::io::SyncIoBridge::new_with_handle(reader, handle.clone()),
            ))
        };
        self.compression.decoder(raw).map_err(|e| {
            LoadError::fatal(format!(
                "{}: not {:?} data: {e}",
                self.label, self.compression
            ))
        })
    }
}

/// A step's compression as the store library names it (a Parquet codec on a source is refused
/// when the DAG is read).
pub(crate) fn storage_compression(c: weir_model::spec::Compression) -> Compression {
    match c {
        weir_model::spec::Compression::Gzip => Compression::Gzip,
        weir_model::spec::Compression::Zstd => Compression::Zstd,
        _ => Compression::None,
    }
}

/// The files a `file` source names: every match of its glob, on the local disk or a store, in
/// path order. None at all: a retryable error (the files may not have arrived yet).
pub(super) async fn matching_files(
    source: &LoadSource,
    pattern: &str,
    stores: &Stores,
) -> Result<Vec<SourceFile>, LoadError> {
    let at = Location::parse(pattern).map_err(LoadError::from)?;
    let found = stores.list(&at).await.map_err(LoadError::from)?;
    if found.is_empty() {
        let relative = if at.is_local() && !Path::new(&at.path).is_absolute() {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            format!(" (relative to {cwd})")
        } else {
            String::new()
        };
        return Err(LoadError {
            // The file may not have arrived yet.
            retryable: true,
            message: format!("no file matches `{pattern}`{relative}"),
        });
    }
    Ok(found
        .into_iter()
        .map(|o| SourceFile::new(o.location, None, source))
        .collect())
}

/// Where rows come from.
pub(super) enum Input {
    /// Files, in name order.
    Files {
        files: Vec<SourceFile>,
        format: SourceFormat,
        stores: Stores,
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
pub(super) type Batches = tokio::sync::mpsc::Receiver<Result<Option<Vec<InputRow>>, LoadError>>;

/// Starts streaming `sql` on `source`: returns the column names (empty when there are no
/// rows), where to send how the rows are typed, and the batches of typed rows. The reader
/// reads, types and batches on its own task (reading and typing the source, and writing the
/// target, overlap), at most a batch ahead of the writer.
pub(super) async fn stream_source(
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

pub(super) async fn produce<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    label: &Arc<str>,
    names_tx: tokio::sync::oneshot::Sender<Vec<String>>,
    typing: tokio::sync::oneshot::Receiver<Typing>,
    tx: &tokio::sync::mpsc::Sender<Result<Option<Vec<InputRow>>, LoadError>>,
) -> Result<(), String>
where
    DB: SqlDb,
{
    use futures_util::TryStreamExt;
    let db = |e: sqlx::Error| crate::conn::db_error(&e);
    let mut conn = pool.acquire().await.map_err(db)?;
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(DB::on(&mut *conn));
    let Some(first) = rows.try_next().await.map_err(db)? else {
        let _ = names_tx.send(Vec::new());
        let _ = tx.send(Ok(None)).await;
        return Ok(());
    };
    let _ = names_tx.send(crate::step::sqltext::column_names(&first));
    // The load gave up before typing anything (a missing column): stop.
    let Ok(typing) = typing.await else {
        return Ok(());
    };
    let mut number = 1_u64;
    let mut batch = Vec::with_capacity(typing.batch.min(10_000));
    batch.push(typing.row::<DB>(&first, label, number).map_err(db)?);
    while let Some(row) = rows.try_next().await.map_err(db)? {
        number += 1;
        batch.push(typing.row::<DB>(&row, label, number).map_err(db)?);
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
