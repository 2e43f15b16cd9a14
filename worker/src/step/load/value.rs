//! Typed values of a load: a field parsed by its column's type (dates and timestamps in
//! their formats), compared, and shown as text.

use super::*;

/// A typed value ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
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

/// Parses one field as a column's type. `None` is NULL (an empty CSV field, a JSON null or a
/// missing key). Text is kept exactly as written (a JSON `""` stays an empty string); other
/// types ignore surrounding spaces, and blank is NULL.
pub(super) fn parse_value(
    column: &str,
    spec: &ColumnSpec,
    field: Option<&str>,
) -> Result<Value, String> {
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
pub(super) fn iso_date(t: &str) -> Option<NaiveDate> {
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
pub(super) fn text_problem(column: &str, spec: &ColumnSpec, text: Option<&str>) -> Option<String> {
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
pub(super) fn iso_timestamp(t: &str) -> Option<NaiveDateTime> {
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

/// Orders two values of one column (`None`: NULL, or different types).
pub(super) fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
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
pub(super) fn value_text(v: &Value) -> Option<String> {
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
