//! Task templates (tera): every string field of a task is a template, parsed when the DAG is
//! validated and rendered just before a try runs.

/// Whether `text` contains template syntax at all (most strings do not: they skip the parser).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// A template that does not parse: the message, and its line and column inside the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Tera's message.
    pub message: String,
    /// Line inside the template, from 1.
    pub line: usize,
    /// Column inside the template, from 1.
    pub col: usize,
}

use chrono::{Duration, NaiveDate};
use tera::{Kwargs, State, TeraResult, Value};

/// The names weir adds to tera's: `ds_add(ds=.., days=..)`, `ds_format(ds=.., in=.., out=..)`
/// and the `tojson` filter.
pub const HELPERS: [&str; 3] = ["ds_add", "ds_format", "tojson"];

/// A tera environment with weir's helpers. Validation and rendering use the same one, so a
/// template that validates has every function and filter it names.
pub fn environment() -> tera::Tera {
    let mut tera = tera::Tera::default();
    tera.register_function("ds_add", ds_add);
    tera.register_function("ds_format", ds_format);
    tera.register_filter("tojson", tojson);
    tera
}

/// `ds_add(ds="2024-01-31", days=-7)`: a `YYYY-MM-DD` date moved by whole days.
fn ds_add(kwargs: Kwargs, _: &State<'_>) -> TeraResult<String> {
    let ds = kwargs.must_get::<&str>("ds")?;
    let days = kwargs.must_get::<i64>("days")?;
    let date = parse_ds(ds)?;
    Duration::try_days(days)
        .and_then(|d| date.checked_add_signed(d))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| tera::Error::message(format!("ds_add: {ds} + {days} days is out of range")))
}

/// `ds_format(ds="2024-01-31", in="%Y-%m-%d", out="%d/%m/%Y")`: a date re-written.
fn ds_format(kwargs: Kwargs, _: &State<'_>) -> TeraResult<String> {
    let ds = kwargs.must_get::<&str>("ds")?;
    let input = kwargs.get::<&str>("in")?.unwrap_or("%Y-%m-%d");
    let output = kwargs.must_get::<&str>("out")?;
    let date = NaiveDate::parse_from_str(ds, input).map_err(|e| {
        tera::Error::message(format!("ds_format: `{ds}` does not match `{input}`: {e}"))
    })?;
    let mut text = String::new();
    use std::fmt::Write;
    write!(text, "{}", date.format(output)).map_err(|_| {
        tera::Error::message(format!("ds_format: `{output}` is not a valid date format"))
    })?;
    Ok(text)
}

fn parse_ds(ds: &str) -> TeraResult<NaiveDate> {
    NaiveDate::parse_from_str(ds, "%Y-%m-%d")
        .map_err(|e| tera::Error::message(format!("`{ds}` is not a YYYY-MM-DD date: {e}")))
}

/// `{{ value | tojson }}`: the value as JSON (for `foreach` templates and SQL/HTTP bodies).
fn tojson(value: Value, _: Kwargs, _: &State<'_>) -> TeraResult<String> {
    serde_json::to_string(&value).map_err(|e| tera::Error::message(format!("tojson: {e}")))
}

/// Parses templates to find syntax errors; one checker serves a whole DAG file and parses
/// each distinct template once (tasks of a file often share them).
pub struct TemplateChecker {
    tera: tera::Tera,
    passed: std::collections::HashSet<String>,
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
fn from_report(report: &str) -> TemplateError {
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

#[cfg(test)]
mod tests {
    use super::TemplateChecker;

    #[test]
    fn an_unclosed_expression_is_reported_with_its_place() {
        let err = TemplateChecker::default()
            .check("echo {{ ds")
            .expect_err("unclosed");
        assert_eq!(err.line, 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn plain_text_and_good_templates_pass() {
        let mut checker = TemplateChecker::default();
        assert_eq!(checker.check("echo hello"), Ok(()));
        assert_eq!(
            checker.check("echo {{ ds }} {{ params.x | default(value=1) }}"),
            Ok(())
        );
        assert_eq!(
            checker.check("{% if params.full %}full{% else %}delta{% endif %}"),
            Ok(())
        );
    }

    #[test]
    fn weirs_helpers_are_known_and_unknown_filters_are_not() {
        let mut checker = TemplateChecker::default();
        assert_eq!(checker.check("{{ ds_add(ds=ds, days=-1) }} {{ ds_format(ds=ds, in=\"%Y-%m-%d\", out=\"%d/%m\") }} {{ params.t | tojson }}"), Ok(()));
        let err = checker
            .check("{{ params.t | json_encod }}")
            .expect_err("unknown filter");
        assert!(err.message.contains("json_encod"), "{}", err.message);
        assert!(!err.message.contains('\n'), "one line: {}", err.message);
    }

    #[test]
    fn helpers_compute_dates() {
        let tera = super::environment();
        let mut ctx = tera::Context::new();
        ctx.insert("ds", "2024-03-01");
        ctx.insert("items", &vec!["a", "b\"c"]);
        let out = tera.render_str("{{ ds_add(ds=ds, days=-1) }}|{{ ds_format(ds=ds, out=\"%d/%m/%Y\") }}|{{ items | tojson }}", &ctx, false);
        assert_eq!(
            out.ok().as_deref(),
            Some(r#"2024-02-29|01/03/2024|["a","b\"c"]"#)
        );
    }
}
