//! Checking templates when a DAG is validated: each parsed by tera ([`TemplateChecker`]), and
//! the names each reads ([`references`]) for the DAG's own checks.

use super::*;

/// A name a template reads under `params.` or `tasks.` (`params.day`, `tasks.extract.outputs`),
/// found by reading the template's expressions: validation checks that the param is declared
/// and the task is upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `params` or `tasks`.
    pub root: &'static str,
    /// The param or task id.
    pub name: String,
    /// Line inside the template, from 1.
    pub line: usize,
    /// Column inside the template, from 1.
    pub col: usize,
}

/// The `params.<name>` and `tasks.<id>` (also `params["name"]`) a template reads, in order.
/// Only expressions (`{{ }}`, `{% %}`) are read; string literals, comments and `raw` blocks
/// are skipped, and `x.params.y` is a field of `x`, not a reference.
pub fn references(text: &str) -> Vec<Reference> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_raw = false;
    while let Some(open) = text[i..].find(['{']).map(|p| p + i) {
        let next = bytes.get(open + 1).copied();
        let close = match next {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                i = open + 1;
                continue;
            }
        };
        let Some(end) = text[open + 2..].find(close).map(|p| p + open + 2) else {
            break;
        };
        let inner = &text[open + 2..end];
        let words: Vec<&str> = inner
            .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
            .split_whitespace()
            .collect();
        if next == Some(b'%') && words.first() == Some(&"raw") {
            in_raw = true;
        } else if next == Some(b'%') && words.first() == Some(&"endraw") {
            in_raw = false;
        } else if next != Some(b'#') && !in_raw {
            scan_expression(text, open + 2, end, &mut out);
        }
        i = end + close.len();
    }
    out
}

/// Finds references in `text[start..end]`, one expression.
pub(super) fn scan_expression(text: &str, start: usize, end: usize, out: &mut Vec<Reference>) {
    let bytes = text.as_bytes();
    let ident_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let ident_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = start;
    let mut after_dot = false;
    while i < end {
        let b = bytes[i];
        if matches!(b, b'"' | b'\'' | b'`') {
            i = text[i + 1..end]
                .find(b as char)
                .map_or(end, |p| i + 1 + p + 1);
            after_dot = false;
            continue;
        }
        if ident_start(b) {
            let word_end = (i..end).find(|&j| !ident_char(bytes[j])).unwrap_or(end);
            let word = &text[i..word_end];
            let root = match word {
                "params" if !after_dot => Some("params"),
                "tasks" if !after_dot => Some("tasks"),
                _ => None,
            };
            if let Some(root) = root
                && let Some(name) = member(text, word_end, end)
            {
                let (line, col) = line_col(text, i);
                out.push(Reference {
                    root,
                    name,
                    line,
                    col,
                });
            }
            after_dot = false;
            i = word_end;
            continue;
        }
        if !b.is_ascii_whitespace() {
            after_dot = b == b'.';
        }
        i += 1;
    }
}

/// The member named right after position `at`: `.name` or `["name"]`.
pub(super) fn member(text: &str, at: usize, end: usize) -> Option<String> {
    let rest = text[at..end].trim_start();
    if let Some(field) = rest.strip_prefix('.') {
        let name: String = field
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return (!name.is_empty()).then_some(name);
    }
    let inner = rest.strip_prefix('[')?.trim_start();
    let quote = inner.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &inner[1..];
    body.find(quote).map(|p| body[..p].to_owned())
}

/// Line and column (from 1) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |p| offset - p - 1) + 1;
    (line, col)
}

/// Parses templates to find syntax errors; one checker serves a whole DAG file and parses
/// each distinct template once (tasks of a file often share them).
pub struct TemplateChecker {
    pub(super) tera: tera::Tera,
    pub(super) passed: std::collections::HashSet<String>,
}

impl Default for TemplateChecker {
    fn default() -> Self {
        TemplateChecker {
            tera: environment(),
            passed: std::collections::HashSet::new(),
        }
    }
}

impl TemplateChecker {
    /// Checks one template.
    ///
    /// # Errors
    /// The first syntax error, with its place inside the template.
    pub fn check(&mut self, text: &str) -> Result<(), TemplateError> {
        if !is_template(text) || self.passed.contains(text) {
            return Ok(());
        }
        match self.tera.add_raw_template("check", text) {
            Ok(()) => {
                self.passed.insert(text.to_owned());
                Ok(())
            }
            Err(e) => Err(match e.kind() {
                tera::ErrorKind::SyntaxError(report) => TemplateError {
                    message: report
                        .message()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    line: report.span().start_line,
                    col: report.span().start_col + 1,
                },
                _ => from_report(&e.to_string()),
            }),
        }
    }
}

/// Reads tera's rendered report (`error: MESSAGE` / ` --> NAME:LINE:COL`) for errors that
/// carry no structured span (unknown filters and functions).
pub(super) fn from_report(report: &str) -> TemplateError {
    let mut lines = report.lines();
    let message = lines.next().unwrap_or_default();
    let message = message
        .strip_prefix("error: ")
        .unwrap_or(message)
        .to_owned();
    let place = lines
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|p| {
            let mut parts = p.rsplitn(3, ':');
            let col = parts.next()?.parse().ok()?;
            let line = parts.next()?.parse().ok()?;
            Some((line, col))
        });
    let (line, col) = place.unwrap_or((1, 1));
    TemplateError { message, line, col }
}
