//! Assets: the tables and files that steps write and read, named by stable keys, and the
//! `schedule` rules that run a DAG when its upstream assets are updated or files arrive.
//!
//! An asset key is one of:
//! - a table: `connection.schema.table`, three names (`warehouse.public.orders`); the step
//!   that writes a table without a schema fills in its database's default (`public` on
//!   Postgres, the database's name on MySQL, `main` on SQLite);
//! - a location: a URL with a scheme (`s3://lake/orders/`, `sftp://host/in/*.csv`), where a
//!   local path is written `file:///abs/path` (an absolute path `/abs/path` is read so).
//!
//! Keys are compared as text: what a producer records is what a consumer names.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::duration::Duration;
use crate::schedule::Schedule;
use crate::text::one_or_many;

/// The longest key weir accepts.
pub const MAX_KEY_LEN: usize = 1000;

/// A key as written, checked and normalized (`/x` becomes `file:///x`).
///
/// # Errors
/// A message saying what a key looks like.
pub fn parse_asset_key(text: &str) -> Result<String, String> {
    let text = text.trim();
    let hint = "an asset is `connection.schema.table` (e.g. `warehouse.public.orders`) or a location URL (e.g. `s3://lake/orders/`)";
    if text.is_empty() {
        return Err(format!("an empty asset name: {hint}"));
    }
    if text.len() > MAX_KEY_LEN {
        return Err(format!(
            "an asset name of {} characters (at most {MAX_KEY_LEN})",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "asset `{}` holds a control character",
            text.escape_debug()
        ));
    }
    if let Some(path) = text.strip_prefix('/') {
        return Ok(format!("file:///{path}"));
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        let scheme_ok = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_lowercase())
            && scheme
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+');
        if !scheme_ok || rest.is_empty() {
            return Err(format!("asset `{text}` is not a location URL: {hint}"));
        }
        return Ok(text.to_owned());
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 {
        let example = match parts.as_slice() {
            [conn, table] => format!(" (`{conn}.public.{table}` on Postgres?)"),
            _ => String::new(),
        };
        return Err(format!(
            "asset `{text}` has {} dot-separated name{}; a table asset has three, connection.schema.table{example}",
            parts.len(),
            if parts.len() == 1 { "" } else { "s" }
        ));
    }
    if let Some(bad) = parts
        .iter()
        .find(|p| p.is_empty() || p.chars().any(|c| c.is_whitespace() || c == '"' || c == '`'))
    {
        return Err(format!(
            "asset `{text}`: `{bad}` is not a plain name (no spaces or quotes; write names as the database stores them)"
        ));
    }
    Ok(text.to_owned())
}

/// A table asset's key from its parts.
pub fn table_key(connection: &str, schema: &str, table: &str) -> String {
    format!("{connection}.{schema}.{table}")
}

/// When a DAG scheduled on assets runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetCondition {
    /// Once every one of them was updated since the DAG's last run from assets.
    All(Vec<String>),
    /// Once for each update of any of them.
    Any(Vec<String>),
}

impl AssetCondition {
    /// The assets named.
    pub fn keys(&self) -> &[String] {
        match self {
            AssetCondition::All(k) | AssetCondition::Any(k) => k,
        }
    }

    /// `all` or `any`.
    pub fn mode(&self) -> &'static str {
        match self {
            AssetCondition::All(_) => "all",
            AssetCondition::Any(_) => "any",
        }
    }
}

