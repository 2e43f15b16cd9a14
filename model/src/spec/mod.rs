//! The YAML mirror: `DagSpec` and `TaskSpec` are the DAG file as written, typed.
//!
//! These types are what weir stores as a DAG version (serialized to JSON) and what the JSON
//! Schema is generated from. They are decoded from YAML by [`crate::dag`], which reports every
//! problem with its place; [`crate::Dag`] is the validated form.
//!
//! # Layout
//! - this module: the DAG, its defaults, a task's common fields, [`Step`] and what crosses
//!   kinds (its SQL texts and paths);
//! - `load` and `validate`: those two kinds' many types; `code`: the kinds that run a user's
//!   code in an environment weir builds (`python`, `dbt`); `steps`: every other kind.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::asset::{AssetSpec, Deadline, ScheduleSpec};
use crate::date::DateSpec;
use crate::duration::Duration;
use crate::text::{Text, one_or_many};
use crate::timezone::TzName;
use crate::trigger::TriggerRule;

/// A DAG file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DagSpec {
    /// Unique in the dags folder: `[A-Za-z0-9_.-]{1,100}`.
    pub id: String,
    /// What the DAG does, shown in the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cron expression or alias, or a rule with `cron`, `assets` or `files`; absent or null =
    /// manual/backfill only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// IANA time zone the schedule and dates are read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TzName>,
    /// First logical date: a date or RFC 3339 timestamp (in `timezone` without an offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<DateSpec>,
    /// Last logical date (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<DateSpec>,
    /// Create runs for every missed interval since `start_date` (default false).
    #[serde(default)]
    pub catchup: bool,
    /// Runs of this DAG that may be active at once (default 16). The scheduler creates no
    /// scheduled run while this many are queued or running.
    #[serde(default = "default_sixteen")]
    pub max_active_runs: u32,
    /// With `catchup`, the most missed intervals run (default 1000): the latest ones; older
    /// ones are skipped (backfill them on purpose).
    #[serde(
        default = "default_max_catchup_runs",
        skip_serializing_if = "is_default_max_catchup_runs"
    )]
    pub max_catchup_runs: u32,
    /// Running task instances of this DAG across its runs (default 16).
    #[serde(default = "default_sixteen")]
    pub max_active_tasks: u32,
    /// Whether the DAG starts paused when weir first sees it.
    #[serde(default)]
    pub paused: bool,
    /// Free labels, for filtering in the UI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Parameters with their defaults; a trigger may override them (same type as the default).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, serde_json::Value>,
    /// Task fields applied to every task that does not set them.
    #[serde(default)]
    pub defaults: TaskDefaults,
    /// What this DAG says of assets it writes: description, freshness.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub assets: IndexMap<String, AssetSpec>,
    /// When each run must have finished by: `{reference, within, notify}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// Notifiers (configuration names) told once when a run fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// Notifiers told once when a run succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    /// The tasks, by id (required in a file; decoded task by task, so defaulted here).
    #[serde(default)]
    pub tasks: IndexMap<String, TaskSpec>,
}

fn default_sixteen() -> u32 {
    16
}

fn default_max_catchup_runs() -> u32 {
    1000
}

// Not written when default: a stored version's JSON (and so its hash) stays what it was
// before the key existed.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_default_max_catchup_runs(n: &u32) -> bool {
    *n == default_max_catchup_runs()
}

/// Task fields a DAG can set once for all its tasks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDefaults {
    /// Tries after the first failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Wait before the first retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<Duration>,
    /// Factor applied to the delay at each further retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<f64>,
    /// Cap on the retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_delay: Option<Duration>,
    /// Time limit of one try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Worker queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Pool (configuration name) limiting concurrent task instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Higher runs first when slots are scarce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// When a task may run, from its upstream states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,
    /// Notifiers told when a task fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Vec<String>>,
    /// Notifiers told when a task is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_retry: Option<Vec<String>>,
}

/// One task as written: the fields every kind has, and the kind's own.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TaskSpec {
    /// Fields common to every kind.
    #[serde(flatten)]
    pub common: TaskCommon,
    /// `kind` and its fields.
    #[serde(flatten)]
    pub step: Step,
}

