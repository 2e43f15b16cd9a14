//! The YAML mirror: `DagSpec` and `TaskSpec` are the DAG file as written, typed.
//!
//! These types are what weir stores as a DAG version (serialized to JSON) and what the JSON
//! Schema is generated from. They are decoded from YAML by [`crate::dag`], which reports every
//! problem with its place; [`crate::Dag`] is the validated form.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::date::DateSpec;
use crate::duration::Duration;
use crate::schedule::Schedule;
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
    /// Cron expression or alias; absent or null = manual/backfill only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
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
}

impl Step {
    /// Every kind's name, as written after `kind:`.
    pub const KINDS: [&'static str; 9] = [
        "noop", "shell", "sql", "migrate", "load", "validate", "export", "http", "wait_for",
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
            let conn = Some(&side.conn);
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
            Step::Noop(_) | Step::Shell(_) | Step::Migrate(_) | Step::Http(_) => Vec::new(),
        }
    }
}

impl Step {
    /// Every file-system path of this step that templates may fill (`cwd`, a load's `file`
    /// and `claim` folders, an export's `to`, `save_to`, a `wait_for`'s `file`, a migration
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
            Step::Noop(_) | Step::Sql(_) | Step::Validate(_) => {}
        }
        out
    }
}

/// `kind: noop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct NoopStep {}

/// `kind: shell`: `bash -eo pipefail -c RUN` in a new process group.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShellStep {
    /// The script.
    pub run: String,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Text>,
    /// Working directory (relative to the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `kind: sql`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SqlStep {
    /// Connection name.
    pub conn: String,
    /// One statement or a list, run in one transaction.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub sql: Vec<String>,
    /// A `.sql` file instead of `sql` (relative to the DAG file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `first_row`: the first row's columns become outputs.
    #[serde(default)]
    pub fetch: Fetch,
    /// `false`: running the statements twice would do harm (an `INSERT` that appends): weir
    /// records the commit in the target's `weir_commits` in the same transaction, and a retry
    /// after a commit whose outcome was lost records it instead of running again.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub idempotent: bool,
}

fn yes() -> bool {
    true
}

/// What a `sql` step returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fetch {
    /// Nothing.
    #[default]
    None,
    /// The first row of the last statement, as outputs.
    FirstRow,
}

/// `kind: migrate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MigrateStep {
    /// Target connection.
    pub conn: String,
    /// Folder of `NNNN_name.sql` files (relative to the DAG file, or absolute).
    pub dir: String,
}

/// `kind: load`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoadStep {
    /// Where rows come from.
    pub source: LoadSource,
    /// Where rows go.
    pub target: LoadTarget,
    /// Typed columns, in order; absent = the source's columns as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<IndexMap<String, ColumnSpec>>,
    /// Named sets of `columns`, one of which `column_set` picks at run time (a mapped task
    /// loading files of different shapes).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub column_sets: IndexMap<String, IndexMap<String, ColumnSpec>>,
    /// Which of `column_sets` to use: a template, e.g. `"{{ item.shape }}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_set: Option<String>,
    /// How rows meet what the table holds.
    #[serde(default)]
    pub mode: LoadMode,
    /// Key columns for `upsert`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Rows per write (1..=100000).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// What happens to rows that fail parsing or constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<Rejects>,
    /// Read only rows newer than the last cursor value seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
}

fn default_batch_size() -> u32 {
    10_000
}

/// A load's source: exactly one of `file`, `http` or `conn` (with `query` or `table`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSource {
    /// File glob (relative to the worker's directory), templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// URL to download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// HTTP headers for `http`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Connection to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Query on `conn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Table on `conn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// File format (default: from the extension, else csv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SourceFormat>,
    /// CSV: whether the first line names the columns (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// CSV field separator (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// CSV quote character (default `"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<char>,
    /// `json`: where the records are in each document, a dot path to an array inside an object
    /// (`items`, `data.results`); absent: the document is the array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// `file`: move the matching files into a folder of this try's own before reading them, so
    /// that each arrived file is loaded by one run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// `http`: how to follow an API's pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Box<Paginate>>,
    /// CSV: accept rows with fewer or more fields than the header (or `columns`): missing
    /// fields are empty (NULL), extra ones are ignored. Off by default: such a row is a reject.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_ragged: bool,
}

