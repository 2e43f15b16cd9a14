//! Durations as DAG files write them: `30s`, `10m`, `1h30m`, `2d`, `250ms`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A span of time written with units (`d`, `h`, `m`, `s`, `ms`), largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Units in the order they must appear, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Duration {
    /// Seconds, as a float.
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }

    /// The same span as a chrono duration (saturating).
    pub fn to_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

/// The longest duration weir accepts, 100 years: any instant it is added to stays far inside
/// what dates and both databases can hold, so no DAG or configuration value can overflow a
/// date computation.
pub const MAX: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

/// `t + d`, saturating at the latest instant chrono represents instead of panicking.
pub fn later(
    t: chrono::DateTime<chrono::Utc>,
    d: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// `t - d`, saturating at the earliest instant.
pub fn earlier(
    t: chrono::DateTime<chrono::Utc>,
    d: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Parses `1h30m`-style text, at most [`MAX`].
///
/// # Errors
/// A message saying what a duration looks like, or that it is too long.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write a number with a unit, like `30s`, `10m`, `1h30m`, `2d` or `500ms`"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let position = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if position < next_unit {
            return Err(format!(
                "`{text}`: units must go from largest to smallest, each once (d, h, m, s, ms)"
            ));
        }
        next_unit = position + 1;
        total = number
            .checked_mul(UNITS[position].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        rest = &rest[unit_len..];
    }
    let d = std::time::Duration::from_millis(total);
    if d > MAX {
        return Err(format!(
            "`{text}` is longer than 36500d (100 years), the longest duration weir accepts"
        ));
    }
    Ok(Duration(d))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in UNITS {
            if ms >= len {
                write!(f, "{}{unit}", ms / len)?;
                ms %= len;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like `30s` or `1h30m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit: durations are strings like `{v}s` or `{v}m`"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit: durations are strings like `{v}s` or `{v}m`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$",
            "description": "A duration with units, largest first: `30s`, `10m`, `1h30m`, `2d`, `500ms`.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX, earlier, later, parse_duration};

    fn secs(text: &str) -> u64 {
        parse_duration(text)
            .map(|d| d.0.as_secs())
            .unwrap_or(u64::MAX)
    }

    #[test]
    fn the_spec_examples_parse() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("10m"), 600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("2d"), 172_800);
        assert_eq!(parse_duration("1s500ms").map(|d| d.0.as_millis()), Ok(1500));
    }

    #[test]
    fn bad_durations_are_rejected_with_a_hint() {
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1m1h",
            "1h1h",
            "-5s",
            "1.5h",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.contains(bad.trim()) || err.contains("largest"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn durations_stop_at_a_hundred_years_and_date_sums_saturate() {
        assert!(parse_duration("36500d").is_ok());
        let err = parse_duration("100000000d").expect_err("too long");
        assert!(err.contains("longer than 36500d"), "{err}");
        let err = parse_duration("36500d1ms").expect_err("too long");
        assert!(err.contains("longer than 36500d"), "{err}");
        let end = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        assert_eq!(later(end, MAX), end);
        assert_eq!(
            earlier(chrono::DateTime::<chrono::Utc>::MIN_UTC, MAX),
            chrono::DateTime::<chrono::Utc>::MIN_UTC
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["30s", "1h30m", "2d", "1d2h3m4s5ms", "0s"] {
            assert_eq!(
                parse_duration(text).map(|d| d.to_string()).as_deref(),
                Ok(text)
            );
        }
    }
}
