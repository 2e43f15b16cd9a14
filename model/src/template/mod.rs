//! Task templates (tera): every string field of a task is a template, parsed when the DAG is
//! validated and rendered just before a try runs.
//!
//! # Layout
//! - this module: weir's tera environment and helpers (`ds_add`, `ds_format`, `tojson`,
//!   `ident`), rendering notification messages, `when` and `foreach` results;
//! - `context`: [`RenderContext`]; `render`: [`Renderer`] (text, shell, SQL, paths);
//! - `check`: [`TemplateChecker`] and [`references`], for validation.

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

use crate::error::RenderError;
use tera::{Kwargs, State, TeraResult, Value};

mod check;
mod context;
mod render;

pub use check::{Reference, TemplateChecker, references};
pub use context::RenderContext;
pub use render::{Renderer, SHELL_VALUE_PREFIX};

/// The names weir adds to tera's: `ds_add(ds=.., days=..)`, `ds_format(ds=.., in=.., out=..)`
/// and the `tojson` and `ident` filters.
pub const HELPERS: [&str; 4] = ["ds_add", "ds_format", "tojson", "ident"];

/// `{{ x | ident }}`: `x` as a table or column name. Outside SQL text, `x` as it is.
fn ident(value: String, _: Kwargs, _: &State<'_>) -> String {
    value
}