/// Claiming a file source's files: moved (renamed, atomically) into
/// `move_to/<run id>/<task id>[.<map index>]/` before they are read; a retry reads the files
/// already claimed there. After the load commits they move on to the same place under
/// `archive_to`, when given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The folder claimed files are moved into (on the files' file system).
    pub move_to: String,
    /// The folder loaded files are moved to after the commit; absent: they stay claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_to: Option<String>,
}

/// How an HTTP source's pages are followed: exactly one of `next` (a `Link: rel="next"` header
/// or a value in each page's JSON), `page_param` (page numbers) or `offset_param` (offsets).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// `link_header`: the URL of `Link: <...>; rel="next"`; or a dot path in the page's JSON
    /// (`next`, `links.next`, `meta.next_cursor`) to the next page's URL, or to a cursor when
    /// `cursor_param` is set. No value (absent, null, empty): the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// With `next` holding a cursor: the query parameter the cursor is sent in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_param: Option<String>,
    /// The query parameter of the page number; pages are read until one has no records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,
    /// The query parameter of the offset (records to skip); it grows by each page's records
    /// until a page has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_param: Option<String>,
    /// The first page number or offset (default 1 for pages, 0 for offsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// At most this many pages (default 1000); an API that still has a next page after them
    /// fails the task rather than load part of the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u32>,
}

/// Formats a load can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Comma-separated values.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// A JSON array of objects.
    Json,
}

/// A load's target table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadTarget {
    /// Connection name.
    pub conn: String,
    /// `table` or `schema.table`.
    pub table: String,
    /// Create the table from `columns` when missing (default) or never.
    #[serde(default)]
    pub create: CreateMode,
}

/// Whether a load creates its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateMode {
    /// Create it from `columns` when it does not exist.
    #[default]
    IfMissing,
    /// Fail when it does not exist.
    Never,
}

/// One typed column of a load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Reject rows where the value is empty.
    #[serde(default)]
    pub not_null: bool,
    /// Source field name, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// chrono format for dates and timestamps (e.g. `%d/%m/%Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Column types of `load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    Bigint,
    /// Double precision.
    Float,
    /// Exact decimal.
    Numeric,
    /// Text.
    Text,
    /// Boolean.
    Bool,
    /// Calendar date.
    Date,
    /// Date and time without zone.
    Timestamp,
    /// Date and time with zone.
    Timestamptz,
    /// JSON document.
    Json,
}

/// How a load writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Add rows.
    #[default]
    Append,
    /// Replace the table atomically.
    Replace,
    /// Insert or update by `key`.
    Upsert,
    /// Empty the table, then insert, in one transaction.
    TruncateInsert,
}

/// Reject handling of a load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejects {
    /// Keep bad rows in `<table>__rejects` (default) or fail the task.
    #[serde(default)]
    pub on_error: OnError,
    /// Most rejects tolerated: a count, or a percentage like `"1%"` (default 0 with `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<RejectLimit>,
}

/// What a bad row does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Goes to the rejects table.
    #[default]
    Reject,
    /// Fails the task.
    Fail,
}

/// A limit on rejected rows: a count or a percentage of rows read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RejectLimit {
    /// At most this many rows.
    Count(u64),
    /// At most this share of rows read, written `"5%"`.
    Percent(String),
}

/// Incremental loading state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// Column whose largest value is kept between runs.
    pub cursor: String,
}

/// `kind: validate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ValidateStep {
    /// Connection for checks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// The checks, each a one-key mapping.
    pub checks: Vec<Check>,
}

