//! The rows of a set of files as text, for steps that read files without loading them (the
//! `file` side of a `validate` check): the files a glob matches, local or on a store, read as a
//! load reads them (CSV, JSON lines, JSON, Parquet, compressed or not), every column as the
//! text of its value.

use super::*;

/// A file set's rows, streamed in batches by a reader of its own.
pub(crate) struct FileRows {
    /// The column names (the first file's).
    pub(crate) names: Vec<String>,
    /// Batches of rows, each value as text (`None`: null or empty); `Ok(None)` after the last.
    pub(crate) batches: tokio::sync::mpsc::Receiver<Result<Option<TextRows>, String>>,
}

/// Rows of text values.
pub(crate) type TextRows = Vec<Vec<Option<String>>>;

/// Rows read per batch.
const BATCH: usize = 5000;

/// Starts reading the files `pattern` matches, in `format` (default: from the name).
///
/// # Errors
/// No file matches, or the first file's columns cannot be read.
pub(crate) async fn open(
    pattern: &str,
    format: Option<SourceFormat>,
    stores: &Stores,
) -> Result<FileRows, String> {
    let source = LoadSource {
        file: Some(pattern.to_owned()),
        format,
        ..LoadSource::default()
    };
    let format = format
        .or_else(|| format_of_name(pattern))
        .unwrap_or(SourceFormat::Csv);
    let step = LoadStep {
        source,
        target: weir_model::spec::LoadTarget {
            conn: String::new(),
            table: String::new(),
            create: CreateMode::Never,
        },
        columns: None,
        column_sets: Default::default(),
        column_set: None,
        mode: LoadMode::Append,
        key: Vec::new(),
        batch_size: 10_000,
        rejects: None,
        incremental: None,
    };
    let error = |e: LoadError| e.message;
    let files = matching_files(&step.source, pattern, stores)
        .await
        .map_err(error)?;
    let mut columns = file_columns(&step, &files, format, stores)
        .await
        .map_err(error)?;
    // Every value as its text: nothing is typed away.
    for spec in &mut columns.specs {
        spec.ty = ColumnType::Text;
    }
    let names = columns.names.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let stores = stores.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut reader = RowReader {
            step: &step,
            columns: &columns,
            format,
            files: &files,
            stores,
            handle,
            batch: BATCH,
            next: 0,
            current: None,
        };
        loop {
            let batch = match reader.next_batch(BATCH) {
                Ok(Some(rows)) => rows
                    .into_iter()
                    .map(|row| match row.parsed {
                        Ok(values) => Ok(values.iter().map(value_text).collect()),
                        Err(reason) => Err(format!("{} line {}: {reason}", row.file, row.line)),
                    })
                    .collect::<Result<Vec<_>, String>>()
                    .map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e.message),
            };
            let last = !matches!(batch, Ok(Some(_)));
            if tx.blocking_send(batch).is_err() || last {
                return;
            }
        }
    });
    Ok(FileRows { names, batches: rx })
}
