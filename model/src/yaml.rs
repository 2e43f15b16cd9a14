//! A YAML document as a tree of nodes that remember where they stand in the file, and a
//! serde `Deserializer` over that tree.
//!
//! serde-saphyr reads the text (it rejects duplicate keys and reports syntax errors with a
//! place); every node is captured with its location through `serde_saphyr::Spanned`. The
//! typed DAG mirror is then decoded from this tree by `decode`, which differs from a plain
//! serde run in two ways that validation needs:
//! - unknown keys are all collected (with the closest valid name) instead of stopping at
//!   the first one;
//! - after a value of the wrong type, decoding goes on without that key, so one pass reports
//!   every bad field of a struct, each at its own line and column.

use std::cell::RefCell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use crate::diagnostic::{Diagnostic, Loc};
use crate::suggest::did_you_mean;

/// One YAML node with the place it starts at.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts (1-based; `Loc::default()` when unknown).
    pub loc: Loc,
    /// The node's content.
    pub value: Value,
}

/// The content of a [`Node`], as YAML 1.2's core schema types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// Any string scalar, quoted or plain.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Parses YAML text into a located tree.
    ///
    /// Returns the tree and the problems that did not stop parsing (duplicate keys: the first
    /// occurrence is kept).
    ///
    /// # Errors
    /// A syntax error, an unsupported tag, more than one document or an empty file, with its place.
    pub fn parse(text: &str) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
        if text.trim().is_empty() {
            return Err(Diagnostic::error(
                Some(Loc::new(1, 1)),
                "the file is empty: a DAG needs at least `id` and `tasks`",
            ));
        }
        crate::yaml_tree::build(text)
    }

    /// The entry of a mapping node under `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node's text when it is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name for the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Calls `f` on every string scalar below this node (keys excluded), with its place.
    pub fn for_each_str<'a>(&'a self, f: &mut impl FnMut(&'a Node, &'a str)) {
        match &self.value {
            Value::Str(s) => f(self, s),
            Value::Seq(items) => items.iter().for_each(|n| n.for_each_str(f)),
            Value::Map(entries) => entries.iter().for_each(|(_, v)| v.for_each_str(f)),
            _ => {}
        }
    }
}

/// Problems found while decoding that did not stop it (unknown keys).
#[derive(Debug, Default)]
pub(crate) struct Sink(RefCell<Vec<Diagnostic>>);

impl Sink {
    pub(crate) fn push(&self, d: Diagnostic) {
        self.0.borrow_mut().push(d);
    }
    pub(crate) fn into_inner(self) -> Vec<Diagnostic> {
        self.0.into_inner()
    }
}

/// Decodes `node` into `T`, collecting every problem into `sink` (prefixing messages with
/// `context`). Returns `None` when `T` could not be built at all.
///
/// `extra_keys` are keys of the root mapping that someone else decodes: they are neither
/// reported as unknown nor passed to `T`, but they are offered as suggestions. With
/// [`Unknown::Ignore`], every root key `T` does not know is left to someone else.
pub(crate) fn decode<T: DeserializeOwned>(
    node: &Node,
    extra_keys: &[&str],
    unknown: Unknown,
    context: &str,
    sink: &Sink,
) -> Option<T> {
    let mut dropped: Vec<String> = Vec::new();
    loop {
        let de = NodeDe {
            node,
            sink,
            context,
            root: Some(Root {
                dropped: &dropped,
                extra_keys,
                unknown,
            }),
        };
        match T::deserialize(de) {
            Ok(v) => return Some(v),
            Err(e) => {
                let missing_dropped = e
                    .missing
                    .as_deref()
                    .is_some_and(|m| dropped.iter().any(|d| d == m));
                if !missing_dropped {
                    sink.push(e.to_diagnostic(context));
                }
                match e.path.first() {
                    Some(key) if !dropped.contains(key) => dropped.push(key.clone()),
                    _ => return None,
                }
            }
        }
    }
}

/// The names of `T`'s fields, as serde knows them (renames applied).
pub(crate) fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe;
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Found(&[])
        }
    }
    impl<'de> Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

/// A decoding error: where, under which keys, and what.
#[derive(Debug)]
pub(crate) struct DeError {
    loc: Option<Loc>,
    /// Keys from the decoded root down to the failing value.
    path: Vec<String>,
    message: String,
    /// Set when the error is a missing required field.
    missing: Option<String>,
}

impl DeError {
    fn at(mut self, loc: Loc) -> Self {
        if self.loc.is_none() && loc.line > 0 {
            self.loc = Some(loc);
        }
        self
    }

    fn under(mut self, key: String) -> Self {
        self.path.insert(0, key);
        self
    }

