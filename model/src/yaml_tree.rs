//! Building the located [`Node`] tree from the YAML parser's events.
//!
//! granit-parser (the parser under serde-saphyr) emits events with source spans; this module
//! turns them into nodes, types plain scalars by YAML 1.2's core schema, resolves anchors,
//! aliases and `<<` merge keys, and reports duplicate keys. Going from events straight to the
//! tree is several times faster than asking serde for a `Spanned` value at every node.

use std::collections::{HashMap, HashSet};

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::diagnostic::{Diagnostic, Loc};
use crate::yaml::{Node, Value};

/// Most nodes one file may expand to (aliases included): a guard against alias bombs.
const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq {
        loc: Loc,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        loc: Loc,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// Keys seen, once the mapping is too large for a linear scan to be cheap.
        seen: Option<HashSet<String>>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    documents: usize,
    problems: Vec<Diagnostic>,
}

fn loc_of(span: &Span) -> Loc {
    Loc::new(span.start.line() as u64, span.start.col() as u64 + 1)
}

/// Parses `text` into a tree; see [`Node::parse`].
pub(crate) fn build(text: &str) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            let m = e.marker();
            Diagnostic::error(
                Some(Loc::new(m.line() as u64, m.col() as u64 + 1)),
                format!("YAML syntax: {}", e.info()),
            )
        })?;
        b.event(event, &span)?;
    }
    let root = b.root.take().unwrap_or(Node {
        loc: Loc::new(1, 1),
        value: Value::Null,
    });
    Ok((root, b.problems))
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), Diagnostic> {
        let loc = loc_of(span);
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        Some(loc),
                        "a DAG file holds one YAML document: remove the second `---`",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(&text, style, tag.as_deref(), loc)?;
                self.complete(Node { loc, value }, anchor)?;
            }
            Event::SequenceStart(_, anchor, tag) => {
                reject_tag(tag.as_deref(), "seq", loc)?;
                self.stack.push(Frame::Seq {
                    loc,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(_, anchor, tag) => {
                reject_tag(tag.as_deref(), "map", loc)?;
                self.stack.push(Frame::Map {
                    loc,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    seen: None,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { loc, anchor, items }) = self.stack.pop() {
                    self.complete(
                        Node {
                            loc,
                            value: Value::Seq(items),
                        },
                        anchor,
                    )?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    loc,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let entries = merge_keys(entries);
                    self.complete(
                        Node {
                            loc,
                            value: Value::Map(entries),
                        },
                        anchor,
                    )?;
                }
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id) else {
                    return Err(Diagnostic::error(Some(loc), "alias to an unknown anchor"));
                };
                let (mut node, size) = (node.clone(), *size);
                self.count(size, loc)?;
                node.loc = loc;
                self.complete_counted(node, 0)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn count(&mut self, n: usize, loc: Loc) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::error(
                Some(loc),
                format!("the file expands to more than {MAX_NODES} YAML nodes (aliases?)"),
            ));
        }
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        self.count(1, node.loc)?;
        self.complete_counted(node, anchor)
    }

    fn complete_counted(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            let size = size_of(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, key, seen, ..
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let is_new = match &k.value {
                        Value::Str(name) => is_new_key(entries, seen, name),
                        _ => true,
                    };
                    if is_new {
                        entries.push((k, node));
                    } else {
                        let name = k.as_str().unwrap_or_default();
                        self.problems.push(Diagnostic::error(
                            Some(k.loc),
                            format!(
                                "duplicate key `{name}`: a key (and so a task id) may appear only once in a mapping"
                            ),
                        ));
                    }
                }
            },
        }
        Ok(())
    }
}

/// Mappings in DAG files are small: scan them; index only the large ones.
const LINEAR_SCAN_MAX: usize = 32;

fn is_new_key(entries: &[(Node, Node)], seen: &mut Option<HashSet<String>>, name: &str) -> bool {
    if let Some(set) = seen {
        return set.insert(name.to_owned());
    }
    if entries.iter().any(|(k, _)| k.as_str() == Some(name)) {
        return false;
    }
    if entries.len() >= LINEAR_SCAN_MAX {
        let mut set: HashSet<String> = entries
            .iter()
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect();
        set.insert(name.to_owned());
        *seen = Some(set);
    }
    true
}

fn size_of(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size_of).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size_of(k) + size_of(v)).sum(),
        _ => 0,
    }
}

/// Applies `<<: *anchor` (or a list of them): merged keys fill in what the mapping lacks.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(k, _)| k.as_str() == Some("<<"));
    let mut present: HashSet<String> = own
        .iter()
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
        .collect();
    for (_, source) in merges {
        let maps = match source.value {
            Value::Seq(items) => items,
            other => vec![Node {
                loc: source.loc,
                value: other,
            }],
        };
        for map in maps {
            if let Value::Map(merged) = map.value {
                for (k, v) in merged {
                    if k.as_str()
                        .is_some_and(|name| present.insert(name.to_owned()))
                    {
                        own.push((k, v));
                    }
                }
            }
        }
    }
    own
}