impl Serialize for AssetCondition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.mode(), self.keys())?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for AssetCondition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = AssetCondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of assets (all of them), or `{all: [...]}` or `{any: [...]}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AssetCondition, E> {
                Ok(AssetCondition::All(vec![key(v)?]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AssetCondition, A::Error> {
                let mut keys = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    keys.push(key(&s)?);
                }
                Ok(AssetCondition::All(nonempty(keys)?))
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AssetCondition, A::Error> {
                let Some(mode) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "`assets` is empty: write `{all: [...]}` or `{any: [...]}`",
                    ));
                };
                let keys: Vec<String> = map.next_value::<Keys>()?.0;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "`assets` takes one of `all` or `any`, not both",
                    ));
                }
                let keys = nonempty(keys)?;
                match mode.as_str() {
                    "all" => Ok(AssetCondition::All(keys)),
                    "any" => Ok(AssetCondition::Any(keys)),
                    other => Err(de::Error::custom(format!(
                        "unknown key `{other}` in `assets`: use `all` or `any`"
                    ))),
                }
            }
        }
        fn key<E: de::Error>(text: &str) -> Result<String, E> {
            parse_asset_key(text).map_err(E::custom)
        }
        fn nonempty<E: de::Error>(keys: Vec<String>) -> Result<Vec<String>, E> {
            if keys.is_empty() {
                return Err(E::custom("the list of assets is empty"));
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(dup) = keys.iter().find(|k| !seen.insert(k.as_str())) {
                return Err(E::custom(format!("asset `{dup}` is named twice")));
            }
            Ok(keys)
        }
        struct Keys(Vec<String>);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = one_or_many(d)?;
                raw.iter()
                    .map(|k| key(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Keys)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for AssetCondition {
    fn schema_name() -> Cow<'static, str> {
        "AssetCondition".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Assets whose updates run the DAG: a list (all of them since the last run), or `{all: [...]}` / `{any: [...]}` (a run for each update of any).",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                {"type": "object", "properties": {"all": {"type": "array", "items": {"type": "string"}}}, "required": ["all"], "additionalProperties": false},
                {"type": "object", "properties": {"any": {"type": "array", "items": {"type": "string"}}}, "required": ["any"], "additionalProperties": false}
            ],
            "examples": [["warehouse.public.orders", "warehouse.public.customers"], {"any": ["s3://lake/orders/"]}]
        })
    }
}

/// `schedule:` as written: a cron text, or a rule with data conditions.
#[derive(Debug, Clone)]
pub enum ScheduleSpec {
    /// A cron expression or alias.
    Cron(Schedule),
    /// `{cron, assets, files, ...}`.
    Rule(Box<ScheduleRule>),
}

/// A schedule with data conditions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRule {
    /// Cron ticks; with `assets`, a tick's run waits until the assets were updated since the
    /// previous run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Schedule>,
    /// Assets whose updates run the DAG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<AssetCondition>,
    /// Locations (globs) whose newly arrived objects each create a run.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub files: Vec<String>,
    /// With `files`: one run for all the objects found in one look (default: one per object).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch: bool,
    /// With `files`: how often the locations are listed (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Duration>,
}

/// How often a file trigger lists its locations unless `poll` says.
pub const DEFAULT_FILE_POLL: std::time::Duration = std::time::Duration::from_secs(30);

impl ScheduleSpec {
    /// The cron part, if any.
    pub fn cron(&self) -> Option<&Schedule> {
        match self {
            ScheduleSpec::Cron(s) => Some(s),
            ScheduleSpec::Rule(r) => r.cron.as_ref(),
        }
    }

    /// The assets condition, if any.
    pub fn assets(&self) -> Option<&AssetCondition> {
        match self {
            ScheduleSpec::Cron(_) => None,
            ScheduleSpec::Rule(r) => r.assets.as_ref(),
        }
    }

    /// The file trigger's rule, if it has `files`.
    pub fn files(&self) -> Option<&ScheduleRule> {
        match self {
            ScheduleSpec::Rule(r) if !r.files.is_empty() => Some(r),
            _ => None,
        }
    }

    /// A short text for lists: the cron expression, `assets (all: 2)`, `files: s3://…`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cron) = self.cron() {
            parts.push(cron.as_str().to_owned());
        }
        if let Some(a) = self.assets() {
            parts.push(format!("assets ({}: {})", a.mode(), a.keys().join(", ")));
        }
        if let Some(f) = self.files() {
            parts.push(format!("files: {}", f.files.join(", ")));
        }
        parts.join(" + ")
    }
}

impl Serialize for ScheduleSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ScheduleSpec::Cron(c) => c.serialize(s),
            ScheduleSpec::Rule(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ScheduleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ScheduleSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cron expression, or a mapping with `cron`, `assets` or `files`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScheduleSpec, E> {
                crate::schedule::parse_schedule(v)
                    .map(ScheduleSpec::Cron)
                    .map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ScheduleSpec, A::Error> {
                let rule = ScheduleRule::deserialize(de::value::MapAccessDeserializer::new(map))?;
                rule.check().map_err(de::Error::custom)?;
                Ok(ScheduleSpec::Rule(Box::new(rule)))
            }
        }
        d.deserialize_any(V)
    }
}