    fn to_diagnostic(&self, context: &str) -> Diagnostic {
        let path = self.path.iter().fold(String::new(), |mut acc, seg| {
            if !acc.is_empty() && !seg.starts_with('[') {
                acc.push('.');
            }
            acc.push_str(seg);
            acc
        });
        let message = match (context.is_empty(), path.is_empty()) {
            (true, true) => self.message.clone(),
            (true, false) => format!("`{path}`: {}", self.message),
            (false, true) => format!("{context}: {}", self.message),
            (false, false) => format!("{context}: `{path}`: {}", self.message),
        };
        Diagnostic::error(self.loc, message)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        DeError {
            loc: None,
            path: Vec::new(),
            message: msg.to_string(),
            missing: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = did_you_mean(variant, expected.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Self::custom(format_args!(
            "unknown value `{variant}`{hint}; expected one of {}",
            backticked(expected)
        ))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            plain_expected(&exp.to_string()),
            plain_unexpected(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            plain_expected(&exp.to_string()),
            plain_unexpected(&unexp)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::custom(format_args!("missing required key `{field}`"));
        e.missing = Some(field.to_owned());
        e
    }
}

/// serde names Rust types (`u32`); DAG authors read YAML.
fn plain_expected(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        "a character" => "a single character".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other => other.to_owned(),
    }
}

fn plain_unexpected(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(s) => format!("the string \"{s}\""),
        de::Unexpected::Signed(i) => format!("{i}"),
        de::Unexpected::Unsigned(u) => format!("{u}"),
        de::Unexpected::Float(f) => format!("{f}"),
        de::Unexpected::Bool(b) => format!("`{b}`"),
        de::Unexpected::Seq => "a list".to_owned(),
        de::Unexpected::Map => "a mapping".to_owned(),
        de::Unexpected::Unit => "nothing (null)".to_owned(),
        other => other.to_string(),
    }
}

pub(crate) fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`decode`] does with root keys the target type does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// Reports each as an error, with the closest valid name.
    Report,
    /// Skips them: another type decodes them from the same mapping.
    Ignore,
}

#[derive(Clone, Copy)]
struct Root<'a> {
    dropped: &'a [String],
    extra_keys: &'a [&'a str],
    unknown: Unknown,
}

/// A serde `Deserializer` over one [`Node`].
struct NodeDe<'a> {
    node: &'a Node,
    sink: &'a Sink,
    /// Prefix of every message (e.g. `task "load"`).
    context: &'a str,
    /// Present only for the node [`decode`] was called on.
    root: Option<Root<'a>>,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node) -> NodeDe<'a> {
        NodeDe {
            node,
            sink: self.sink,
            context: self.context,
            root: None,
        }
    }
}

impl<'de, 'a> Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let loc = self.node.loc;
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                de: &self,
                items: items.iter(),
                index: 0,
            }),
            Value::Map(entries) => {
                let entries: Vec<&(Node, Node)> = entries.iter().collect();
                visitor.visit_map(MapDe {
                    de: &self,
                    entries: entries.into_iter(),
                    pending: None,
                })
            }
        };
        result.map_err(|e| e.at(loc))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let loc = self.node.loc;
        let Value::Map(entries) = &self.node.value else {
            return Err(<DeError as de::Error>::custom(format_args!(
                "expected a mapping with keys {}, found {}",
                backticked(fields),
                self.node.type_name()
            ))
            .at(loc));
        };
        let root = self.root;
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            let (k, _) = entry;
            let key = k.as_str().unwrap_or("");
            if let Some(root) = root
                && (root.extra_keys.contains(&key) || root.dropped.iter().any(|d| d == key))
            {
                continue;
            }
            if fields.contains(&key) {
                kept.push(entry);
                continue;
            }
            if root.is_some_and(|r| r.unknown == Unknown::Ignore) {
                continue;
            }
            let extra = root.map(|r| r.extra_keys).unwrap_or(&[]);
            let candidates = fields.iter().chain(extra.iter()).copied();
            let hint = did_you_mean(key, candidates)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let message = format!("unknown key `{}`{hint}", display_key(k));
            let message = if self.context.is_empty() {
                message
            } else {
                format!("{}: {message}", self.context)
            };
            self.sink.push(Diagnostic::error(
                Some(k.loc).filter(|l| l.line > 0),
                message,
            ));
        }
        visitor
            .visit_map(MapDe {
                de: &self,
                entries: kept.into_iter(),
                pending: None,
            })
            .map_err(|e| e.at(loc))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let loc = self.node.loc;
        match &self.node.value {
            Value::Str(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: DeError| e.at(loc)),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let key = k.as_str().unwrap_or("");
                visitor
                    .visit_enum(EnumDe {
                        key,
                        key_loc: k.loc,
                        value: self.child(v),
                    })
                    .map_err(|e| e.at(k.loc).under(key.to_owned()))
            }
            _ => Err(<DeError as de::Error>::custom(format_args!(
                "expected one of {}, found {}",
                backticked(variants),
                self.node.type_name()
            ))
            .at(loc)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

fn display_key(k: &Node) -> String {
    match &k.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

struct SeqDe<'a, 'b> {
    de: &'b NodeDe<'a>,
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de, 'a, 'b> de::SeqAccess<'de> for SeqDe<'a, 'b> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(self.de.child(node))
            .map(Some)
            .map_err(|e| e.at(node.loc).under(format!("[{index}]")))
    }
}

struct MapDe<'a, 'b> {
    de: &'b NodeDe<'a>,
    entries: std::vec::IntoIter<&'a (Node, Node)>,
    pending: Option<&'a (Node, Node)>,
}

impl<'de, 'a, 'b> de::MapAccess<'de> for MapDe<'a, 'b> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(entry);
        let key = &entry.0;
        seed.deserialize(self.de.child(key))
            .map(Some)
            .map_err(|e| e.at(key.loc).under(display_key(key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(<DeError as de::Error>::custom(
                "a value was asked for before its key",
            ));
        };
        seed.deserialize(self.de.child(value))
            .map_err(|e| e.at(value.loc).under(display_key(key)))
    }
}

struct EnumDe<'a> {
    key: &'a str,
    key_loc: Loc,
    value: NodeDe<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let key_de: de::value::StrDeserializer<'_, DeError> = self.key.into_deserializer();
        let v = seed.deserialize(key_de).map_err(|e| e.at(self.key_loc))?;
        Ok((v, self.value))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.node.value {
            Value::Null => Ok(()),
            _ => Err(<DeError as de::Error>::custom("this takes no value").at(self.node.loc)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_struct("", fields, visitor)
    }
}
