//! Reading rows out of a source: CSV, JSON lines and JSON arrays into typed rows, each with
//! its file and line for rejects.

use super::*;

/// How a database source's reader types its rows, sent to it once the columns are known
/// (from the first row's names and the target's types).
pub(super) struct Typing {
    pub(super) columns: Columns,
    /// Source position of each loaded column.
    pub(super) at: Vec<usize>,
    /// Rows per batch.
    pub(super) batch: usize,
    pub(super) to_free: std::sync::mpsc::Receiver<Spent>,
}

impl Typing {
    /// One source row as a typed input row, read from the row's own text (only a text column
    /// is copied out of it); a row that does not type keeps all its fields for the reject.
    pub(super) fn row<DB: SqlDb>(
        &self,
        row: &DB::Row,
        file: &Arc<str>,
        line: u64,
    ) -> Result<InputRow, sqlx::Error> {
        let mut typed = Vec::with_capacity(self.at.len());
        for ((name, spec), i) in self
            .columns
            .names
            .iter()
            .zip(&self.columns.specs)
            .zip(&self.at)
        {
            let field = DB::get_str(row, *i)?;
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
                        raw: Raw::Fields(crate::step::sqltext::row_values::<DB>(row)?),
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

/// Where a column's field is in a csv record.
pub(super) struct FieldAt(pub(super) usize);

/// Reads every row of the files, in order, a batch at a time (memory holds one batch).
pub(super) struct RowReader<'a> {
    pub(super) step: &'a LoadStep,
    pub(super) columns: &'a Columns,
    pub(super) format: SourceFormat,
    pub(super) files: &'a [SourceFile],
    pub(super) stores: Stores,
    /// The runtime a store's streams run on (this reader runs on a blocking thread).
    pub(super) handle: tokio::runtime::Handle,
    /// Rows per batch.
    pub(super) batch: usize,
    /// The next file to open.
    pub(super) next: usize,
    pub(super) current: Option<Source>,
}

/// The file being read.
pub(super) enum Source {
    Csv(CsvRows),
    Jsonl {
        name: Arc<str>,
        lines: Box<dyn std::io::BufRead + Send>,
        /// Lines read so far.
        number: u64,
    },
    Json {
        name: Arc<str>,
        array: JsonArray<Box<dyn std::io::BufRead + Send>>,
    },
    Parquet(ParquetRows),
}

impl<'a> RowReader<'a> {
    /// The next rows, at most `batch`; `None` once every file is read.
    pub(super) fn next_batch(&mut self, batch: usize) -> Result<Option<Vec<InputRow>>, LoadError> {
        let mut rows = Vec::with_capacity(batch.min(10_000));
        while rows.len() < batch {
            if self.current.is_none() {
                let Some(file) = self.files.get(self.next) else {
                    break;
                };
                self.next += 1;
                self.current = Some(self.open(file)?);
            }
            let row = match self.current.as_mut() {
                Some(Source::Csv(csv)) => csv.next_row(self.columns)?,
                Some(Source::Jsonl {
                    name,
                    lines,
                    number,
                }) => next_json_line(name, lines.as_mut(), number, self.columns),
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
                Some(Source::Parquet(p)) => p.next_row(self.columns)?,
                None => None,
            };
            match row {
                Some(r) => rows.push(r),
                None => self.current = None,
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }

    pub(super) fn open(&self, file: &SourceFile) -> Result<Source, LoadError> {
        let name = Arc::clone(&file.label);
        Ok(match self.format {
            SourceFormat::Csv => {
                let input = match file.local_plain() {
                    Some(path) => CsvInput::file(path, &name)?,
                    None => CsvInput::spool(file.open(&self.stores, &self.handle)?, &name)?,
                };
                Source::Csv(CsvRows::open(self.step, self.columns, input, name)?)
            }
            SourceFormat::Jsonl => Source::Jsonl {
                lines: file.open(&self.stores, &self.handle)?,
                name,
                number: 0,
            },
            SourceFormat::Json => {
                let array = JsonArray::new(file.open(&self.stores, &self.handle)?);
                Source::Json { name, array }
            }
            SourceFormat::Parquet => Source::Parquet(ParquetRows::open(
                file,
                &self.stores,
                &self.handle,
                self.columns,
                self.batch,
            )?),
        })
    }
}

/// The next non-blank line of a JSON-lines file, parsed (`None` at its end). A line that is not
/// UTF-8 is a reject that keeps its bytes.
pub(super) fn next_json_line(
    name: &Arc<str>,
    lines: &mut (dyn std::io::BufRead + Send),
    number: &mut u64,
    columns: &Columns,
) -> Option<InputRow> {
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

pub(super) fn parse_json(columns: &Columns, line: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) => parse_object(columns, value),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// The columns of one JSON object (a JSON-lines line, a JSON array's element).
pub(super) fn parse_object(
    columns: &Columns,
    value: serde_json::Value,
) -> Result<Vec<Value>, String> {
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
