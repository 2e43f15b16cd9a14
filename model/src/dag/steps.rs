//! Checks of each step's own shape (a `sql` step needs `sql` or `file`, a `load` one source,
//! ...) and of how its templates meet shell and SQL.

use super::*;

/// Whether a shell script has `{{` inside single quotes (outside comments), where the variable
/// reference a value becomes (see `Renderer::render_shell`) would stay text. A heuristic for a
/// warning: `$'…'` strings and quoted here-documents are not followed.
fn template_in_single_quotes(script: &str) -> bool {
    let (mut single, mut double, mut escaped, mut comment) = (false, false, false, false);
    let mut previous = ' ';
    for (i, c) in script.char_indices() {
        if comment {
            comment = c != '\n';
        } else if escaped {
            escaped = false;
        } else if single {
            if script[i..].starts_with("{{") {
                return true;
            }
            single = c != '\'';
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            double = !double;
        } else if c == '\'' && !double {
            single = true;
        } else if c == '#' && !double && previous.is_whitespace() {
            comment = true;
        }
        previous = c;
    }
    false
}

/// The first `{{ … | safe }}` of `text` that reads a param, an item or an upstream output:
/// values a triggering operator or an upstream task chooses, pasted into a script or a
/// statement as code.
pub(super) fn unsafe_value(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let inner = &rest[start + 2..];
        let end = inner.find("}}")?;
        let expr = &inner[..end];
        let safe = expr
            .split('|')
            .skip(1)
            .any(|filter| filter.trim() == "safe");
        let words = expr.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'));
        let chosen = words.clone().any(|w| {
            w == "item"
                || w.starts_with("item.")
                || w.starts_with("params")
                || w.starts_with("tasks.")
        });
        if safe && chosen {
            return Some(expr.trim());
        }
        rest = &inner[end + 2..];
    }
    None
}

