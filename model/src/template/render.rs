//! Rendering a try's templates ([`Renderer`]): as text, and where a value could become code
//! (shell scripts, SQL text, paths) with every value placed as data: collected while tera
//! renders, then put in as a variable, an escaped literal or a checked path part.

use super::*;

/// The variables a shell script's values travel in: `WEIR_VALUE_1`, `WEIR_VALUE_2`, ...
pub const SHELL_VALUE_PREFIX: &str = "WEIR_VALUE_";

thread_local! {
    /// The values [`Renderer::render_shell`] and [`Renderer::render_sql`] collect while tera
    /// renders on this thread (tera takes a plain function as its escape function, so the list
    /// cannot be passed to it).
    static VALUES: std::cell::RefCell<Vec<crate::sql::Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Adds a value to this thread's list: its number, from 1.
pub(super) fn collect(value: crate::sql::Value) -> usize {
    VALUES.with(|v| {
        let mut v = v.borrow_mut();
        v.push(value);
        v.len()
    })
}

/// Runs `render` with an empty list of values; returns what it rendered and the values it
/// collected.
pub(super) fn collecting<T>(render: impl FnOnce() -> T) -> (T, Vec<crate::sql::Value>) {
    VALUES.with(|v| v.borrow_mut().clear());
    let rendered = render();
    (
        rendered,
        VALUES.with(|v| std::mem::take(&mut *v.borrow_mut())),
    )
}

/// Tera's escape function for shell scripts: the value goes to the list, the script gets a
/// reference to it.
pub(super) fn shell_value(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = collect(crate::sql::Value::Text(value.to_owned()));
    write!(out, "${{{SHELL_VALUE_PREFIX}{n}}}")
}

/// Tera's escape function for SQL text: the value goes to the list, the text gets a marker
/// that [`crate::sql::place_values`] replaces.
pub(super) fn sql_value(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = collect(crate::sql::Value::Text(value.to_owned()));
    out.write_all(crate::sql::marker(n).as_bytes())
}

/// Tera's escape function for paths: the value goes to the list, the path gets a marker that
/// [`Renderer::render_path`] replaces once the value is checked.
pub(super) fn path_value(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = collect(crate::sql::Value::Text(value.to_owned()));
    out.write_all(crate::sql::marker(n).as_bytes())
}

/// `{{ x | ident }}` in SQL text: `x` goes to the list as a name (checked and quoted when it
/// is placed), the text gets its marker. Safe for tera, so the marker is not escaped again.
pub(super) struct SqlName;

impl tera::Filter<String, String> for SqlName {
    fn call(&self, value: String, _: Kwargs, _: &State<'_>) -> String {
        crate::sql::marker(collect(crate::sql::Value::Name(value)))
    }

    fn is_safe(&self) -> bool {
        true
    }
}

/// The environments of every renderer: built once per process, because building one registers
/// all of tera's filters, functions and tests (four per try were 8 % of the CPU of a fan-out of
/// tries with nothing to run; docs/benchmarks.md). Rendering only reads them.
struct Environments {
    plain: tera::Tera,
    shell: tera::Tera,
    sql: tera::Tera,
    path: tera::Tera,
}

static ENVIRONMENTS: std::sync::LazyLock<Environments> = std::sync::LazyLock::new(|| {
    let mut shell = environment();
    shell.set_escape_fn(shell_value);
    let mut sql = environment();
    sql.set_escape_fn(sql_value);
    sql.register_filter("ident", SqlName);
    let mut path = environment();
    path.set_escape_fn(path_value);
    Environments {
        plain: environment(),
        shell,
        sql,
        path,
    }
});

/// Renders templates of one try with one environment.
pub struct Renderer {
    pub(super) tera: &'static tera::Tera,
    /// The same environment, escaping every value into a variable reference (shell scripts).
    pub(super) shell: &'static tera::Tera,
    /// The same environment, escaping every value into a marker (SQL text).
    pub(super) sql: &'static tera::Tera,
    /// The same environment, escaping every value into a marker (paths).
    pub(super) path: &'static tera::Tera,
    pub(super) context: tera::Context,
    /// What the context holds, for errors: `params` has: …; upstream outputs: ….
    pub(super) available: String,
}

impl Renderer {
    /// A renderer for `context`.
    ///
    /// # Errors
    /// A context that does not serialize (never with JSON values).
    pub fn new(context: &RenderContext) -> Result<Renderer, RenderError> {
        let available = context.available();
        let context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
        let envs = &*ENVIRONMENTS;
        Ok(Renderer {
            path: &envs.path,
            tera: &envs.plain,
            shell: &envs.shell,
            sql: &envs.sql,
            context,
            available,
        })
    }

    /// Renders one template; plain text comes back as is.
    ///
    /// # Errors
    /// The template's error, with tera's location inside the template.
    pub fn render(&self, text: &str) -> Result<String, RenderError> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        self.tera
            .render_str(text, &self.context, false)
            .map_err(|e| RenderError(format!("{}; {}", render_error(&e), self.available)))
    }

    /// Renders `text` with `env` (one of the escaping environments), collecting the values
    /// its escape function took.
    fn render_collecting(
        &self,
        env: &tera::Tera,
        text: &str,
    ) -> Result<(String, Vec<crate::sql::Value>), String> {
        let (rendered, values) = collecting(|| env.render_str(text, &self.context, true));
        let rendered = rendered.map_err(|e| format!("{}; {}", render_error(&e), self.available))?;
        Ok((rendered, values))
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
    pub fn render_shell(&self, text: &str) -> Result<(String, Vec<(String, String)>), RenderError> {
        if !is_template(text) {
            return Ok((text.to_owned(), Vec::new()));
        }
        let (rendered, values) = self.render_collecting(self.shell, text)?;
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
    pub fn render_sql(
        &self,
        text: &str,
        dialect: crate::sql::Dialect,
    ) -> Result<String, RenderError> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        let (rendered, values) = self.render_collecting(self.sql, text)?;
        Ok(crate::sql::place_values(dialect, &rendered, &values)?)
    }

    /// Renders a file-system path whose values may not climb out of the folder the DAG writes:
    /// a value with a `..` component (`../../etc/cron.d/x`) or a NUL is refused. `| safe`
    /// puts a value in unchecked.
    ///
    /// # Errors
    /// The template's error, or such a value.
    pub fn render_path(&self, text: &str) -> Result<String, RenderError> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        let (mut out, values) = self.render_collecting(self.path, text)?;
        for (i, value) in values.iter().enumerate().rev() {
            let (crate::sql::Value::Text(v) | crate::sql::Value::Name(v)) = value;
            if v.contains('\0') || v.split(['/', '\\']).any(|part| part == "..") {
                return Err(RenderError(format!(
                    "value {} of the path (`{v}`) holds `..` or a NUL: a value may not lead out of the folder the DAG names",
                    i + 1
                )));
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
    pub fn render_step_for_reading(&self, step: &crate::Step) -> Result<crate::Step, RenderError> {
        let mut value = serde_json::to_value(step).map_err(|e| e.to_string())?;
        // Fields that are not templates stay as written.
        let verbatim: Vec<(&str, serde_json::Value)> = match &mut value {
            serde_json::Value::Object(fields) => step
                .verbatim_fields()
                .iter()
                .filter_map(|k| fields.remove(*k).map(|v| (*k, v)))
                .collect(),
            _ => Vec::new(),
        };
        self.render_value(&mut value, "")
            .map_err(|e| format!("template: {e}"))?;
        if let serde_json::Value::Object(fields) = &mut value {
            fields.extend(verbatim.into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
        serde_json::from_value(value).map_err(|e| RenderError(format!("rendered step: {e}")))
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
    ) -> Result<crate::Step, RenderError> {
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
    pub fn render_value(
        &self,
        value: &mut serde_json::Value,
        path: &str,
    ) -> Result<(), RenderError> {
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