/// A data-quality check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Row count within bounds.
    RowCount(RowCountCheck),
    /// Two row counts agree (within `tolerance`).
    CompareCount(CompareCountCheck),
    /// Columns hold no NULL.
    NotNull(ColumnsCheck),
    /// Column combination is unique.
    Unique(ColumnsCheck),
    /// Column holds only listed values.
    AcceptedValues(AcceptedValuesCheck),
    /// Column within bounds.
    Range(RangeCheck),
    /// Newest value of a timestamp column is recent enough.
    Freshness(FreshnessCheck),
    /// Fails when the query returns rows.
    Sql(SqlCheck),
    /// Row-level hashes agree between two tables.
    CompareChecksum(CompareChecksumCheck),
}

impl Check {
    /// The check's name as written.
    pub fn name(&self) -> &'static str {
        match self {
            Check::RowCount(_) => "row_count",
            Check::CompareCount(_) => "compare_count",
            Check::NotNull(_) => "not_null",
            Check::Unique(_) => "unique",
            Check::AcceptedValues(_) => "accepted_values",
            Check::Range(_) => "range",
            Check::Freshness(_) => "freshness",
            Check::Sql(_) => "sql",
            Check::CompareChecksum(_) => "compare_checksum",
        }
    }
}

/// Whether a failing check fails the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckSeverity {
    /// Fails the task.
    #[default]
    Error,
    /// Reported only.
    Warn,
}

/// `row_count`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowCountCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Fewest rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Most rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// One side of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSide {
    /// Connection.
    pub conn: String,
    /// Table (or `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Query (or `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// `compare_count`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareCountCheck {
    /// Reference side.
    pub source: CheckSide,
    /// Side checked.
    pub target: CheckSide,
    /// Allowed difference: a count or `"0.5%"` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<RejectLimit>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `not_null` and `unique`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnsCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Columns.
    pub columns: Vec<String>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `accepted_values`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Allowed values.
    pub values: Vec<serde_json::Value>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `range`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Smallest allowed value (number or date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    /// Largest allowed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `freshness`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshnessCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Table.
    pub table: String,
    /// Timestamp column.
    pub column: String,
    /// Oldest acceptable newest value.
    pub max_age: Duration,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `sql`: fails when the query returns rows.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// Connection (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Query returning the failing rows.
    pub query: String,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `compare_checksum`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareChecksumCheck {
    /// Reference side.
    pub source: CheckSide,
    /// Side checked.
    pub target: CheckSide,
    /// Key columns matching rows across sides.
    pub key: Vec<String>,
    /// Columns hashed (default: all of the source's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Error or warn.
    #[serde(default)]
    pub severity: CheckSeverity,
}

/// `kind: export`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportStep {
    /// Connection.
    pub conn: String,
    /// Table to export (or `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Query to export (or `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Output path, templated.
    pub to: String,
    /// File format.
    #[serde(default)]
    pub format: ExportFormat,
}

/// Formats `export` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// CSV with a header.
    #[default]
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `kind: http`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HttpStep {
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// URL, templated.
    pub url: String,
    /// Request headers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// Raw body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Accepted status codes (default: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    /// Write the response body to this path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_to: Option<String>,
    /// Response headers to keep as the `headers` output (`{link: ..., x-total-count: ...}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_headers: Vec<String>,
    /// A GET's pages, followed as a `load` follows them; the records of every page go to
    /// `save_to`, one JSON value a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Box<Paginate>>,
    /// With `paginate`: where each JSON page's records are (a dot path); absent, the page is
    /// the array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    #[default]
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

/// `kind: wait_for`: exactly one of `file`, `sql` or `http`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WaitForStep {
    /// File glob that must match something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Query whose first cell must be truthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Connection for `sql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// URL that must answer 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Time between checks (default 30s).
    #[serde(default = "default_interval")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
