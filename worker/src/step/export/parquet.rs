//! Parquet written from a query's rows: each column typed from the database's type of it
//! (integers, floats, decimals, booleans, dates, timestamps with and without zone; anything
//! else, JSON included, as UTF-8 text), `row_group_size` rows per row group, each column
//! compressed with the codec of `compression` (snappy by default).
//!
//! A decimal column's scale is the largest the first row group holds (a `numeric(12,2)` always
//! prints two decimals); a later value with more decimals fails the export, naming its row,
//! rather than lose digits.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use weir_model::spec::{Compression as StepCompression, ExportStep};

use super::{Failed, Sink};

/// Rows per row group unless `row_group_size` says otherwise.
const DEFAULT_ROW_GROUP: usize = 100_000;

/// A column's type in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    BigInt,
    Float,
    /// Decimal, with its scale once known.
    Decimal(Option<i8>),
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Text,
}

/// The file's type of a database column type (as sqlx names it, upper case).
fn kind_of(db_type: &str) -> Kind {
    match db_type {
        "INT2" | "INT4" | "INT" | "SMALLINT" | "MEDIUMINT" | "TINYINT" | "SMALLSERIAL"
        | "SERIAL" => Kind::Int,
        // SQLite's integers are 64-bit whatever the declared type.
        "INT8" | "BIGINT" | "BIGSERIAL" | "INT UNSIGNED" | "INTEGER" => Kind::BigInt,
        "FLOAT4" | "FLOAT8" | "REAL" | "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" => Kind::Float,
        "NUMERIC" | "DECIMAL" => Kind::Decimal(None),
        "BOOL" | "BOOLEAN" => Kind::Bool,
        "DATE" => Kind::Date,
        "TIMESTAMP" | "DATETIME" => Kind::Timestamp,
        "TIMESTAMPTZ" => Kind::TimestampTz,
        _ => Kind::Text,
    }
}

/// Rows gathered for the current row group, then written.
pub(super) struct ParquetSink {
    codec: Codec,
    row_group: usize,
    kinds: Vec<Kind>,
    /// The rows of the first row group, kept as text until the decimals' scales are known.
    first: Vec<Vec<Option<String>>>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    rows_in_group: usize,
    writer: Option<ArrowWriter<Vec<u8>>>,
    schema: Option<Arc<Schema>>,
    names: Vec<String>,
    /// Rows taken so far.
    rows: u64,
}

impl ParquetSink {
    pub(super) fn new(step: &ExportStep) -> ParquetSink {
        let codec = match step.compression {
            None | Some(StepCompression::Snappy) => Codec::SNAPPY,
            Some(StepCompression::Zstd) => Codec::ZSTD(ZstdLevel::default()),
            Some(StepCompression::Gzip) => Codec::GZIP(GzipLevel::default()),
            Some(StepCompression::Lz4) => Codec::LZ4_RAW,
            Some(StepCompression::None) => Codec::UNCOMPRESSED,
        };
        ParquetSink {
            codec,
            row_group: step.row_group_size.map_or(DEFAULT_ROW_GROUP, |n| {
                usize::try_from(n).unwrap_or(DEFAULT_ROW_GROUP)
            }),
            kinds: Vec::new(),
            first: Vec::new(),
            builders: Vec::new(),
            rows_in_group: 0,
            writer: None,
            schema: None,
            names: Vec::new(),
            rows: 0,
        }
    }

