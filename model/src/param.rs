//! A DAG's params and what a trigger may set them to.
//!
//! A param is written as its default (`day: ""`, `limit: 100`: the value's type is the
//! param's), or declared as a mapping with a `default` and any of `type`, `enum`, `pattern`,
//! `max_length`, `min`, `max`, `description`. Every value a trigger, a backfill or the web form
//! gives is checked against it before a run is created.

use serde_json::Value;

/// The keys of a param's declaration.
pub const DECLARATION_KEYS: [&str; 8] = [
    "default",
    "type",
    "enum",
    "pattern",
    "max_length",
    "min",
    "max",
    "description",
];

/// The type of a param's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON list.
    List,
    /// A JSON object.
    Object,
}

impl ParamType {
    /// Every type's name, as a declaration writes it.
    pub const NAMES: [&'static str; 6] =
        ["string", "integer", "number", "boolean", "list", "object"];

    /// The type named `name` in a declaration.
    pub fn from_name(name: &str) -> Option<ParamType> {
        Some(match name {
            "string" => ParamType::String,
            "integer" => ParamType::Integer,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "list" => ParamType::List,
            "object" => ParamType::Object,
            _ => return None,
        })
    }

    /// The type of a default (`None` for null, which takes any value).
    fn of(value: &Value) -> Option<ParamType> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(ParamType::Boolean),
            Value::Number(_) => Some(ParamType::Number),
            Value::String(_) => Some(ParamType::String),
            Value::Array(_) => Some(ParamType::List),
            Value::Object(_) => Some(ParamType::Object),
        }
    }

    /// Its name in a sentence: `a string`, `an integer`, ...
    pub fn described(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean",
            ParamType::List => "a list",
            ParamType::Object => "an object",
        }
    }

    /// Its name as a declaration writes it.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::List => "list",
            ParamType::Object => "object",
        }
    }

    fn holds(self, value: &Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::List => value.is_array(),
            ParamType::Object => value.is_object(),
        }
    }
}

/// A param's `pattern`: as written, and compiled to match whole values.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As the DAG writes it.
    pub written: String,
    whole: regex::Regex,
}

/// A param of a DAG.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its value when a trigger gives none.
    pub default: Value,
    /// The type every value must have (`None`: any, for a null default without `type`).
    pub ty: Option<ParamType>,
    /// The only values allowed, when given.
    pub allowed: Option<Vec<Value>>,
    /// A regular expression the whole of a string value must match.
    pub pattern: Option<Pattern>,
    /// Most characters of a string, or items of a list.
    pub max_length: Option<usize>,
    /// Smallest number allowed.
    pub min: Option<f64>,
    /// Largest number allowed.
    pub max: Option<f64>,
    /// What it is for (the trigger form shows it).
    pub description: Option<String>,
}

