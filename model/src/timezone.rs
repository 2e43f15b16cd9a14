//! IANA time-zone names, with a suggestion for typos.

use std::borrow::Cow;

use chrono_tz::Tz;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A valid IANA time zone (`Europe/Zurich`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TzName(pub Tz);

/// Parses an IANA name.
///
/// # Errors
/// A message with the closest valid name, when there is one.
pub fn parse_timezone(text: &str) -> Result<Tz, String> {
    text.parse::<Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        let hint = crate::suggest::did_you_mean(text, names)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!(
            "unknown time zone `{text}`{hint}: use an IANA name such as `UTC` or `America/New_York`"
        )
    })
}

impl Serialize for TzName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for TzName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_timezone(&text).map(TzName).map_err(de::Error::custom)
    }
}

impl JsonSchema for TzName {
    fn schema_name() -> Cow<'static, str> {
        "TimeZone".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "IANA time zone name, e.g. UTC or America/New_York." })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_timezone;

    #[test]
    fn a_typo_gets_the_real_name() {
        let err = parse_timezone("America/New_Yrok").expect_err("typo");
        assert!(err.contains("`America/New_York`"), "{err}");
    }
}