    /// Fixes the schema from the first row group's rows and starts the file.
    fn start(&mut self) -> Result<(), Failed> {
        for (i, kind) in self.kinds.iter_mut().enumerate() {
            if let Kind::Decimal(None) = kind {
                let scale = self
                    .first
                    .iter()
                    .filter_map(|r| r[i].as_deref())
                    .map(decimal_scale)
                    .max()
                    .unwrap_or(0);
                *kind = Kind::Decimal(Some(i8::try_from(scale.min(38)).unwrap_or(38)));
            }
        }
        let fields: Vec<Field> = self
            .names
            .iter()
            .zip(&self.kinds)
            .map(|(name, kind)| Field::new(name, data_type(*kind), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(self.codec)
            .set_max_row_group_row_count(Some(self.row_group))
            .set_created_by(concat!("weir ", env!("CARGO_PKG_VERSION")).to_owned())
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))
            .map_err(|e| Failed::fatal(format!("starting the Parquet file: {e}")))?;
        self.builders = self.kinds.iter().map(|k| builder(*k)).collect();
        self.writer = Some(writer);
        self.schema = Some(schema);
        let first = std::mem::take(&mut self.first);
        for (n, row) in first.into_iter().enumerate() {
            self.append(row).map_err(|mut e| {
                e.error = format!("row {}: {}", n + 1, e.error);
                e
            })?;
        }
        self.flush_group()
    }

    fn append(&mut self, row: Vec<Option<String>>) -> Result<(), Failed> {
        for (((value, kind), builder), name) in row
            .into_iter()
            .zip(&self.kinds)
            .zip(&mut self.builders)
            .zip(&self.names)
        {
            push(builder.as_mut(), *kind, value.as_deref())
                .map_err(|why| Failed::fatal(format!("`{name}`: {why}")))?;
        }
        self.rows_in_group += 1;
        Ok(())
    }

    /// Writes the rows gathered as a record batch (the writer closes a row group every
    /// `row_group` rows).
    fn flush_group(&mut self) -> Result<(), Failed> {
        if self.rows_in_group == 0 {
            return Ok(());
        }
        let (Some(writer), Some(schema)) = (&mut self.writer, &self.schema) else {
            return Ok(());
        };
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let batch = RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| Failed::fatal(format!("building a row group: {e}")))?;
        writer
            .write(&batch)
            .map_err(|e| Failed::fatal(format!("writing Parquet: {e}")))?;
        self.rows_in_group = 0;
        Ok(())
    }
}

/// Rows per record batch handed to the Parquet writer.
const BATCH: usize = 8192;

impl Sink for ParquetSink {
    fn row(
        &mut self,
        names: &[String],
        types: &[&str],
        values: Vec<Option<String>>,
    ) -> Result<(), Failed> {
        if self.names.is_empty() {
            self.names = names.to_vec();
            self.kinds = types.iter().map(|t| kind_of(t)).collect();
        }
        self.rows += 1;
        if self.writer.is_none() {
            self.first.push(values);
            if self.first.len() >= self.row_group.min(DEFAULT_ROW_GROUP) {
                self.start()?;
            }
            return Ok(());
        }
        let row = self.rows;
        self.append(values).map_err(|mut e| {
            e.error = format!("row {row}: {}", e.error);
            e
        })?;
        if self.rows_in_group >= BATCH {
            self.flush_group()?;
        }
        Ok(())
    }

    fn take(&mut self) -> Vec<u8> {
        match &mut self.writer {
            Some(w) if w.inner().len() >= super::FLUSH_AT => std::mem::take(w.inner_mut()),
            _ => Vec::new(),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, Failed> {
        if self.writer.is_none() {
            self.start()?;
        }
        self.flush_group()?;
        let Some(writer) = self.writer.take() else {
            return Ok(Vec::new());
        };
        writer
            .into_inner()
            .map_err(|e| Failed::fatal(format!("closing the Parquet file: {e}")))
    }
}

fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Int => DataType::Int32,
        Kind::BigInt => DataType::Int64,
        Kind::Float => DataType::Float64,
        Kind::Decimal(scale) => DataType::Decimal128(38, scale.unwrap_or(0)),
        Kind::Bool => DataType::Boolean,
        Kind::Date => DataType::Date32,
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::Text => DataType::Utf8,
    }
}

fn builder(kind: Kind) -> Box<dyn ArrayBuilder> {
    match kind {
        Kind::Int => Box::new(Int32Builder::new()),
        Kind::BigInt => Box::new(Int64Builder::new()),
        Kind::Float => Box::new(Float64Builder::new()),
        Kind::Decimal(scale) => Box::new(
            Decimal128Builder::new()
                .with_precision_and_scale(38, scale.unwrap_or(0))
                .unwrap_or_default(),
        ),
        Kind::Bool => Box::new(BooleanBuilder::new()),
        Kind::Date => Box::new(Date32Builder::new()),
        Kind::Timestamp => Box::new(TimestampMicrosecondBuilder::new()),
        Kind::TimestampTz => Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        Kind::Text => Box::new(StringBuilder::new()),
    }
}