impl Param {
    /// A param from what a DAG file writes: a default, or a declaration (a mapping with a
    /// `default` key).
    ///
    /// # Errors
    /// A malformed declaration, or a default its own declaration refuses; the message names
    /// what is wrong.
    pub fn parse(raw: &Value) -> Result<Param, String> {
        let Some(decl) = raw.as_object().filter(|m| m.contains_key("default")) else {
            return Ok(Param {
                default: raw.clone(),
                ty: ParamType::of(raw),
                allowed: None,
                pattern: None,
                max_length: None,
                min: None,
                max: None,
                description: None,
            });
        };
        for key in decl.keys() {
            if !DECLARATION_KEYS.contains(&key.as_str()) {
                let hint = crate::suggest::did_you_mean(key, DECLARATION_KEYS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "`{key}` is not a key of a param's declaration{hint}: {}; an object default with a `default` key is written `default: {{default: ...}}`",
                    DECLARATION_KEYS.join(", ")
                ));
            }
        }
        let default = decl.get("default").cloned().unwrap_or(Value::Null);
        let ty = match decl.get("type") {
            None => ParamType::of(&default),
            Some(Value::String(name)) => Some(ParamType::from_name(name).ok_or_else(|| {
                let hint = crate::suggest::did_you_mean(name, ParamType::NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                format!(
                    "`type: {name}` is not a param type{hint}: {}",
                    ParamType::NAMES.join(", ")
                )
            })?),
            Some(other) => return Err(format!("`type` must be a name, got {other}")),
        };
        let number = |key: &str| match decl.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be a number, got {v}")),
        };
        let (min, max) = (number("min")?, number("max")?);
        let max_length = match decl.get("max_length") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("`max_length` must be a whole number, got {v}"))?,
            ),
        };
        let pattern = match decl.get("pattern") {
            None => None,
            Some(Value::String(p)) => Some(Pattern {
                written: p.clone(),
                whole: regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    // The crate draws the place over several lines; its last says what.
                    let what = e.to_string();
                    let what = what.lines().last().unwrap_or_default().trim().to_owned();
                    format!("`pattern` is not a regular expression: {what}")
                })?,
            }),
            Some(other) => return Err(format!("`pattern` must be text, got {other}")),
        };
        let allowed = match decl.get("enum") {
            None => None,
            Some(Value::Array(items)) if !items.is_empty() => Some(items.clone()),
            Some(other) => return Err(format!("`enum` must be a list of values, got {other}")),
        };
        let description = match decl.get("description") {
            None => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(other) => return Err(format!("`description` must be text, got {other}")),
        };
        if pattern.is_some() && ty != Some(ParamType::String) {
            return Err("`pattern` applies to a string param (`type: string`)".to_owned());
        }
        if (min.is_some() || max.is_some())
            && !matches!(ty, Some(ParamType::Integer | ParamType::Number))
        {
            return Err("`min` and `max` apply to a number param".to_owned());
        }
        if max_length.is_some() && !matches!(ty, Some(ParamType::String | ParamType::List)) {
            return Err("`max_length` applies to a string or a list param".to_owned());
        }
        let param = Param {
            default,
            ty,
            allowed,
            pattern,
            max_length,
            min,
            max,
            description,
        };
        if let Some(items) = &param.allowed {
            for item in items {
                param
                    .check_declared(item)
                    .map_err(|e| format!("`enum` value {item}: {e}"))?;
            }
        }
        if !param.default.is_null() {
            param
                .check(&param.default)
                .map_err(|e| format!("the default {}: {e}", param.default))?;
        }
        Ok(param)
    }

    /// What a value must be, as JSON (the API's DAG detail): `type`, and what else is
    /// declared (`enum`, `pattern`, `max_length`, `min`, `max`, `description`).
    pub fn declaration(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(ty) = self.ty {
            out.insert("type".into(), ty.name().into());
        }
        if let Some(allowed) = &self.allowed {
            out.insert("enum".into(), Value::Array(allowed.clone()));
        }
        if let Some(p) = &self.pattern {
            out.insert("pattern".into(), p.written.clone().into());
        }
        if let Some(n) = self.max_length {
            out.insert("max_length".into(), n.into());
        }
        for (key, bound) in [("min", self.min), ("max", self.max)] {
            if let Some(b) = bound {
                out.insert(key.into(), b.into());
            }
        }
        if let Some(d) = &self.description {
            out.insert("description".into(), d.clone().into());
        }
        Value::Object(out)
    }

    /// Whether `value` may be this param's value.
    ///
    /// # Errors
    /// What the value breaks: its type, the list of allowed values, the pattern, the length
    /// or the bounds (the value itself is not repeated: the caller names it).
    pub fn check(&self, value: &Value) -> Result<(), String> {
        self.check_declared(value)?;
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("must be one of {}", list.join(", ")));
        }
        Ok(())
    }

    /// [`Param::check`] without the list of allowed values.
    fn check_declared(&self, value: &Value) -> Result<(), String> {
        if let Some(ty) = self.ty
            && !ty.holds(value)
        {
            return Err(format!("must be {}", ty.described()));
        }
        if let (Some(pattern), Value::String(s)) = (&self.pattern, value)
            && !pattern.whole.is_match(s)
        {
            return Err(format!(
                "must match the pattern `{}` (the whole value)",
                pattern.written
            ));
        }
        if let Some(most) = self.max_length {
            let length = match value {
                Value::String(s) => s.chars().count(),
                Value::Array(items) => items.len(),
                _ => 0,
            };
            if length > most {
                return Err(format!("is {length} long; at most {most} allowed"));
            }
        }
        if let Some(n) = value.as_f64()
            && (self.min.is_some_and(|min| n < min) || self.max.is_some_and(|max| n > max))
        {
            let bound = |b: Option<f64>| b.map_or("-".to_owned(), |b| b.to_string());
            return Err(format!(
                "must be within {}..{}",
                bound(self.min),
                bound(self.max)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Param, ParamType};
    use serde_json::json;

    #[test]
    fn a_plain_default_types_its_param() {
        let p = Param::parse(&json!(100)).expect("param");
        assert_eq!(p.ty, Some(ParamType::Number));
        assert!(p.check(&json!(5)).is_ok());
        assert!(p.check(&json!("5")).is_err());
        // An object default without a `default` key is an object, not a declaration.
        let p = Param::parse(&json!({"a": 1})).expect("param");
        assert_eq!(p.ty, Some(ParamType::Object));
        let any = Param::parse(&json!(null)).expect("param");
        assert!(any.check(&json!([1])).is_ok());
    }

    #[test]
    fn a_declaration_is_checked() {
        let p = Param::parse(&json!({
            "default": "eu", "enum": ["eu", "us"], "description": "region"
        }))
        .expect("param");
        assert!(p.check(&json!("us")).is_ok());
        assert_eq!(
            p.check(&json!("ap")),
            Err("must be one of \"eu\", \"us\"".to_owned())
        );
        let day = Param::parse(&json!({
            "default": "2024-01-01", "type": "string", "pattern": "\\d{4}-\\d{2}-\\d{2}", "max_length": 10
        }))
        .expect("param");
        assert!(day.check(&json!("2024-12-31")).is_ok());
        // The whole value must match, not a part of it.
        assert!(day.check(&json!("2024-12-31; rm -rf /")).is_err());
        let n = Param::parse(&json!({"default": 10, "type": "integer", "min": 1, "max": 100}))
            .expect("param");
        assert!(n.check(&json!(100)).is_ok());
        assert!(n.check(&json!(101)).is_err());
        assert!(n.check(&json!(1.5)).is_err());
    }

    #[test]
    fn a_bad_declaration_says_what_is_wrong() {
        for (raw, says) in [
            (
                json!({"default": "x", "max_lenght": 3}),
                "did you mean `max_length`",
            ),
            (
                json!({"default": "x", "type": "strng"}),
                "did you mean `string`",
            ),
            (
                json!({"default": "x", "pattern": "("}),
                "not a regular expression",
            ),
            (
                json!({"default": "abc", "max_length": 2}),
                "the default \"abc\"",
            ),
            (json!({"default": 1, "pattern": "a"}), "applies to a string"),
            (json!({"default": "b", "enum": ["a"]}), "must be one of"),
            (json!({"default": "b", "enum": []}), "`enum` must be a list"),
        ] {
            let e = Param::parse(&raw).expect_err("refused");
            assert!(e.contains(says), "{raw}: {e}");
        }
    }
}