fn reject_tag(tag: Option<&Tag>, expected: &str, loc: Loc) -> Result<(), Diagnostic> {
    match tag {
        None => Ok(()),
        Some(t) if t.core_suffix() == Some(expected) => Ok(()),
        Some(t) => Err(Diagnostic::error(
            Some(loc),
            format!("YAML tag `{}` is not supported in DAG files", t.original()),
        )),
    }
}

/// Types a scalar: quoted and block scalars are strings; plain ones follow YAML 1.2's core
/// schema (null, booleans, integers, floats), like serde-saphyr and most YAML 1.2 tools.
fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    loc: Loc,
) -> Result<Value, Diagnostic> {
    if let Some(tag) = tag {
        return match tag.core_suffix() {
            Some("str") => Ok(Value::Str(text.to_owned())),
            Some(kind @ ("int" | "float" | "bool" | "null")) => {
                let value = plain(text);
                let matches = matches!(
                    (kind, &value),
                    ("int", Value::Int(_) | Value::UInt(_))
                        | ("float", Value::Float(_) | Value::Int(_))
                        | ("bool", Value::Bool(_))
                        | ("null", Value::Null)
                );
                if matches {
                    Ok(value)
                } else {
                    Err(Diagnostic::error(
                        Some(loc),
                        format!("`{text}` is not a valid !!{kind}"),
                    ))
                }
            }
            _ => Err(Diagnostic::error(
                Some(loc),
                format!(
                    "YAML tag `{}` is not supported in DAG files",
                    tag.original()
                ),
            )),
        };
    }
    Ok(match style {
        ScalarStyle::Plain => plain(text),
        _ => Value::Str(text.to_owned()),
    })
}

fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::Str(text.to_owned());
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(v) = u64::from_str_radix(hex, 16) {
            return int(v);
        }
    } else if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(v) = u64::from_str_radix(oct, 8) {
            return int(v);
        }
    } else if is_decimal_int(text) {
        if let Ok(v) = text.parse::<i64>() {
            return Value::Int(v);
        }
        if let Ok(v) = text.parse::<u64>() {
            return Value::UInt(v);
        }
        return Value::Str(text.to_owned());
    } else if is_float(text)
        && let Ok(v) = text.parse::<f64>()
    {
        return Value::Float(v);
    }
    Value::Str(text.to_owned())
}

fn int(v: u64) -> Value {
    i64::try_from(v).map_or(Value::UInt(v), Value::Int)
}

fn is_decimal_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(f) => digits(whole) && digits(f) && !(whole.is_empty() && f.is_empty()),
        None => !whole.is_empty() && digits(whole),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        build(text).map(|(n, _)| n).expect("parse")
    }

    #[test]
    fn plain_scalars_are_typed_by_the_core_schema() {
        let n = root(
            "a: 1\nb: -2.5e3\nc: true\nd: ~\ne: 2024-01-01\nf: '1'\ng: 0x1F\nh: yes\ni: 1_000\n",
        );
        let v = |k: &str| n.get(k).map(|n| n.value.clone());
        assert_eq!(v("a"), Some(Value::Int(1)));
        assert_eq!(v("b"), Some(Value::Float(-2500.0)));
        assert_eq!(v("c"), Some(Value::Bool(true)));
        assert_eq!(v("d"), Some(Value::Null));
        assert_eq!(v("e"), Some(Value::Str("2024-01-01".into())));
        assert_eq!(v("f"), Some(Value::Str("1".into())));
        assert_eq!(v("g"), Some(Value::Int(31)));
        assert_eq!(
            v("h"),
            Some(Value::Str("yes".into())),
            "YAML 1.2: `yes` is a string"
        );
        assert_eq!(v("i"), Some(Value::Str("1_000".into())));
    }

    #[test]
    fn locations_are_one_based() {
        let n = root("id: x\ntasks:\n  a:\n    kind: noop\n");
        let kind = n
            .get("tasks")
            .and_then(|t| t.get("a"))
            .and_then(|a| a.get("kind"));
        assert_eq!(kind.map(|k| k.loc), Some(Loc { line: 4, col: 11 }));
    }

    #[test]
    fn anchors_aliases_and_merge_keys_resolve() {
        let n = root("base: &b {retries: 2, queue: q}\nt:\n  <<: *b\n  queue: own\n");
        let t = n.get("t").expect("t");
        assert_eq!(
            t.get("retries").map(|v| v.value.clone()),
            Some(Value::Int(2))
        );
        assert_eq!(
            t.get("queue").and_then(Node::as_str),
            Some("own"),
            "own keys win over merged ones"
        );
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_first_kept() {
        let (n, problems) = build("a: 1\nb: 2\na: 3\n").expect("parse");
        assert_eq!(n.get("a").map(|v| v.value.clone()), Some(Value::Int(1)));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].loc, Some(Loc { line: 3, col: 1 }));
    }

    #[test]
    fn an_alias_bomb_is_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        let err = build(&text).map(|_| ()).expect_err("bomb");
        assert!(err.message.contains("more than"), "{}", err.message);
    }

    #[test]
    fn custom_tags_and_second_documents_are_refused() {
        assert!(build("a: !include other.yaml\n").is_err());
        assert!(build("a: 1\n---\nb: 2\n").is_err());
        assert_eq!(
            root("a: !!str 12\n").get("a").map(|v| v.value.clone()),
            Some(Value::Str("12".into()))
        );
    }
}