/// Task fields common to every step kind (unset = taken from `defaults`, then weir's default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TaskCommon {
    /// What the task does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tasks that must finish first (a task id or a list of them).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub depends_on: Vec<String>,
    /// When the task may run, from its upstream states (default `all_success`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,
    /// Template; a falsy result (empty, false, 0, no, none) skips the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Text>,
    /// One mapped instance per item: a list, or a template yielding a JSON list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<Foreach>,
    /// Tries after the first failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Wait before the first retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<Duration>,
    /// Factor applied to the delay at each further retry (>= 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<f64>,
    /// Cap on the retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_delay: Option<Duration>,
    /// Time limit of one try (for `wait_for`: of the whole wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Worker queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Pool (configuration name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Higher runs first when slots are scarce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Notifiers told when this task fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Vec<String>>,
    /// Notifiers told when this task is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_retry: Option<Vec<String>>,
    /// Assets this task writes, besides those its step records by itself (templates allowed):
    /// `connection.schema.table` or a location.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub produces: Vec<String>,
    /// Assets this task reads, besides those its step records by itself.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub consumes: Vec<String>,
}

/// `foreach`: the items of a mapped task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Foreach {
    /// A literal list.
    Items(Vec<serde_json::Value>),
    /// A template rendering to a JSON list (e.g. an upstream output).
    Template(String),
}

/// What a task does: `kind` and the kind's fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Nothing; structure only.
    Noop(NoopStep),
    /// A bash command.
    Shell(ShellStep),
    /// SQL statements in one transaction.
    Sql(SqlStep),
    /// Versioned schema migrations.
    Migrate(MigrateStep),
    /// Rows from a source into a table.
    Load(Box<LoadStep>),
    /// Data-quality checks.
    Validate(ValidateStep),
    /// A table or query to a file.
    Export(ExportStep),
    /// One HTTP request.
    Http(HttpStep),
    /// A sensor that waits without holding a worker slot.
    WaitFor(WaitForStep),
    /// Files copied between locations, verified.
    Transfer(TransferStep),
    /// A Python script in an environment built for its requirements.
    Python(PythonStep),
    /// A dbt project's models, seeds, snapshots and tests.
    Dbt(DbtStep),
}

impl Step {
    /// Every kind's name, as written after `kind:`.
    pub const KINDS: [&'static str; 12] = [
        "noop", "shell", "sql", "migrate", "load", "validate", "export", "http", "wait_for",
        "transfer", "python", "dbt",
    ];

    /// This step's kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Noop(_) => "noop",
            Step::Shell(_) => "shell",
            Step::Sql(_) => "sql",
            Step::Migrate(_) => "migrate",
            Step::Load(_) => "load",
            Step::Validate(_) => "validate",
            Step::Export(_) => "export",
            Step::Http(_) => "http",
            Step::WaitFor(_) => "wait_for",
            Step::Transfer(_) => "transfer",
            Step::Python(_) => "python",
            Step::Dbt(_) => "dbt",
        }
    }

    /// Fields weir does not render as templates: a script (Python's own `{{` stays its own;
    /// the script reads the run from its context), and what an environment is built from (a
    /// task's environment is known before any run: `weir python env`).
    pub fn verbatim_fields(&self) -> &'static [&'static str] {
        Step::verbatim_fields_of(self.kind())
    }

    /// [`Step::verbatim_fields`] of a kind, by name.
    pub fn verbatim_fields_of(kind: &str) -> &'static [&'static str] {
        match kind {
            "python" => &["script", "file", "requirements", "python"],
            "dbt" => &["project", "requirements", "python"],
            _ => &[],
        }
    }
}

/// A SQL text of a step: where it is, the connection it runs on, and the text.
#[derive(Debug)]
pub struct SqlText<'a> {
    /// The field, as a DAG writes it (`sql[1]`, `source.query`, `checks[0].sql.query`).
    pub field: String,
    /// The connection it runs on (`None`: a check of a `validate` step that names none).
    pub conn: Option<String>,
    /// The text.
    pub text: &'a mut String,
}

