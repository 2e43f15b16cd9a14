//! Reading a CSV file row by row so that every physical record is accounted for: a row with
//! the wrong number of fields is a reject (unless `allow_ragged`), an unterminated quote costs
//! the line it opened on and not the lines after it, a row that is not UTF-8 is a reject whose
//! raw bytes are kept, and each row remembers the byte range it came from.
//!
//! A local file is read in place. A stream (a file on a store, a compressed file) goes through
//! a [`Spool`]: its bytes are kept in an unnamed temporary file as they are read, so that a
//! rejected row is read back from it and a broken quote can be re-read; the file has no name,
//! so nothing is left on disk whatever happens to the process.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use weir_model::spec::{LoadSource, LoadStep};

use super::{Columns, FieldAt, InputRow, LoadError, Raw, parse_value};

/// The largest raw row kept with a reject; a longer one is cut (and says so).
const MAX_RAW: u64 = 1024 * 1024;

/// Resynchronisations after broken quotes a file may need before the load gives up on it (each
/// costs a re-read of what the broken quote swallowed).
const MAX_RESYNCS: u32 = 10_000;

/// What a CSV file is read from: the file itself, or a stream spooled as it is read.
pub(super) enum CsvInput {
    File {
        reader: std::fs::File,
        /// The same file, for reading rows back.
        back: Arc<std::fs::File>,
    },
    Spool(Spool),
}

impl CsvInput {
    /// A local file.
    pub(super) fn file(path: &Path, name: &str) -> Result<CsvInput, LoadError> {
        let open =
            || std::fs::File::open(path).map_err(|e| LoadError::fatal(format!("{name}: {e}")));
        Ok(CsvInput::File {
            reader: open()?,
            back: Arc::new(open()?),
        })
    }

    /// A stream, spooled.
    pub(super) fn spool(
        inner: Box<dyn std::io::BufRead + Send>,
        name: &str,
    ) -> Result<CsvInput, LoadError> {
        let file = tempfile::tempfile().map_err(|e| {
            LoadError::fatal(format!("{name}: a temporary file to read through: {e}"))
        })?;
        Ok(CsvInput::Spool(Spool {
            inner,
            file: Arc::new(file),
            written: 0,
            pos: 0,
        }))
    }

    /// Where rows are read back from.
    fn back(&self) -> Arc<std::fs::File> {
        match self {
            CsvInput::File { back, .. } => Arc::clone(back),
            CsvInput::Spool(s) => Arc::clone(&s.file),
        }
    }
}

impl Read for CsvInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            CsvInput::File { reader, .. } => reader.read(buf),
            CsvInput::Spool(s) => s.read(buf),
        }
    }
}

impl Seek for CsvInput {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match self {
            CsvInput::File { reader, .. } => reader.seek(to),
            CsvInput::Spool(s) => s.seek(to),
        }
    }
}

/// A stream whose bytes are written to an unnamed temporary file as they are read: reading may
/// go back to any byte already read (a seek), and rows are read back by position.
pub(super) struct Spool {
    inner: Box<dyn std::io::BufRead + Send>,
    file: Arc<std::fs::File>,
    /// Bytes taken from the stream (and written to the file).
    written: u64,
    /// The next byte to read.
    pos: u64,
}

impl Read for Spool {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.written {
            let want = usize::try_from(self.written - self.pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.file.read_at(&mut buf[..want], self.pos)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        self.file.write_all_at(&buf[..n], self.written)?;
        self.written += n as u64;
        self.pos = self.written;
        Ok(n)
    }
}

impl Seek for Spool {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(_) => None,
        };
        match target {
            Some(p) if p <= self.written => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a stream can only go back to bytes already read",
            )),
        }
    }
}

/// One CSV file being read.
pub(super) struct CsvRows {
    name: Arc<str>,
    reader: csv::Reader<CsvInput>,
    /// For reading a rejected row's bytes back.
    file: Arc<std::fs::File>,
    at: Vec<FieldAt>,
    /// Fields a row must have: the header's count, or the columns' without a header.
    expected: usize,
    ragged: bool,
    record: csv::ByteRecord,
    resyncs: u32,
}

