//! Problems found in DAG files: where (line and column) and what, as `FILE:LINE:COL: message`.

use std::fmt;

/// A place in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Loc {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl Loc {
    /// A place from serde-saphyr's 64-bit line and column.
    pub fn new(line: u64, col: u64) -> Loc {
        Loc {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }
}

/// How bad a problem is: errors make a file invalid, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The DAG cannot be used.
    Error,
    /// Worth fixing; the DAG still loads (e.g. a connection the configuration lacks).
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// Where, when the problem has a place in the file.
    pub loc: Option<Loc>,
    /// Error or warning.
    pub severity: Severity,
    /// A plain sentence saying what is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// An error at `loc`.
    pub fn error(loc: Option<Loc>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            loc,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `loc`.
    pub fn warning(loc: Option<Loc>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            loc,
            severity: Severity::Warning,
            message: message.into(),
        }
    }

    /// The problem as `FILE:LINE:COL: message` (warnings say so).
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayIn { d: self, file }
    }
}

struct DisplayIn<'a> {
    d: &'a Diagnostic,
    file: &'a str,
}

impl fmt::Display for DisplayIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some(loc) = self.d.loc {
            write!(f, "{}:{}:", loc.line, loc.col)?;
        }
        if self.d.severity == Severity::Warning {
            f.write_str(" warning:")?;
        }
        write!(f, " {}", self.d.message)
    }
}

/// Sorts problems by place (those without one first) and drops repeats.
pub(crate) fn tidy(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics
        .sort_by(|a, b| (a.loc, a.severity, &a.message).cmp(&(b.loc, b.severity, &b.message)));
    diagnostics.dedup();
}