pub(super) fn check_step(
    id: &str,
    step: &Step,
    at: &dyn Fn(&str) -> Option<Loc>,
    out: &mut Vec<Diagnostic>,
) {
    let mut texts: Vec<(String, String)> = Vec::new();
    if let Step::Shell(s) = step {
        texts.push(("run".to_owned(), s.run.clone()));
    }
    texts.extend(
        step.clone()
            .sql_texts_mut()
            .into_iter()
            .map(|t| (t.field, t.text.clone())),
    );
    for (field, text) in &texts {
        if let Some(expr) = unsafe_value(text) {
            let top = field.split(['.', '[']).next().unwrap_or(field);
            out.push(Diagnostic::warning(
                at(top),
                format!(
                    "task `{id}`: `{{{{ {expr} }}}}` in `{field}` pastes a value chosen by whoever triggers the run (or by an upstream task) into the code as it is: anyone who may trigger this DAG can run commands or statements with it; drop `| safe` to pass it as data"
                ),
            ));
        }
    }
    if let Step::Shell(s) = step
        && template_in_single_quotes(&s.run)
    {
        out.push(Diagnostic::warning(
            at("run"),
            format!(
                "task `{id}`: `{{{{ … }}}}` inside single quotes in `run` stays text: a value reaches the script as a variable (`${{WEIR_VALUE_1}}`), which single quotes do not expand; use double quotes"
            ),
        ));
    }
    let mut err =
        |k: &str, msg: String| out.push(Diagnostic::error(at(k), format!("task `{id}`: {msg}")));
    match step {
        Step::Sql(s) => match (s.sql.is_empty(), &s.file) {
            (true, None) => err(
                "kind",
                "a `sql` task needs `sql` (a statement or a list) or `file`".into(),
            ),
            (false, Some(_)) => err("file", "give either `sql` or `file`, not both".into()),
            _ => {}
        },
        Step::Shell(s) if s.run.trim().is_empty() => err("run", "`run` is empty".into()),
        Step::Load(l) => check_load(l, &mut err),
        Step::Validate(v) => {
            if v.checks.is_empty() {
                err("checks", "`checks` is empty".into());
            }
            for check in &v.checks {
                let conn = match check {
                    Check::RowCount(c) if c.file.is_some() => None,
                    Check::RowCount(c) => Some(&c.conn),
                    Check::NotNull(c) | Check::Unique(c) => Some(&c.conn),
                    Check::AcceptedValues(c) => Some(&c.conn),
                    Check::Range(c) => Some(&c.conn),
                    Check::Freshness(c) => Some(&c.conn),
                    Check::Sql(c) => Some(&c.conn),
                    Check::CompareCount(_) | Check::CompareChecksum(_) => None,
                };
                if conn.is_some_and(|c| c.is_none()) && v.conn.is_none() {
                    err(
                        "checks",
                        format!(
                            "check `{}` names no `conn` and the task has none",
                            check.name()
                        ),
                    );
                }
                let sides = match check {
                    Check::CompareCount(c) => vec![&c.source, &c.target],
                    Check::CompareChecksum(c) => vec![&c.source, &c.target],
                    _ => vec![],
                };
                for side in sides {
                    let ways = [
                        side.table.is_some(),
                        side.query.is_some(),
                        side.file.is_some(),
                    ]
                    .iter()
                    .filter(|b| **b)
                    .count();
                    if ways != 1 {
                        err(
                            "checks",
                            format!(
                                "check `{}`: each side needs exactly one of `table`, `query` or `file`",
                                check.name()
                            ),
                        );
                    } else if side.file.is_some() && side.conn.is_some() {
                        err(
                            "checks",
                            format!(
                                "check `{}`: a `file` side takes no `conn` (files name their location)",
                                check.name()
                            ),
                        );
                    } else if side.file.is_none() && side.conn.is_none() {
                        err(
                            "checks",
                            format!(
                                "check `{}`: a `table` or `query` side needs `conn`",
                                check.name()
                            ),
                        );
                    }
                }
                if let Check::RowCount(c) = check
                    && c.table.is_some() == c.file.is_some()
                {
                    err(
                        "checks",
                        "check `row_count` needs exactly one of `table` or `file`".into(),
                    );
                }
                if let Check::CompareChecksum(c) = check
                    && c.key.is_empty()
                {
                    err(
                        "checks",
                        "check `compare_checksum` needs `key` columns".into(),
                    );
                }
            }
        }
        Step::Export(e) => {
            use crate::spec::{Compression, ExportFormat};
            if e.table.is_some() == e.query.is_some() {
                err(
                    "kind",
                    "an `export` task needs exactly one of `table` or `query`".into(),
                );
            }
            let parquet = e.format == Some(ExportFormat::Parquet)
                || (e.format.is_none() && e.to.to_ascii_lowercase().ends_with(".parquet"));
            if !parquet && matches!(e.compression, Some(Compression::Snappy | Compression::Lz4)) {
                err(
                    "compression",
                    "snappy and lz4 are Parquet codecs; a CSV or JSON-lines file is compressed with gzip or zstd".into(),
                );
            }
            if e.row_group_size.is_some() && !parquet {
                err(
                    "row_group_size",
                    "`row_group_size` goes with Parquet".into(),
                );
            }
            if e.row_group_size
                .is_some_and(|n| !(1..=10_000_000).contains(&n))
            {
                err(
                    "row_group_size",
                    "`row_group_size` must be 1..=10000000 rows".into(),
                );
            }
        }
        Step::Transfer(t) => {
            if !(1..=64).contains(&t.parallel) {
                err(
                    "parallel",
                    format!("`parallel` must be 1..=64, found {}", t.parallel),
                );
            }
            if t.from.trim().is_empty() || t.to.trim().is_empty() {
                err("kind", "a `transfer` needs `from` and `to`".into());
            }
        }
        Step::WaitFor(w) => {
            let count = [w.file.is_some(), w.sql.is_some(), w.http.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if count != 1 {
                err(
                    "kind",
                    "a `wait_for` task needs exactly one of `file`, `sql` or `http`".into(),
                );
            }
            if w.sql.is_some() && w.conn.is_none() {
                err("sql", "`wait_for` with `sql` needs `conn`".into());
            }
            if w.interval.0.is_zero() {
                err("interval", "`interval` must be more than 0s".into());
            }
        }
        Step::Python(p) => {
            match (&p.script, &p.file) {
                (None, None) => err("kind", "a `python` task needs `script` or `file`".into()),
                (Some(_), Some(_)) => {
                    err("file", "give either `script` or `file`, not both".into())
                }
                (Some(s), None) if s.trim().is_empty() => err("script", "`script` is empty".into()),
                _ => {}
            }
            check_environment(p.requirements.as_ref(), p.python.as_deref(), &mut err);
        }
        Step::Dbt(d) => {
            if d.project.trim().is_empty() {
                err(
                    "project",
                    "`project` is empty: name the dbt project's folder".into(),
                );
            }
            if !(1..=64).contains(&d.threads) {
                err(
                    "threads",
                    format!("`threads` must be 1..=64, found {}", d.threads),
                );
            }
            if d.full_refresh
                && matches!(
                    d.command,
                    crate::spec::DbtCommand::Test | crate::spec::DbtCommand::Snapshot
                )
            {
                err(
                    "full_refresh",
                    format!(
                        "`full_refresh` rebuilds models and seeds: it goes with `build`, `run` or `seed`, not `{}`",
                        d.command.as_str()
                    ),
                );
            }
            check_environment(d.requirements.as_ref(), d.python.as_deref(), &mut err);
        }
        Step::Http(h) if h.json.is_some() && h.body.is_some() => {
            err("body", "give either `json` or `body`, not both".into())
        }
        Step::Http(h) => {
            if let Some(bad) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
                err(
                    "expect_status",
                    format!("{bad} is not an HTTP status code (100-599)"),
                );
            }
            if h.paginate.is_some()
                && (h.save_to.is_none() || h.method != crate::spec::HttpMethod::Get)
            {
                err(
                    "paginate",
                    "`paginate` follows a GET's pages into `save_to`: give `save_to` (and no other method)".into(),
                );
            }
            if h.records.is_some() && h.paginate.is_none() {
                err("records", "`records` goes with `paginate`".into());
            }
        }
        _ => {}
    }
}