impl ScheduleRule {
    /// What may be combined: cron with assets, or files alone.
    ///
    /// # Errors
    /// A message saying which keys do not go together.
    pub fn check(&self) -> Result<(), String> {
        if matches!(self.cron, Some(Schedule::Once)) {
            return Err(
                "`@once` cannot be combined with `assets` or `files`; write `schedule: \"@once\"`"
                    .into(),
            );
        }
        if !self.files.is_empty() {
            if self.cron.is_some() || self.assets.is_some() {
                return Err(
                    "`files` triggers runs by itself: it does not combine with `cron` or `assets`"
                        .into(),
                );
            }
            for f in &self.files {
                parse_asset_key(f)?;
            }
            if self
                .poll
                .is_some_and(|p| p.0 < std::time::Duration::from_secs(1))
            {
                return Err("`poll` is at least 1s".into());
            }
        } else {
            if self.batch || self.poll.is_some() {
                return Err("`batch` and `poll` go with `files`".into());
            }
            if self.cron.is_none() && self.assets.is_none() {
                return Err("a schedule mapping needs `cron`, `assets` or `files`".into());
            }
        }
        Ok(())
    }
}

impl JsonSchema for ScheduleSpec {
    fn schema_name() -> Cow<'static, str> {
        "ScheduleSpec".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let cron = generator.subschema_for::<Schedule>();
        let rule = generator.subschema_for::<ScheduleRule>();
        json_schema!({
            "description": "When the DAG runs by itself: a cron expression, or `{cron, assets}` / `{files}`.",
            "anyOf": [cron, rule]
        })
    }
}

/// What a DAG says of an asset it writes (`assets:` in the DAG file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    /// What the asset holds, shown on its page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The asset is late when it was not updated for this long (e.g. `26h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Duration>,
    /// Notifiers told when it goes stale (default: the DAG's `on_failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
}

/// What a run's deadline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineReference {
    /// The end of the run's data interval (a daily run for Monday: Tuesday 00:00).
    DataIntervalEnd,
    /// The run's logical date.
    LogicalDate,
    /// When the run was created.
    QueuedAt,
}

/// A run must have finished `within` of its `reference`, or the notifiers are told (once per
/// run; the run itself goes on).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    /// What the deadline counts from.
    pub reference: DeadlineReference,
    /// How long after it the run must have finished.
    pub within: Duration,
    /// Notifiers told when a run misses it (default: the DAG's `on_failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tables_or_locations() {
        assert_eq!(
            parse_asset_key("warehouse.public.orders").as_deref(),
            Ok("warehouse.public.orders")
        );
        assert_eq!(
            parse_asset_key("/data/in.csv").as_deref(),
            Ok("file:///data/in.csv")
        );
        assert_eq!(
            parse_asset_key("s3://lake/x/*.csv").as_deref(),
            Ok("s3://lake/x/*.csv")
        );
        let two = parse_asset_key("warehouse.orders").expect_err("two parts");
        assert!(
            two.contains("`warehouse.public.orders` on Postgres?"),
            "{two}"
        );
        assert!(parse_asset_key("a.b c.d").is_err());
        assert!(parse_asset_key("S3://x").is_err());
        assert!(parse_asset_key("").is_err());
    }

    #[test]
    fn a_rule_rejects_what_does_not_combine() {
        let files_and_cron = ScheduleRule {
            cron: crate::schedule::parse_schedule("@daily").ok(),
            files: vec!["s3://b/*.csv".into()],
            ..ScheduleRule::default()
        };
        assert!(files_and_cron.check().is_err());
        assert!(ScheduleRule::default().check().is_err());
        let batch_alone = ScheduleRule {
            assets: Some(AssetCondition::All(vec!["a.b.c".into()])),
            batch: true,
            ..ScheduleRule::default()
        };
        assert!(batch_alone.check().is_err());
    }
}