/// A tera environment with weir's helpers. Validation and rendering use the same one, so a
/// template that validates has every function and filter it names.
pub fn environment() -> tera::Tera {
    let mut tera = tera::Tera::default();
    tera.register_function("ds_add", ds_add);
    tera.register_function("ds_format", ds_format);
    tera.register_filter("tojson", tojson);
    tera.register_filter("ident", ident);
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

/// Renders one template over a JSON context with weir's environment (notification messages).
///
/// # Errors
/// The template's error, with tera's location inside the template.
pub fn render_json(text: &str, context: &serde_json::Value) -> Result<String, RenderError> {
    if !is_template(text) {
        return Ok(text.to_owned());
    }
    let context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
    environment()
        .render_str(text, &context, false)
        .map_err(|e| RenderError(render_error(&e)))
}

/// Tera's error as one line: its message and where in the template, without tera's drawing
/// of the line or the internal name of a one-off template.
fn render_error(e: &tera::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let mut message = Vec::new();
    let mut place = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(at) = line.strip_prefix("--> ") {
            let mut parts = at.rsplitn(3, ':');
            let col = parts.next().unwrap_or_default();
            let row = parts.next().unwrap_or_default();
            place = Some(format!("line {row}, column {col}"));
        } else if line.starts_with('|')
            || line.chars().next().is_some_and(|c| c.is_ascii_digit()) && line.contains(" | ")
        {
            // tera's excerpt of the template, drawn over several lines
        } else {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let message = message.join(" ");
    match place {
        Some(place) => format!("{message} (template {place})"),
        None => message,
    }
}

/// Whether a rendered `when` means "skip": empty, `false`, `0`, `no`, `none` (any case).
pub fn is_falsy(rendered: &str) -> bool {
    matches!(
        rendered.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "no" | "none"
    )
}

/// Parses a rendered `foreach` template: a JSON list, or one item per non-empty line.
///
/// # Errors
/// A JSON value that is not a list.
pub fn parse_items(rendered: &str) -> Result<Vec<serde_json::Value>, RenderError> {
    let trimmed = rendered.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Array(items)) => Ok(items),
            Ok(other) => Err(RenderError(format!(
                "`foreach` must render a list, got {other}"
            ))),
            Err(e) => Err(RenderError(format!(
                "`foreach` rendered `{trimmed}`, which is not a JSON list: {e}"
            ))),
        };
    }
    Ok(trimmed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::Value::String(l.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{RenderContext, Renderer, TemplateChecker};

    fn renderer(params: serde_json::Value) -> Renderer {
        let ctx = RenderContext {
            params,
            ds_nodash: "20240301".into(),
            ..RenderContext::default()
        };
        Renderer::new(&ctx).expect("renderer")
    }

    fn export(to: &str) -> crate::Step {
        crate::Step::Export(crate::spec::ExportStep {
            conn: "wh".into(),
            table: Some("t".into()),
            query: None,
            to: to.into(),
            format: None,
            compression: None,
            row_group_size: None,
        })
    }

    /// A value in a path may not lead out of the folder the DAG names (issue #14).
    #[test]
    fn a_value_in_a_path_cannot_climb_out_of_its_folder() {
        let dialect = |_: &str| Ok(crate::sql::Dialect::Sqlite);
        let to = |step: crate::Step| match step {
            crate::Step::Export(e) => e.to,
            other => panic!("{other:?}"),
        };
        let r =
            renderer(serde_json::json!({"name": "sales/2024", "up": "../../home/weir/.bashrc"}));
        let step = r
            .render_step(
                &export("/out/{{ params.name }}_{{ ds_nodash }}.csv"),
                &dialect,
            )
            .expect("rendered");
        assert_eq!(to(step), "/out/sales/2024_20240301.csv");
        for bad in [
            "/out/{{ params.up }}",
            "{{ params.up }}",
            "/out/x{{ params.up }}",
        ] {
            let e = r.render_step(&export(bad), &dialect).expect_err(bad);
            assert!(e.0.contains("`to`") && e.0.contains("`..`"), "{bad}: {e}");
        }
        // The author's own `..` and an explicit `| safe` stay as written.
        let step = r
            .render_step(&export("../out/{{ params.up | safe }}"), &dialect)
            .expect("rendered");
        assert_eq!(to(step), "../out/../../home/weir/.bashrc");
    }

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
    fn a_try_renders_with_the_spec_context() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default()
        };
        let mut ctx = super::RenderContext::for_run(
            "d",
            "d__x",
            t("2024-03-01T06:00:00Z"),
            (t("2024-03-01T06:00:00Z"), t("2024-03-02T06:00:00Z")),
            chrono_tz::Tz::UTC,
            serde_json::json!({"n": 3}),
        );
        ctx.add_outputs("up", serde_json::json!({"rows": "42"}));
        ctx.item = serde_json::json!("t1");
        let r = super::Renderer::new(&ctx).expect("renderer");
        let out = r.render("{{ ds }} {{ ds_nodash }} {{ params.n + 1 }} {{ tasks.up.outputs.rows }} {{ item }} {{ data_interval_end }}");
        assert_eq!(
            out.as_deref(),
            Ok("2024-03-01 20240301 4 42 t1 2024-03-02T06:00:00Z")
        );
        let err = r
            .render("{{ tasks.nope.outputs.rows }}")
            .expect_err("no such task");
        assert_eq!(
            err.0,
            "Field `nope` is not defined. Available fields: up (template line 1, column 10); `params` has: n; upstream outputs: tasks.up.outputs: rows"
        );
        assert!(super::is_falsy(" No ") && super::is_falsy("") && !super::is_falsy("yes"));
        assert_eq!(
            super::parse_items("[1, \"a\"]"),
            Ok(vec![serde_json::json!(1), serde_json::json!("a")])
        );
        assert_eq!(
            super::parse_items("a\nb\n"),
            Ok(vec![serde_json::json!("a"), serde_json::json!("b")])
        );
    }

    /// Midnight of the DAG's day, east and west of UTC and on both sides of DST changes: `ds`
    /// is the local day, `ds_utc` the UTC one, timestamps carry the local offset.
    #[test]
    fn dates_are_the_dags_days_in_its_time_zone() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default()
        };
        let cases = [
            // zone, logical date (UTC), interval end (UTC), ds, ds_utc, ts, data_interval_end
            (
                "Europe/Zurich",
                "2024-02-29T23:00:00Z",
                "2024-03-01T23:00:00Z",
                "2024-03-01",
                "2024-02-29",
                "2024-03-01T00:00:00+01:00",
                "2024-03-02T00:00:00+01:00",
            ),
            // Berlin springs forward on March 31st: a 23-hour day.
            (
                "Europe/Berlin",
                "2024-03-30T23:00:00Z",
                "2024-03-31T22:00:00Z",
                "2024-03-31",
                "2024-03-30",
                "2024-03-31T00:00:00+01:00",
                "2024-04-01T00:00:00+02:00",
            ),
            // Los Angeles falls back on November 3rd: a 25-hour day.
            (
                "America/Los_Angeles",
                "2024-11-03T07:00:00Z",
                "2024-11-04T08:00:00Z",
                "2024-11-03",
                "2024-11-03",
                "2024-11-03T00:00:00-07:00",
                "2024-11-04T00:00:00-08:00",
            ),
            // West of UTC late in the day: the UTC date is already tomorrow.
            (
                "America/New_York",
                "2024-05-01T23:30:00Z",
                "2024-05-02T23:30:00Z",
                "2024-05-01",
                "2024-05-01",
                "2024-05-01T19:30:00-04:00",
                "2024-05-02T19:30:00-04:00",
            ),
            (
                "Asia/Tokyo",
                "2024-04-30T15:00:00Z",
                "2024-05-01T15:00:00Z",
                "2024-05-01",
                "2024-04-30",
                "2024-05-01T00:00:00+09:00",
                "2024-05-02T00:00:00+09:00",
            ),
            (
                "UTC",
                "2024-05-01T00:00:00Z",
                "2024-05-02T00:00:00Z",
                "2024-05-01",
                "2024-05-01",
                "2024-05-01T00:00:00Z",
                "2024-05-02T00:00:00Z",
            ),
        ];
        for (zone, logical, end, ds, ds_utc, ts, interval_end) in cases {
            let tz: chrono_tz::Tz = zone.parse().expect("zone");
            let ctx = super::RenderContext::for_run(
                "d",
                "r",
                t(logical),
                (t(logical), t(end)),
                tz,
                serde_json::json!({}),
            );
            let r = super::Renderer::new(&ctx).expect("renderer");
            let out = r
                .render("{{ ds }}|{{ ds_nodash }}|{{ ds_utc }}|{{ ts }}|{{ ts_utc }}|{{ data_interval_start }}|{{ data_interval_end }}")
                .expect("render");
            let want = format!(
                "{ds}|{}|{ds_utc}|{ts}|{}|{ts}|{interval_end}",
                ds.replace('-', ""),
                t(logical).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
            assert_eq!(out, want, "{zone}");
        }
    }

    #[test]
    fn references_are_found_in_expressions_only() {
        let refs = super::references(
            "echo {{ params.day }} '{{ \"params.no\" }}' {# params.comment #}\n{% if tasks.extract.outputs.rows > 0 %}{{ params[\"n\"] }}{{ x.params.y }}{% endif %}{% raw %}{{ params.raw }}{% endraw %} params.text",
        );
        let got: Vec<(&str, &str, usize, usize)> = refs
            .iter()
            .map(|r| (r.root, r.name.as_str(), r.line, r.col))
            .collect();
        assert_eq!(
            got,
            [
                ("params", "day", 1, 9),
                ("tasks", "extract", 2, 7),
                ("params", "n", 2, 43)
            ]
        );
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