impl CsvRows {
    pub(super) fn open(
        step: &LoadStep,
        columns: &Columns,
        input: CsvInput,
        name: Arc<str>,
    ) -> Result<CsvRows, LoadError> {
        let file = input.back();
        let mut reader = reader(&step.source, input)?;
        let (at, expected) = if step.source.header.unwrap_or(true) {
            let headers = reader
                .headers()
                .map_err(|e| LoadError::fatal(format!("{name}: the header: {e}")))?
                .clone();
            let at = columns
                .names
                .iter()
                .zip(&columns.specs)
                .map(|(column, spec)| {
                    let wanted = spec.from.as_deref().unwrap_or(column);
                    headers
                        .iter()
                        .position(|h| h.trim() == wanted)
                        .map(FieldAt)
                        .ok_or_else(|| {
                            LoadError::fatal(format!("{name}: no column `{wanted}` in the header"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (at, headers.len())
        } else {
            (
                (0..columns.names.len()).map(FieldAt).collect(),
                columns.names.len(),
            )
        };
        Ok(CsvRows {
            name,
            reader,
            file,
            at,
            expected,
            ragged: step.source.allow_ragged,
            record: csv::ByteRecord::new(),
            resyncs: 0,
        })
    }

    /// The next physical record (`None` at the end of the file), parsed or rejected.
    pub(super) fn next_row(&mut self, columns: &Columns) -> Result<Option<InputRow>, LoadError> {
        let read = self.reader.read_byte_record(&mut self.record);
        let end = self.reader.position().byte();
        let start = self.record.position().map_or(end, csv::Position::byte);
        let line = self
            .record
            .position()
            .map_or_else(|| self.reader.position().line(), csv::Position::line);
        let name = Arc::clone(&self.name);
        let row = move |raw: Raw, parsed: Result<_, String>| InputRow {
            file: Arc::clone(&name),
            line,
            raw,
            parsed,
        };
        match read {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => {
                return Ok(Some(row(
                    self.range(start, end),
                    Err(format!("unreadable csv row: {e}")),
                )));
            }
        }
        let fields = self.record.len();
        if fields != self.expected && !self.ragged {
            let spans_lines = self.record.iter().any(|f| f.contains(&b'\n'));
            if spans_lines {
                // A quote opened on this line and closed lines later (or never): the lines in
                // between are rows of their own. This line is rejected alone and reading goes
                // on at the next one.
                let spanned = self.reader.position().line().saturating_sub(line);
                let next = self.line_end(start)?;
                self.resync(next, line + 1)?;
                return Ok(Some(row(
                    self.range(start, next),
                    Err(format!(
                        "a quote opened on this line is not closed on it (read as one row, it ran over {} line(s) into {fields} field(s) where {} are expected); the line is rejected alone",
                        spanned.max(2),
                        self.expected
                    )),
                )));
            }
            return Ok(Some(row(
                self.range(start, end),
                Err(format!(
                    "{fields} field(s) where {} are expected (set `allow_ragged: true` on the source to read missing fields as empty and ignore extra ones)",
                    self.expected
                )),
            )));
        }
        let parsed = parse(columns, &self.record, &self.at);
        Ok(Some(row(self.range(start, end), parsed)))
    }

    fn range(&self, start: u64, end: u64) -> Raw {
        Raw::Range {
            file: Arc::clone(&self.file),
            start,
            end,
        }
    }

    /// The byte just past the end of the line that starts at `start`.
    fn line_end(&self, start: u64) -> Result<u64, LoadError> {
        let mut buf = [0_u8; 8192];
        let mut at = start;
        loop {
            let n = self
                .file
                .read_at(&mut buf, at)
                .map_err(|e| LoadError::fatal(format!("{}: {e}", self.name)))?;
            if n == 0 {
                return Ok(at);
            }
            if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                return Ok(at + u64::try_from(i).unwrap_or(0) + 1);
            }
            at += u64::try_from(n).unwrap_or(0);
        }
    }

    /// Goes on reading at byte `byte`, which starts line `line`.
    fn resync(&mut self, byte: u64, line: u64) -> Result<(), LoadError> {
        self.resyncs += 1;
        if self.resyncs > MAX_RESYNCS {
            return Err(LoadError::fatal(format!(
                "{} line {}: more than {MAX_RESYNCS} lines with unbalanced quotes; is `quote` right for this file?",
                self.name,
                line.saturating_sub(1)
            )));
        }
        let mut at = csv::Position::new();
        at.set_byte(byte).set_line(line);
        self.reader
            .seek(at)
            .map_err(|e| LoadError::fatal(format!("{}: {e}", self.name)))
    }
}

/// A CSV reader as the source describes it. Records may have any length: the count is checked
/// per row, so that a short or long row is a reject rather than a failed load.
pub(super) fn reader<R: Read>(source: &LoadSource, input: R) -> Result<csv::Reader<R>, LoadError> {
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(source.header.unwrap_or(true)).flexible(true);
    if let Some(d) = source.delimiter {
        b.delimiter(
            u8::try_from(d)
                .map_err(|_| LoadError::fatal("the delimiter must be one ASCII character"))?,
        );
    }
    if let Some(q) = source.quote {
        b.quote(
            u8::try_from(q)
                .map_err(|_| LoadError::fatal("the quote must be one ASCII character"))?,
        );
    }
    Ok(b.from_reader(input))
}

/// The header of a CSV file, as column names.
pub(super) fn header(
    step: &LoadStep,
    input: impl Read,
    name: &str,
) -> Result<Vec<String>, LoadError> {
    let mut reader = reader(&step.source, input)?;
    Ok(reader
        .headers()
        .map_err(|e| LoadError::fatal(format!("{name}: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect())
}

/// The loaded columns of one record. An empty field is NULL: CSV has no other way to write it.
fn parse(
    columns: &Columns,
    record: &csv::ByteRecord,
    at: &[FieldAt],
) -> Result<Vec<super::Value>, String> {
    let mut values = Vec::with_capacity(columns.names.len());
    for ((name, spec), FieldAt(i)) in columns.names.iter().zip(&columns.specs).zip(at) {
        let field = match record.get(*i) {
            None | Some([]) => None,
            Some(bytes) => Some(std::str::from_utf8(bytes).map_err(|e| {
                format!(
                    "`{name}` is not valid UTF-8 (byte {} of the field); convert the file to UTF-8",
                    e.valid_up_to() + 1
                )
            })?),
        };
        values.push(parse_value(name, spec, field)?);
    }
    Ok(values)
}

/// A rejected row's bytes as text for the rejects table: as they are when they are UTF-8
/// without a NUL byte; otherwise each byte that is not (and each NUL) is written `\xNN` and a
/// backslash `\\`, so that nothing of the original is lost.
pub(super) fn raw_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => text.to_owned(),
        _ => {
            let mut out = String::with_capacity(bytes.len() + 16);
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\0' => out.push_str("\\x00"),
                        c => out.push(c),
                    }
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02X}"));
                }
            }
            out
        }
    }
}

/// The bytes `start..end` of a file, without the line's terminator, cut at [`MAX_RAW`].
pub(super) fn read_range(file: &std::fs::File, start: u64, end: u64) -> Vec<u8> {
    let len = end.saturating_sub(start).min(MAX_RAW);
    let mut buf = vec![0_u8; usize::try_from(len).unwrap_or(0)];
    let read = file.read_exact_at(&mut buf, start);
    if read.is_err() {
        return b"(the row could not be read back from the file)".to_vec();
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    if end - start > MAX_RAW {
        buf.extend_from_slice(format!("... (cut: {} bytes in all)", end - start).as_bytes());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_keeps_every_byte() {
        assert_eq!(raw_text(b"1,Ada,\\x"), "1,Ada,\\x");
        assert_eq!(raw_text(b"1,A\0da"), "1,A\\x00da");
        assert_eq!(raw_text(b"1,\xE9t\xE9,\\"), "1,\\xE9t\\xE9,\\\\");
    }
}
