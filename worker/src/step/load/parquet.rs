//! Reading Parquet files, on the local disk or a store: the footer first, then one row group at
//! a time as record batches of `batch_size` rows (ranged reads, never the whole file), each
//! value typed by its column's type and checked like a CSV field; nested values (lists,
//! structs, maps) become JSON.
//!
//! Without `columns`, the file's schema gives the columns and their types: integers `int` or
//! `bigint`, floating point `float`, decimals `numeric`, strings `text`, booleans `bool`, dates
//! `date`, timestamps `timestamp` (`timestamptz` when the file marks them UTC-adjusted), nested
//! and anything else `json` or `text`.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray as _;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use weir_model::spec::{ColumnSpec, ColumnType};
use weir_storage::{RangeReader, Stores};

use super::{Columns, InputRow, LoadError, Raw, SourceFile, Value, parse_value};

/// A Parquet file's bytes, read by range from its store.
struct ParquetSource {
    ranges: Arc<RangeReader>,
}

fn external(e: weir_storage::StorageError) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ParquetSource {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        let ranges = Arc::clone(&self.ranges);
        Box::pin(async move { ranges.read(range).await.map_err(external) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        let reader = Arc::clone(&self.ranges);
        Box::pin(async move { reader.fetch(ranges).await.map_err(external) })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.ranges.size();
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

/// Opens a Parquet file's record batches of `batch` rows.
async fn open_stream(
    file: &SourceFile,
    stores: &Stores,
    batch: usize,
) -> Result<ParquetRecordBatchStream<ParquetSource>, LoadError> {
    let ranges = stores.ranges(&file.at).await?;
    let source = ParquetSource {
        ranges: Arc::new(ranges),
    };
    ParquetRecordBatchStreamBuilder::new(source)
        .await
        .map_err(|e| not_parquet(file, &e))?
        .with_batch_size(batch.max(1))
        .build()
        .map_err(|e| not_parquet(file, &e))
}

fn not_parquet(file: &SourceFile, e: &parquet::errors::ParquetError) -> LoadError {
    match e {
        parquet::errors::ParquetError::External(inner) => LoadError {
            message: format!("{}: {inner}", file.label),
            retryable: true,
        },
        other => LoadError::fatal(format!(
            "{}: not a readable Parquet file: {other}",
            file.label
        )),
    }
}

/// A file's columns and types, from its schema.
pub(super) async fn schema_columns(
    file: &SourceFile,
    stores: &Stores,
) -> Result<Columns, LoadError> {
    let stream = open_stream(file, stores, 1).await?;
    let schema = stream.schema();
    Ok(Columns {
        names: schema.fields().iter().map(|f| f.name().clone()).collect(),
        specs: schema
            .fields()
            .iter()
            .map(|f| ColumnSpec {
                ty: column_type(f.data_type()),
                not_null: false,
                from: None,
                format: None,
            })
            .collect(),
    })
}

/// The load type of an Arrow type.
fn column_type(t: &DataType) -> ColumnType {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColumnType::Int
        }
        DataType::Int64 | DataType::UInt32 => ColumnType::Bigint,
        DataType::UInt64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ColumnType::Numeric,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float,
        DataType::Boolean => ColumnType::Bool,
        DataType::Date32 | DataType::Date64 => ColumnType::Date,
        DataType::Timestamp(_, None) => ColumnType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColumnType::Timestamptz,
        t if nested(t) => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

fn nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// One Parquet file being read: its batches, turned into rows a batch at a time.
pub(super) struct ParquetRows {
    name: Arc<str>,
    stream: ParquetRecordBatchStream<ParquetSource>,
    handle: tokio::runtime::Handle,
    /// The column of each loaded column in the file's batches.
    at: Vec<usize>,
    rows: VecDeque<InputRow>,
    /// Rows read so far (a row's "line" in rejects is its number in the file, from 1).
    number: u64,
}

impl ParquetRows {
    /// Opens a file (on a blocking thread: the store is read through `handle`).
    pub(super) fn open(
        file: &SourceFile,
        stores: &Stores,
        handle: &tokio::runtime::Handle,
        columns: &Columns,
        batch: usize,
    ) -> Result<ParquetRows, LoadError> {
        let stream = handle.block_on(open_stream(file, stores, batch))?;
        let schema = stream.schema();
        let at = columns
            .names
            .iter()
            .zip(&columns.specs)
            .map(|(name, spec)| {
                let wanted = spec.from.as_deref().unwrap_or(name);
                schema.index_of(wanted).map_err(|_| {
                    LoadError::fatal(format!(
                        "{}: no column `{wanted}` in the file (it has {})",
                        file.label,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ParquetRows {
            name: Arc::clone(&file.label),
            stream,
            handle: handle.clone(),
            at,
            rows: VecDeque::new(),
            number: 0,
        })
    }

    /// The next row (`None` at the end of the file).
    pub(super) fn next_row(&mut self, columns: &Columns) -> Result<Option<InputRow>, LoadError> {
        if self.rows.is_empty() {
            let next = self.handle.block_on(self.stream.next());
            match next {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(match e {
                        parquet::errors::ParquetError::External(inner) => LoadError {
                            message: format!("{}: {inner}", self.name),
                            retryable: true,
                        },
                        other => LoadError::fatal(format!("{}: {other}", self.name)),
                    });
                }
                Some(Ok(batch)) => self.take_batch(&batch, columns)?,
            }
        }
        Ok(self.rows.pop_front())
    }

    /// Types every row of a batch.
    fn take_batch(&mut self, batch: &RecordBatch, columns: &Columns) -> Result<(), LoadError> {
        let views = self
            .at
            .iter()
            .map(|i| View::of(batch.column(*i)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| LoadError::fatal(format!("{}: {e}", self.name)))?;
        for row in 0..batch.num_rows() {
            self.number += 1;
            let mut values = Vec::with_capacity(views.len());
            let mut failed = None;
            for ((view, name), spec) in views.iter().zip(&columns.names).zip(&columns.specs) {
                match view.value(row, name, spec) {
                    Ok(v) => values.push(v),
                    Err(reason) => {
                        failed = Some(reason);
                        break;
                    }
                }
            }
            let (raw, parsed) = match failed {
                None => (Raw::Typed, Ok(values)),
                Some(reason) => (
                    Raw::Fields(views.iter().map(|v| v.text(row)).collect()),
                    Err(reason),
                ),
            };
            self.rows.push_back(InputRow {
                file: Arc::clone(&self.name),
                line: self.number,
                raw,
                parsed,
            });
        }
        Ok(())
    }
}

/// A column of a batch, cast to the few Arrow types rows are read from.
enum View {
    Int(ArrayRef),
    BigInt(ArrayRef),
    Float(ArrayRef),
    Bool(ArrayRef),
    Str(ArrayRef),
    Date(ArrayRef),
    /// Microseconds; `true` when the values are instants (UTC-adjusted).
    Timestamp(ArrayRef, bool),
    /// Nested values as JSON text, by row.
    Json(Vec<Option<String>>),
    /// Anything else, as text (decimals, unsigned 64-bit integers, binary, times).
    Text(Vec<Option<String>>),
}

impl View {
    fn of(array: &ArrayRef) -> Result<View, String> {
        let cast = |to: &DataType| arrow_cast::cast(array, to).map_err(|e| e.to_string());
        Ok(match array.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16 => View::Int(cast(&DataType::Int32)?),
            DataType::Int64 | DataType::UInt32 => View::BigInt(cast(&DataType::Int64)?),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                View::Float(cast(&DataType::Float64)?)
            }
            DataType::Boolean => View::Bool(Arc::clone(array)),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                View::Str(cast(&DataType::Utf8)?)
            }
            DataType::Date32 | DataType::Date64 => View::Date(cast(&DataType::Date32)?),
            DataType::Timestamp(_, tz) => View::Timestamp(
                cast(&DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?,
                tz.is_some(),
            ),
            t if nested(t) => View::Json(json_texts(array)?),
            _ => {
                let options = arrow_cast::display::FormatOptions::default();
                let formatter =
                    arrow_cast::display::ArrayFormatter::try_new(array.as_ref(), &options)
                        .map_err(|e| e.to_string())?;
                View::Text(
                    (0..array.len())
                        .map(|i| array.is_valid(i).then(|| formatter.value(i).to_string()))
                        .collect(),
                )
            }
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            View::Int(a)
            | View::BigInt(a)
            | View::Float(a)
            | View::Bool(a)
            | View::Str(a)
            | View::Date(a)
            | View::Timestamp(a, _) => a.is_null(row),
            View::Json(t) | View::Text(t) => t[row].is_none(),
        }
    }

    /// The value at `row` as `spec`'s type: directly where the types agree, else through its
    /// text, parsed like a CSV field.
    fn value(&self, row: usize, name: &str, spec: &ColumnSpec) -> Result<Value, String> {
        if self.is_null(row) {
            return parse_value(name, spec, None);
        }
        let direct = match (self, spec.ty) {
            (View::Int(a), ColumnType::Int) => {
                Some(Value::Int(Some(a.as_primitive::<Int32Type>().value(row))))
            }
            (View::Int(a), ColumnType::Bigint) => Some(Value::BigInt(Some(i64::from(
                a.as_primitive::<Int32Type>().value(row),
            )))),
            (View::BigInt(a), ColumnType::Bigint) => Some(Value::BigInt(Some(
                a.as_primitive::<Int64Type>().value(row),
            ))),
            (View::Float(a), ColumnType::Float) => {
                let f = a.as_primitive::<Float64Type>().value(row);
                f.is_finite().then_some(Value::Float(Some(f)))
            }
            (View::Bool(a), ColumnType::Bool) => Some(Value::Bool(Some(a.as_boolean().value(row)))),
            (View::Date(a), ColumnType::Date) => a
                .as_primitive::<Date32Type>()
                .value_as_date(row)
                .map(|d| Value::Date(Some(d))),
            (View::Timestamp(a, _), ColumnType::Timestamp) => a
                .as_primitive::<TimestampMicrosecondType>()
                .value_as_datetime(row)
                .map(|t| Value::Timestamp(Some(t))),
            (View::Timestamp(a, _), ColumnType::Timestamptz) => a
                .as_primitive::<TimestampMicrosecondType>()
                .value_as_datetime(row)
                .map(|t| Value::TimestampTz(Some(t.and_utc()))),
            (View::Str(a), _) => {
                return parse_value(name, spec, Some(a.as_string::<i32>().value(row)));
            }
            _ => None,
        };
        match direct {
            Some(v) => Ok(v),
            None => parse_value(name, spec, self.text(row).as_deref()),
        }
    }

    /// The value at `row` as text (what a reject keeps, and what a value of another type is
    /// parsed from).
    fn text(&self, row: usize) -> Option<String> {
        if self.is_null(row) {
            return None;
        }
        Some(match self {
            View::Int(a) => a.as_primitive::<Int32Type>().value(row).to_string(),
            View::BigInt(a) => a.as_primitive::<Int64Type>().value(row).to_string(),
            View::Float(a) => a.as_primitive::<Float64Type>().value(row).to_string(),
            View::Bool(a) => a.as_boolean().value(row).to_string(),
            View::Str(a) => a.as_string::<i32>().value(row).to_owned(),
            View::Date(a) => a
                .as_primitive::<Date32Type>()
                .value_as_date(row)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            View::Timestamp(a, instant) => {
                let t = a
                    .as_primitive::<TimestampMicrosecondType>()
                    .value_as_datetime(row);
                match (t, instant) {
                    (Some(t), true) => t
                        .and_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    (Some(t), false) => t.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
                    (None, _) => String::new(),
                }
            }
            View::Json(t) | View::Text(t) => t[row].clone().unwrap_or_default(),
        })
    }
}

/// A nested column's values as JSON text, one per row (`None` for a null).
fn json_texts(array: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    let field = arrow_schema::Field::new("v", array.data_type().clone(), true);
    let batch = RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(vec![field])),
        vec![Arc::clone(array)],
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(&mut out);
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    let mut texts = Vec::with_capacity(array.len());
    for (i, line) in out.split(|b| *b == b'\n').take(array.len()).enumerate() {
        if array.is_null(i) {
            texts.push(None);
            continue;
        }
        let object: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        texts.push(object.get("v").map(serde_json::Value::to_string));
    }
    Ok(texts)
}
