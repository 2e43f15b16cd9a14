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
/// and the `tojson` and `ident` filters.
pub const HELPERS: [&str; 4] = ["ds_add", "ds_format", "tojson", "ident"];

/// The variables a shell script's values travel in: `WEIR_VALUE_1`, `WEIR_VALUE_2`, ...
pub const SHELL_VALUE_PREFIX: &str = "WEIR_VALUE_";

thread_local! {
    /// The values [`Renderer::render_shell`] and [`Renderer::render_sql`] collect while tera
    /// renders on this thread (tera takes a plain function as its escape function, so the list
    /// cannot be passed to it).
    static VALUES: std::cell::RefCell<Vec<crate::sql::Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Adds a value to this thread's list: its number, from 1.
fn collect(value: crate::sql::Value) -> usize {
    VALUES.with(|v| {
        let mut v = v.borrow_mut();
        v.push(value);
        v.len()
    })
}

/// Runs `render` with an empty list of values; returns what it rendered and the values it
/// collected.
fn collecting<T>(render: impl FnOnce() -> T) -> (T, Vec<crate::sql::Value>) {
    VALUES.with(|v| v.borrow_mut().clear());
    let rendered = render();
    (
        rendered,
        VALUES.with(|v| std::mem::take(&mut *v.borrow_mut())),
    )
}

/// Tera's escape function for shell scripts: the value goes to the list, the script gets a
/// reference to it.
fn shell_value(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = collect(crate::sql::Value::Text(value.to_owned()));
    write!(out, "${{{SHELL_VALUE_PREFIX}{n}}}")
}

/// Tera's escape function for SQL text: the value goes to the list, the text gets a marker
/// that [`crate::sql::place_values`] replaces.
fn sql_value(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = collect(crate::sql::Value::Text(value.to_owned()));
    out.write_all(crate::sql::marker(n).as_bytes())
}

/// Tera's escape function for paths: the value goes to the list, the path gets a marker that
/// [`Renderer::render_path`] replaces once the value is checked.
fn path_value(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = collect(crate::sql::Value::Text(value.to_owned()));
    out.write_all(crate::sql::marker(n).as_bytes())
}

/// `{{ x | ident }}`: `x` as a table or column name. Outside SQL text, `x` as it is.
fn ident(value: String, _: Kwargs, _: &State<'_>) -> String {
    value
}

/// `{{ x | ident }}` in SQL text: `x` goes to the list as a name (checked and quoted when it
/// is placed), the text gets its marker. Safe for tera, so the marker is not escaped again.
struct SqlName;

impl tera::Filter<String, String> for SqlName {
    fn call(&self, value: String, _: Kwargs, _: &State<'_>) -> String {
        crate::sql::marker(collect(crate::sql::Value::Name(value)))
    }

    fn is_safe(&self) -> bool {
        true
    }
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
pub fn render_json(text: &str, context: &serde_json::Value) -> Result<String, String> {
    if !is_template(text) {
        return Ok(text.to_owned());
    }
    let context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
    environment()
        .render_str(text, &context, false)
        .map_err(|e| render_error(&e))
}

/// What a task's templates can read (SPEC §2), for one try.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RenderContext {
    /// DAG id.
    pub dag_id: String,
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// The try about to run (from 1).
    pub try_number: i32,
    /// `YYYY-MM-DD` of the logical date in the DAG's time zone: the day the user means.
    pub ds: String,
    /// `YYYYMMDD` of the same day.
    pub ds_nodash: String,
    /// The logical date in the DAG's time zone, RFC 3339 with its offset.
    pub ts: String,
    /// Same as `ts`.
    pub logical_date: String,
    /// `YYYY-MM-DD` of the logical date in UTC.
    pub ds_utc: String,
    /// The logical date in UTC, RFC 3339 (`Z`).
    pub ts_utc: String,
    /// The data interval's start in the DAG's time zone, RFC 3339 with its offset.
    pub data_interval_start: String,
    /// The data interval's end, likewise.
    pub data_interval_end: String,
    /// The DAG's IANA time zone.
    pub timezone: String,
    /// The run's params.
    pub params: serde_json::Value,
    /// This instance's `foreach` item (null otherwise).
    pub item: serde_json::Value,
    /// `tasks.<id>.outputs.<key>` of upstream tasks in the run.
    pub tasks: serde_json::Map<String, serde_json::Value>,
    /// Allowed environment variables.
    pub env: serde_json::Map<String, serde_json::Value>,
}

impl RenderContext {
    /// The context of a run at `logical_date` with its interval, of a DAG in time zone `tz`:
    /// dates are the DAG's (a daily DAG's `ds` is the day it runs for, wherever the zone is);
    /// `ds_utc` and `ts_utc` keep the UTC forms.
    pub fn for_run(
        dag_id: &str,
        run_id: &str,
        logical_date: chrono::DateTime<chrono::Utc>,
        interval: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
        tz: chrono_tz::Tz,
        params: serde_json::Value,
    ) -> RenderContext {
        let local = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&tz);
        let rfc = |t: chrono::DateTime<chrono::Utc>| {
            // `Z` for UTC itself, the offset otherwise.
            local(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        let day = local(logical_date);
        RenderContext {
            dag_id: dag_id.to_owned(),
            run_id: run_id.to_owned(),
            ds: day.format("%Y-%m-%d").to_string(),
            ds_nodash: day.format("%Y%m%d").to_string(),
            ts: rfc(logical_date),
            logical_date: rfc(logical_date),
            ds_utc: logical_date.format("%Y-%m-%d").to_string(),
            ts_utc: logical_date.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            data_interval_start: rfc(interval.0),
            data_interval_end: rfc(interval.1),
            timezone: tz.name().to_owned(),
            params,
            ..RenderContext::default()
        }
    }

    /// Records the outputs of a run's succeeded instances, given as `(task_id, map_index,
    /// outputs)`: a mapped task's outputs become a list in map-index order.
    pub fn add_succeeded_outputs<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a str, i32, Option<&'a serde_json::Value>)>,
    ) {
        let mut mapped: std::collections::BTreeMap<&str, Vec<(i32, serde_json::Value)>> =
            std::collections::BTreeMap::new();
        for (task_id, map_index, outputs) in rows {
            let outputs = outputs.cloned().unwrap_or_else(|| serde_json::json!({}));
            if map_index >= 0 {
                mapped
                    .entry(task_id)
                    .or_default()
                    .push((map_index, outputs));
            } else {
                self.add_outputs(task_id, outputs);
            }
        }
        for (task_id, mut list) in mapped {
            list.sort_by_key(|(i, _)| *i);
            self.add_outputs(
                task_id,
                serde_json::Value::Array(list.into_iter().map(|(_, v)| v).collect()),
            );
        }
    }

    /// Sets `env.<NAME>` to the allowed environment variables and their values.
    pub fn set_env(&mut self, allowed: &std::collections::BTreeMap<String, String>) {
        self.env = allowed
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
    }

    /// What a template can read besides the dates, for error messages: the params' names and
    /// the upstream outputs' keys.
    fn available(&self) -> String {
        let names = |v: &serde_json::Value| match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            }
            _ => "nothing".to_owned(),
        };
        let outputs: Vec<String> = self
            .tasks
            .iter()
            .map(|(id, t)| match &t["outputs"] {
                serde_json::Value::Array(list) => {
                    format!("tasks.{id}.outputs (a list of {})", list.len())
                }
                other => format!("tasks.{id}.outputs: {}", names(other)),
            })
            .collect();
        format!(
            "`params` has: {}; upstream outputs: {}",
            names(&self.params),
            if outputs.is_empty() {
                "none".to_owned()
            } else {
                outputs.join("; ")
            }
        )
    }

    /// Records an upstream task's outputs (`tasks.<id>.outputs`).
    pub fn add_outputs(&mut self, task_id: &str, outputs: serde_json::Value) {
        let mut entry = serde_json::Map::new();
        entry.insert("outputs".to_owned(), outputs);
        self.tasks
            .insert(task_id.to_owned(), serde_json::Value::Object(entry));
    }
}