pub(super) fn check_load(l: &LoadStep, err: &mut dyn FnMut(&str, String)) {
    let s = &l.source;
    let origins = [s.file.is_some(), s.http.is_some(), s.conn.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if origins != 1 {
        err(
            "source",
            "`source` needs exactly one of `file`, `http` or `conn`".into(),
        );
    }
    if s.conn.is_some() && s.query.is_some() == s.table.is_some() {
        err(
            "source",
            "a `conn` source needs exactly one of `query` or `table`".into(),
        );
    }
    if s.conn.is_none() && (s.query.is_some() || s.table.is_some()) {
        err("source", "`query` and `table` go with `conn`".into());
    }
    if let Some(p) = &s.paginate {
        if s.http.is_none() {
            err("source", "`paginate` goes with an `http` source".into());
        }
        let ways = [
            p.next.is_some(),
            p.page_param.is_some(),
            p.offset_param.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if ways != 1 {
            err(
                "source",
                "`paginate` needs exactly one of `next`, `page_param` or `offset_param`".into(),
            );
        }
        if p.cursor_param.is_some() && p.next.as_deref().is_none_or(|n| n == "link_header") {
            err(
                "source",
                "`cursor_param` goes with `next: PATH` (a cursor in the page's JSON)".into(),
            );
        }
        if p.max_pages == Some(0) {
            err("source", "`max_pages` must be at least 1".into());
        }
    }
    if let Some(c @ (crate::spec::Compression::Snappy | crate::spec::Compression::Lz4)) =
        s.compression
    {
        err(
            "source",
            format!(
                "`compression: {}` is a Parquet codec, which a Parquet file names itself; a source's `compression` is gzip, zstd or none",
                if c == crate::spec::Compression::Snappy {
                    "snappy"
                } else {
                    "lz4"
                }
            ),
        );
    }
    if s.compression.is_some() && s.file.is_none() {
        err("source", "`compression` goes with a `file` source".into());
    }
    if s.claim.is_some() && s.file.is_none() {
        err("source", "`claim` goes with a `file` source".into());
    }
    if s.header == Some(false) && l.columns.is_none() && l.column_sets.is_empty() {
        err(
            "source",
            "a CSV source with `header: false` needs `columns` (or `column_sets`): its first line does not name them".into(),
        );
    }
    if l.column_set.is_some() == l.column_sets.is_empty() {
        err(
            "column_set",
            "`column_set` picks one of `column_sets`: give both or neither".into(),
        );
    }
    if l.column_set.is_some() && l.columns.is_some() {
        err(
            "columns",
            "`columns` and `column_set` exclude each other".into(),
        );
    }
    if s.records.is_some()
        && s.format
            .is_some_and(|f| f != crate::spec::SourceFormat::Json)
    {
        err("source", "`records` goes with `format: json`".into());
    }
    if !(1..=100_000).contains(&l.batch_size) {
        err(
            "batch_size",
            format!("`batch_size` must be 1..=100000, found {}", l.batch_size),
        );
    }
    if l.mode == LoadMode::Upsert && l.key.is_empty() {
        err(
            "mode",
            "`mode: upsert` needs `key` (the columns that identify a row)".into(),
        );
    }
    if l.mode != LoadMode::Upsert && !l.key.is_empty() {
        err("key", "`key` is only used with `mode: upsert`".into());
    }
    if let Some(columns) = &l.columns {
        for k in &l.key {
            if !columns.contains_key(k) {
                let hint = did_you_mean(k, columns.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                err("key", format!("key column `{k}` is not in `columns`{hint}"));
            }
        }
        if let Some(inc) = &l.incremental
            && !columns.contains_key(&inc.cursor)
        {
            err(
                "incremental",
                format!("cursor column `{}` is not in `columns`", inc.cursor),
            );
        }
    }
}

/// An environment's `requirements` and `python`: requirement lines (one each, not empty), a
/// requirements file pip or uv reads, a version of digits and dots.
fn check_environment(
    requirements: Option<&crate::spec::Requirements>,
    python: Option<&str>,
    err: &mut dyn FnMut(&str, String),
) {
    use crate::spec::Requirements;
    match requirements {
        Some(Requirements::List(lines)) => {
            for line in lines {
                if line.trim().is_empty() || line.contains(['\n', '\r']) {
                    err(
                        "requirements",
                        format!(
                            "requirement `{line}` must be one line of a package (`pandas==2.3.3`)"
                        ),
                    );
                }
            }
        }
        Some(Requirements::File(path)) => {
            let name = path.rsplit('/').next().unwrap_or(path);
            if !(name == "pyproject.toml" || name.ends_with(".txt") || name.ends_with(".in")) {
                err(
                    "requirements",
                    format!(
                        "`requirements: {path}` must be a list of packages, a requirements file (`.txt`, `.in`) or a `pyproject.toml`"
                    ),
                );
            }
        }
        None => {}
    }
    if let Some(v) = python {
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() > 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            err(
                "python",
                format!("`python: {v}` is not a Python version (write `3.12` or `3.12.1`)"),
            );
        }
    }
}
