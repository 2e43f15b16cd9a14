//! Dates in DAG files: `2021-01-01`, `2021-01-01T06:00:00` (in the DAG's time zone) or an
//! RFC 3339 timestamp with an offset.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A date or timestamp as written; [`DateSpec::resolve`] places it in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSpec {
    /// A calendar day: its midnight in the DAG's time zone.
    Date(NaiveDate),
    /// A wall-clock time in the DAG's time zone.
    Local(NaiveDateTime),
    /// An instant with an explicit offset.
    Instant(DateTime<FixedOffset>),
}

/// Parses a date, a local date-time or an RFC 3339 timestamp.
///
/// # Errors
/// A message showing the accepted forms.
pub fn parse_date(text: &str) -> Result<DateSpec, String> {
    let t = text.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(DateSpec::Date(d));
    }
    if let Ok(i) = DateTime::parse_from_rfc3339(t) {
        return Ok(DateSpec::Instant(i));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(DateSpec::Local(n));
        }
    }
    Err(format!(
        "`{t}` is not a date: write `2024-01-31`, `2024-01-31T06:00:00` (in the DAG's timezone) or `2024-01-31T06:00:00Z`"
    ))
}

impl DateSpec {
    /// The instant this stands for in `tz`.
    pub fn resolve(&self, tz: Tz) -> DateTime<Utc> {
        match self {
            DateSpec::Date(d) => crate::schedule::start_of_day(tz, *d),
            DateSpec::Local(n) => crate::schedule::localize(tz, *n),
            DateSpec::Instant(i) => i.with_timezone(&Utc),
        }
    }
}

impl DateSpec {
    /// The last instant this stands for as an inclusive upper bound (`end_date`): a plain date
    /// covers its whole day, so `end_date: 2021-12-31` keeps the runs of December 31st.
    pub fn resolve_end(&self, tz: Tz) -> DateTime<Utc> {
        match self {
            DateSpec::Date(d) => match d.succ_opt() {
                Some(next) => {
                    crate::schedule::start_of_day(tz, next) - chrono::Duration::microseconds(1)
                }
                None => DateTime::<Utc>::MAX_UTC,
            },
            other => other.resolve(tz),
        }
    }
}

impl fmt::Display for DateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateSpec::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            DateSpec::Local(n) => write!(f, "{}", n.format("%Y-%m-%dT%H:%M:%S")),
            DateSpec::Instant(i) => write!(f, "{}", i.to_rfc3339()),
        }
    }
}

impl Serialize for DateSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_date(&text).map_err(de::Error::custom)
    }
}

impl JsonSchema for DateSpec {
    fn schema_name() -> Cow<'static, str> {
        "Date".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A date (2024-01-31), a local date-time (2024-01-31T06:00:00, in the DAG's timezone) or an RFC 3339 timestamp.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_date_is_midnight_in_the_dag_zone() {
        let d =
            parse_date("2024-07-01").map(|d| d.resolve(chrono_tz::America::New_York).to_rfc3339());
        assert_eq!(d.as_deref(), Ok("2024-07-01T04:00:00+00:00"));
    }

    #[test]
    fn an_offset_wins_over_the_dag_zone() {
        let d = parse_date("2024-07-01T06:00:00+02:00")
            .map(|d| d.resolve(chrono_tz::America::New_York).to_rfc3339());
        assert_eq!(d.as_deref(), Ok("2024-07-01T04:00:00+00:00"));
    }

    #[test]
    fn a_plain_end_date_covers_its_whole_day() {
        let end = parse_date("2024-07-01")
            .map(|d| d.resolve_end(chrono_tz::America::New_York).to_rfc3339());
        assert_eq!(end.as_deref(), Ok("2024-07-02T03:59:59.999999+00:00"));
    }

    #[test]
    fn nonsense_is_rejected() {
        for bad in ["2024-02-30", "yesterday", "2024/01/01", "2024-13-01"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