/// Renders templates of one try with one environment.
pub struct Renderer {
    tera: tera::Tera,
    /// The same environment, escaping every value into a variable reference (shell scripts).
    shell: tera::Tera,
    /// The same environment, escaping every value into a marker (SQL text).
    sql: tera::Tera,
    /// The same environment, escaping every value into a marker (paths).
    path: tera::Tera,
    context: tera::Context,
    /// What the context holds, for errors: `params` has: …; upstream outputs: ….
    available: String,
}

impl Renderer {
    /// A renderer for `context`.
    ///
    /// # Errors
    /// A context that does not serialize (never with JSON values).
    pub fn new(context: &RenderContext) -> Result<Renderer, String> {
        let available = context.available();
        let context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
        let mut shell = environment();
        shell.set_escape_fn(shell_value);
        let mut sql = environment();
        sql.set_escape_fn(sql_value);
        sql.register_filter("ident", SqlName);
        let mut path = environment();
        path.set_escape_fn(path_value);
        Ok(Renderer {
            path,
            tera: environment(),
            shell,
            sql,
            context,
            available,
        })
    }

    /// Renders one template; plain text comes back as is.
    ///
    /// # Errors
    /// The template's error, with tera's location inside the template.
    pub fn render(&self, text: &str) -> Result<String, String> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        self.tera
            .render_str(text, &self.context, false)
            .map_err(|e| format!("{}; {}", render_error(&e), self.available))
    }

    /// Renders a shell script so that no value can become code: every `{{ … }}` becomes a
    /// reference to a variable, `${WEIR_VALUE_n}`, whose value the returned list holds (the
    /// try's environment carries them). The shell expands a variable without parsing its value
    /// again, so `$(…)`, backticks, `;` or quotes in a param, an output or an item stay text,
    /// inside double quotes or bare. `{{ x | safe }}` puts `x` into the script as it is, for
    /// values the DAG's author controls. Inside single quotes a reference is not expanded:
    /// validation warns about `{{` there.
    ///
    /// # Errors
    /// The template's error, with tera's location inside the template.
    pub fn render_shell(&self, text: &str) -> Result<(String, Vec<(String, String)>), String> {
        if !is_template(text) {
            return Ok((text.to_owned(), Vec::new()));
        }
        let (rendered, values) = collecting(|| self.shell.render_str(text, &self.context, true));
        let rendered = rendered.map_err(|e| format!("{}; {}", render_error(&e), self.available))?;
        let values = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let (crate::sql::Value::Text(v) | crate::sql::Value::Name(v)) = v;
                (format!("{SHELL_VALUE_PREFIX}{}", i + 1), v)
            })
            .collect();
        Ok((rendered, values))
    }

    /// Renders SQL text of `dialect` so that no value can become code: each `{{ … }}` is placed
    /// by where it stands ([`crate::sql::place_values`]): escaped inside a string, a quoted
    /// name or a comment; standing alone, a number as it is and other text as a quoted string;
    /// `{{ x | ident }}` as a quoted table or column name. `{{ x | safe }}` puts `x` in as it
    /// is, for values the DAG's author controls.
    ///
    /// # Errors
    /// The template's error, or a value that cannot stand where it is.
    pub fn render_sql(&self, text: &str, dialect: crate::sql::Dialect) -> Result<String, String> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        let (rendered, values) = collecting(|| self.sql.render_str(text, &self.context, true));
        let rendered = rendered.map_err(|e| format!("{}; {}", render_error(&e), self.available))?;
        crate::sql::place_values(dialect, &rendered, &values)
    }

    /// Renders a file-system path whose values may not climb out of the folder the DAG writes:
    /// a value with a `..` component (`../../etc/cron.d/x`) or a NUL is refused. `| safe`
    /// puts a value in unchecked.
    ///
    /// # Errors
    /// The template's error, or such a value.
    pub fn render_path(&self, text: &str) -> Result<String, String> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        let (rendered, values) = collecting(|| self.path.render_str(text, &self.context, true));
        let mut out = rendered.map_err(|e| format!("{}; {}", render_error(&e), self.available))?;
        for (i, value) in values.iter().enumerate().rev() {
            let (crate::sql::Value::Text(v) | crate::sql::Value::Name(v)) = value;
            if v.contains('\0') || v.split(['/', '\\']).any(|part| part == "..") {
                return Err(format!(
                    "value {} of the path (`{v}`) holds `..` or a NUL: a value may not lead out of the folder the DAG names",
                    i + 1
                ));
            }
            out = out.replacen(&crate::sql::marker(i + 1), v, 1);
        }
        Ok(out)
    }

    /// A step with every string field rendered as text, a shell script's values in place: for
    /// reading (the task page). A try runs [`Renderer::render_step`]'s form, where the script
    /// reads its values from variables.
    ///
    /// # Errors
    /// The first template that fails, with the field's path.
    pub fn render_step_for_reading(&self, step: &crate::Step) -> Result<crate::Step, String> {
        let mut value = serde_json::to_value(step).map_err(|e| e.to_string())?;
        self.render_value(&mut value, "")
            .map_err(|e| format!("template: {e}"))?;
        serde_json::from_value(value).map_err(|e| format!("rendered step: {e}"))
    }

    /// A step with every string field rendered (what a try runs): a shell step's script as
    /// [`Renderer::render_shell`] does, its values added to the step's `env`; each SQL text
    /// ([`crate::Step::sql_texts_mut`]) as [`Renderer::render_sql`] does, in the dialect
    /// `dialect_of` gives for its (rendered) connection; each path
    /// ([`crate::Step::paths_mut`]) as [`Renderer::render_path`] does.
    ///
    /// # Errors
    /// The first template that fails, with the field's path.
    pub fn render_step(
        &self,
        step: &crate::Step,
        dialect_of: &dyn Fn(&str) -> Result<crate::sql::Dialect, String>,
    ) -> Result<crate::Step, String> {
        // Every other field as text; the SQL texts and paths apart (the SQL texts once their
        // connections are known).
        let mut rest = step.clone();
        let texts: Vec<String> = rest
            .sql_texts_mut()
            .into_iter()
            .map(|t| std::mem::take(t.text))
            .collect();
        let paths: Vec<String> = rest
            .paths_mut()
            .into_iter()
            .map(|(_, p)| std::mem::take(p))
            .collect();
        let mut rendered = match &rest {
            crate::Step::Shell(shell) => self.render_shell_step(shell)?,
            other => self.render_step_for_reading(other)?,
        };
        for ((field, slot), path) in rendered.paths_mut().into_iter().zip(paths) {
            *slot = self
                .render_path(&path)
                .map_err(|e| format!("template: `{field}`: {e}"))?;
        }
        for (slot, text) in rendered.sql_texts_mut().into_iter().zip(texts) {
            let field = slot.field;
            let conn = slot
                .conn
                .ok_or_else(|| format!("`{field}` runs on no connection"))?;
            let dialect = dialect_of(&conn).map_err(|e| format!("`{field}`: {e}"))?;
            *slot.text = self
                .render_sql(&text, dialect)
                .map_err(|e| format!("template: `{field}`: {e}"))?;
        }
        Ok(rendered)
    }

    /// A shell step rendered for a try: see [`Renderer::render_step`].
    fn render_shell_step(&self, shell: &crate::spec::ShellStep) -> Result<crate::Step, String> {
        // Every other field as text; the script apart, its values into the environment.
        let mut rest = shell.clone();
        rest.run = String::new();
        let crate::Step::Shell(mut rendered) =
            self.render_step_for_reading(&crate::Step::Shell(rest))?
        else {
            return Err("rendered step: a shell step rendered as another kind".into());
        };
        let (run, values) = self
            .render_shell(&shell.run)
            .map_err(|e| format!("template: `run`: {e}"))?;
        rendered.run = run;
        for (name, v) in values {
            rendered.env.insert(name, crate::text::Text(v));
        }
        Ok(crate::Step::Shell(rendered))
    }

    /// Renders every string inside a JSON value (a step's fields), in place.
    ///
    /// # Errors
    /// The first template that fails, with the field's path.
    pub fn render_value(&self, value: &mut serde_json::Value, path: &str) -> Result<(), String> {
        match value {
            serde_json::Value::String(s) => {
                *s = self.render(s).map_err(|e| format!("`{path}`: {e}"))?;
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.render_value(item, &format!("{path}[{i}]"))?;
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.render_value(v, &child)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
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
pub fn parse_items(rendered: &str) -> Result<Vec<serde_json::Value>, String> {
    let trimmed = rendered.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Array(items)) => Ok(items),
            Ok(other) => Err(format!("`foreach` must render a list, got {other}")),
            Err(e) => Err(format!(
                "`foreach` rendered `{trimmed}`, which is not a JSON list: {e}"
            )),
        };
    }
    Ok(trimmed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::Value::String(l.to_owned()))
        .collect())
}

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
fn scan_expression(text: &str, start: usize, end: usize, out: &mut Vec<Reference>) {
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
fn member(text: &str, at: usize, end: usize) -> Option<String> {
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
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |p| offset - p - 1) + 1;
    (line, col)
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
            format: crate::spec::ExportFormat::Csv,
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
            assert!(e.contains("`to`") && e.contains("`..`"), "{bad}: {e}");
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
            err,
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