impl Step {
    /// Every SQL text of this step, with the connection it runs on: a `sql` step's
    /// statements, a `load` source's query, a `validate` check's queries, an `export`'s query,
    /// a `wait_for`'s `sql`. Their values are placed by where they stand (see
    /// `Renderer::render_sql`), in the dialect of that connection.
    pub fn sql_texts_mut(&mut self) -> Vec<SqlText<'_>> {
        fn text<'a>(field: String, conn: Option<&String>, text: &'a mut String) -> SqlText<'a> {
            SqlText {
                field,
                conn: conn.cloned(),
                text,
            }
        }
        fn side<'a>(field: String, side: &'a mut CheckSide) -> Option<SqlText<'a>> {
            let conn = side.conn.as_ref();
            side.query.as_mut().map(|q| text(field, conn, q))
        }
        match self {
            Step::Sql(s) => s
                .sql
                .iter_mut()
                .enumerate()
                .map(|(i, t)| text(format!("sql[{i}]"), Some(&s.conn), t))
                .collect(),
            Step::Load(l) => l
                .source
                .query
                .as_mut()
                .map(|q| text("source.query".into(), l.source.conn.as_ref(), q))
                .into_iter()
                .collect(),
            Step::Export(e) => e
                .query
                .as_mut()
                .map(|q| text("query".into(), Some(&e.conn), q))
                .into_iter()
                .collect(),
            Step::WaitFor(w) => w
                .sql
                .as_mut()
                .map(|q| text("sql".into(), w.conn.as_ref(), q))
                .into_iter()
                .collect(),
            Step::Validate(v) => {
                let mut out = Vec::new();
                for (i, check) in v.checks.iter_mut().enumerate() {
                    let name = check.name();
                    match check {
                        Check::Sql(c) => out.push(text(
                            format!("checks[{i}].sql.query"),
                            c.conn.as_ref().or(v.conn.as_ref()),
                            &mut c.query,
                        )),
                        Check::CompareCount(CompareCountCheck { source, target, .. })
                        | Check::CompareChecksum(CompareChecksumCheck { source, target, .. }) => {
                            out.extend(side(format!("checks[{i}].{name}.source.query"), source));
                            out.extend(side(format!("checks[{i}].{name}.target.query"), target));
                        }
                        _ => {}
                    }
                }
                out
            }
            Step::Noop(_)
            | Step::Shell(_)
            | Step::Migrate(_)
            | Step::Http(_)
            | Step::Transfer(_)
            | Step::Python(_)
            | Step::Dbt(_) => Vec::new(),
        }
    }
}

impl Step {
    /// Every file-system path of this step that templates may fill (`cwd`, a load's `file`
    /// and `claim` folders, an export's `to`, `save_to`, a `wait_for`'s `file`, a transfer's
    /// `from` and `to`, a migration
    /// `dir`), by field name. A value placed in one may not hold a `..` component (see
    /// `Renderer::render_path`).
    pub fn paths_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut out = Vec::new();
        match self {
            Step::Shell(s) => out.extend(s.cwd.as_mut().map(|p| ("cwd", p))),
            Step::Migrate(m) => out.push(("dir", &mut m.dir)),
            Step::Load(l) => {
                out.extend(l.source.file.as_mut().map(|p| ("source.file", p)));
                if let Some(claim) = &mut l.source.claim {
                    out.push(("source.claim.move_to", &mut claim.move_to));
                    out.extend(
                        claim
                            .archive_to
                            .as_mut()
                            .map(|p| ("source.claim.archive_to", p)),
                    );
                }
            }
            Step::Export(e) => out.push(("to", &mut e.to)),
            Step::Http(h) => out.extend(h.save_to.as_mut().map(|p| ("save_to", p))),
            Step::WaitFor(w) => out.extend(w.file.as_mut().map(|p| ("file", p))),
            Step::Transfer(t) => {
                out.push(("from", &mut t.from));
                out.push(("to", &mut t.to));
            }
            Step::Noop(_) | Step::Sql(_) | Step::Validate(_) | Step::Python(_) | Step::Dbt(_) => {}
        }
        out
    }
}

mod code;
mod load;
mod steps;
mod validate;

pub use code::*;
pub use load::*;
pub use steps::*;
pub use validate::*;
