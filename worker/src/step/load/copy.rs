//! Postgres' fast path: rows encoded as `COPY` text, in groups bounded in rows and bytes.

use super::*;

/// Rows gathered for one Postgres `COPY`, already in its CSV form: a `COPY` spans several
/// read batches (each `COPY` and its savepoint cost the server about 2 ms, a seventh of a
/// 10,000-row batch), while memory holds only text, not typed rows.
#[derive(Default)]
pub(super) struct CopyGroup {
    /// The rows' `COPY` lines, one after the other.
    pub(super) lines: Vec<u8>,
    /// Per parsed row: its line's end in `lines`, and where it came from.
    pub(super) rows: Vec<(usize, Origin)>,
    /// `incremental`: per parsed row, its cursor value (empty otherwise).
    pub(super) cursors: Vec<Option<Value>>,
    /// Rows that did not parse.
    pub(super) rejects: Vec<Reject>,
    pub(super) read: u64,
    pub(super) skipped: u64,
    /// `upsert`: the staging sequence number of the group's first row (row `i` has
    /// `first_seq + i`).
    pub(super) first_seq: u64,
    /// Whether each line ends with the staging sequence number (`upsert`).
    pub(super) seq_column: bool,
}

impl CopyGroup {
    /// Where row `i` came from, its raw row read back from its `COPY` line when it was a
    /// database row's (as a JSON array of its fields, like [`Raw::Fields`]).
    pub(super) fn origin(&self, i: usize) -> Reject {
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
    pub(super) fn lines_of(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 { 0 } else { self.rows[from - 1].0 };
        let end = if to == 0 { 0 } else { self.rows[to - 1].0 };
        &self.lines[start..end]
    }
}

/// Rows per Postgres `COPY` at most (at least one read batch). Each `COPY` ends with a wait
/// for the server and a savepoint; fewer, larger ones were a tenth faster on a 1M-row copy.
pub(super) const COPY_GROUP_ROWS: usize = 250_000;

/// Text per Postgres `COPY` at most: the group's text is kept until the server took it (to
/// write it again in halves when it refused a row), so this bounds a load's memory.
pub(super) const COPY_GROUP_BYTES: usize = 6 * 1024 * 1024;

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
pub(super) fn copy_field(buf: &mut Vec<u8>, value: &Value) {
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
pub(super) fn push_padded(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n);
    buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    buf.extend_from_slice(text.as_bytes());
}

/// `YYYY-MM-DD` (years outside 0..=9999 as chrono writes them).
pub(super) fn push_date(buf: &mut Vec<u8>, d: NaiveDate) {
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
pub(super) fn push_timestamp(buf: &mut Vec<u8>, t: NaiveDateTime) {
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