/// Decimals after the point in a number's text.
fn decimal_scale(text: &str) -> usize {
    text.split_once('.').map_or(0, |(_, f)| f.trim().len())
}

/// Appends one value, parsed from the database's text of it.
fn push(builder: &mut dyn ArrayBuilder, kind: Kind, value: Option<&str>) -> Result<(), String> {
    let any = builder.as_any_mut();
    let bad = |what: &str, t: &str| format!("`{t}` is not {what}");
    macro_rules! put {
        ($ty:ty, $parse:expr) => {{
            let b = any
                .downcast_mut::<$ty>()
                .ok_or("a builder of another type")?;
            match value {
                None => b.append_null(),
                Some(t) => b.append_value($parse(t.trim())?),
            }
        }};
    }
    match kind {
        Kind::Int => put!(Int32Builder, |t: &str| t
            .parse::<i32>()
            .map_err(|_| bad("an int", t))),
        Kind::BigInt => put!(Int64Builder, |t: &str| t
            .parse::<i64>()
            .map_err(|_| bad("a bigint", t))),
        Kind::Float => put!(Float64Builder, |t: &str| t
            .parse::<f64>()
            .map_err(|_| bad("a float", t))),
        Kind::Decimal(scale) => {
            let scale = scale.unwrap_or(0);
            put!(Decimal128Builder, |t: &str| decimal(t, scale))
        }
        Kind::Bool => put!(BooleanBuilder, |t: &str| match t {
            "t" | "true" | "1" | "TRUE" => Ok(true),
            "f" | "false" | "0" | "FALSE" => Ok(false),
            _ => Err(bad("a boolean", t)),
        }),
        Kind::Date => put!(Date32Builder, |t: &str| {
            let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad("a date", t))?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("no epoch")?;
            i32::try_from((d - epoch).num_days()).map_err(|_| bad("a date", t))
        }),
        Kind::Timestamp => put!(TimestampMicrosecondBuilder, |t: &str| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .map(|n| n.and_utc().timestamp_micros())
                .ok_or_else(|| bad("a timestamp", t))
        }),
        Kind::TimestampTz => put!(TimestampMicrosecondBuilder, |t: &str| {
            ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"]
                .iter()
                .find_map(|f| DateTime::parse_from_str(t, f).ok())
                .map(|d| d.timestamp_micros())
                .ok_or_else(|| bad("a timestamp with a zone", t))
        }),
        Kind::Text => put!(StringBuilder, |t: &str| Ok::<_, String>(t.to_owned())),
    }
    Ok(())
}

/// A decimal's text as an integer of `scale` decimals; more decimals than that is an error
/// (no digit is dropped).
fn decimal(text: &str, scale: i8) -> Result<i128, String> {
    let scale = usize::try_from(scale).unwrap_or(0);
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if fraction.len() > scale {
        return Err(format!(
            "`{text}` has {} decimals; the file's column, typed from the first row group, has {scale} (cast the column in the query to fix its scale)",
            fraction.len()
        ));
    }
    let all: String = format!("{whole}{fraction:0<scale$}");
    if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a decimal number"));
    }
    all.parse::<i128>()
        .map(|n| sign * n)
        .map_err(|_| format!("`{text}` has more than 38 digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_every_digit_or_fail() {
        assert_eq!(decimal("12.5", 2), Ok(1250));
        assert_eq!(decimal("-0.01", 2), Ok(-1));
        assert_eq!(decimal("7", 3), Ok(7000));
        assert!(decimal("1.234", 2).unwrap_err().contains("3 decimals"));
        assert!(decimal("1e5", 0).is_err());
        assert_eq!(decimal_scale("10.250"), 3);
    }
}
