//! Parsing and validating a DAG file into a [`Dag`]: the typed tasks with their defaults
//! applied, on a petgraph, with every problem of the file reported in one pass.
//!
//! Over a thousand lines: parsing, step-shape checks and reference checks are three nouns
//! that the structural step planned next splits into modules, as a move of its own.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, Loc, Severity, tidy};
use crate::duration::Duration;
use crate::schedule::{DataInterval, Schedule};
use crate::spec::{
    Check, DagSpec, ExportStep, Foreach, HttpStep, LoadMode, LoadStep, MigrateStep, NoopStep,
    ShellStep, SqlStep, Step, TaskCommon, TaskSpec, ValidateStep, WaitForStep,
};
use crate::suggest::did_you_mean;
use crate::template::TemplateChecker;
use crate::trigger::TriggerRule;
use crate::yaml::{Node, Sink, Unknown, Value, backticked, decode, struct_fields};

/// The longest DAG or task id.
pub const MAX_ID_LEN: usize = 100;

/// Names the configuration defines, for warnings about references it lacks.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Connection names.
    pub conns: BTreeSet<String>,
    /// Pool names.
    pub pools: BTreeSet<String>,
    /// Notifier names.
    pub notifiers: BTreeSet<String>,
}

/// The outcome of parsing one file: the DAG when it is valid, and every problem found.
#[derive(Debug)]
pub struct Parsed {
    /// Present when there is no error (warnings allowed).
    pub dag: Option<Dag>,
    /// Errors and warnings, sorted by place.
    pub diagnostics: Vec<Diagnostic>,
    /// Where the DAG's `id` is written, for problems found across files (duplicate ids).
    pub id_loc: Option<Loc>,
    /// The DAG's `id` as written, when it is a string, even in a file with errors: a file that
    /// does not import still claims its DAG (the DAG keeps its last good version, not removed).
    pub dag_id: Option<String>,
}

impl Parsed {
    /// A file that could not be parsed at all.
    pub fn failed(diagnostic: Diagnostic) -> Parsed {
        Parsed {
            dag: None,
            diagnostics: vec![diagnostic],
            id_loc: None,
            dag_id: None,
        }
    }

    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Retry settings of a task, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries after the first failure.
    pub retries: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Factor applied to the delay at each further retry.
    pub backoff: f64,
    /// Cap on the delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// What a failed try `try_number` (of at most `max_tries`) leads to: another try after the
    /// delay, or failure.
    pub fn after_failure(
        &self,
        try_number: i32,
        max_tries: i32,
        now: DateTime<Utc>,
    ) -> (crate::TaskState, Option<DateTime<Utc>>) {
        if try_number >= max_tries {
            return (crate::TaskState::Failed, None);
        }
        let delay =
            self.delay_before(u32::try_from(try_number.saturating_add(1)).unwrap_or(u32::MAX));
        let due = crate::duration::later(now, delay);
        (crate::TaskState::UpForRetry, Some(due))
    }

    /// The wait before try `next_try` (2 for the first retry): `delay * backoff^(next_try - 2)`,
    /// capped by `max_delay`.
    pub fn delay_before(&self, next_try: u32) -> std::time::Duration {
        let exponent = i32::try_from(next_try.saturating_sub(2)).unwrap_or(i32::MAX);
        let secs = self.delay.as_secs_f64() * self.backoff.powi(exponent);
        let capped = secs.min(self.max_delay.as_secs_f64());
        std::time::Duration::try_from_secs_f64(capped).unwrap_or(self.max_delay.0)
    }
}

/// A validated task: its step and every common field resolved against `defaults`.
#[derive(Debug, Clone)]
pub struct Task {
    /// Task id, unique in the DAG.
    pub id: String,
    /// Upstream task ids, as written.
    pub depends_on: Vec<String>,
    /// When it may run.
    pub trigger_rule: TriggerRule,
    /// Template deciding whether it runs.
    pub when: Option<String>,
    /// Mapping over items.
    pub foreach: Option<Foreach>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Per-try time limit.
    pub timeout: Option<Duration>,
    /// Worker queue.
    pub queue: String,
    /// Pool.
    pub pool: Option<String>,
    /// Priority: higher first.
    pub priority: i32,
    /// Notifiers on final failure.
    pub on_failure: Vec<String>,
    /// Notifiers on retry.
    pub on_retry: Vec<String>,
    /// What it does.
    pub step: Step,
}

/// A validated DAG: tasks with defaults applied, on a graph whose edges run upstream → downstream.
#[derive(Debug, Clone)]
pub struct Dag {
    /// The file as written (what a DAG version stores).
    pub spec: DagSpec,
    /// Time zone of the schedule and dates.
    pub timezone: Tz,
    /// First logical date.
    pub start_date: Option<DateTime<Utc>>,
    /// Last logical date (inclusive; a date-only `end_date` covers its whole day).
    pub end_date: Option<DateTime<Utc>>,
    /// Params in file order, with what values they allow.
    pub params: IndexMap<String, crate::param::Param>,
    /// Tasks in file order.
    pub tasks: IndexMap<String, Task>,
    /// Task ids as nodes; an edge `a → b` means b depends on a.
    pub graph: StableDiGraph<String, ()>,
    nodes: HashMap<String, NodeIndex>,
}

const DEFAULT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(300);
/// Airflow caps retry delays at a day; so does weir unless told otherwise.
const DEFAULT_MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(86_400);

impl Dag {
    /// The DAG's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The schedule, if any.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.spec.schedule.as_ref()
    }

    /// The graph node of a task.
    pub fn node(&self, task_id: &str) -> Option<NodeIndex> {
        self.nodes.get(task_id).copied()
    }

    /// Whether any task depends on `task_id` directly.
    pub fn has_downstream(&self, task_id: &str) -> bool {
        self.node(task_id)
            .is_some_and(|n| self.graph.neighbors(n).next().is_some())
    }

    /// Every task downstream of `task_id` (transitively), by id.
    pub fn downstream(&self, task_id: &str) -> std::collections::BTreeSet<String> {
        self.reach(task_id, petgraph::Direction::Outgoing)
    }

    /// Every task upstream of `task_id` (transitively): the tasks whose outputs its templates
    /// may read.
    pub fn ancestors(&self, task_id: &str) -> std::collections::BTreeSet<String> {
        self.reach(task_id, petgraph::Direction::Incoming)
    }

    fn reach(
        &self,
        task_id: &str,
        direction: petgraph::Direction,
    ) -> std::collections::BTreeSet<String> {
        reach(&self.graph, self.node(task_id), direction)
    }

    /// Tasks grouped by depth: level 0 has no upstream, level n depends on level n-1 at most.
    pub fn levels(&self) -> Vec<Vec<&str>> {
        let mut level_of: HashMap<&str, usize> = HashMap::new();
        let order = petgraph::algo::toposort(&self.graph, None).unwrap_or_default();
        for ix in order {
            let id = self.graph[ix].as_str();
            let level = self
                .graph
                .edges_directed(ix, petgraph::Direction::Incoming)
                .filter_map(|e| level_of.get(self.graph[e.source()].as_str()).map(|l| l + 1))
                .max()
                .unwrap_or(0);
            level_of.insert(id, level);
        }
        let depth = level_of.values().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for id in self.tasks.keys() {
            if let Some(l) = level_of.get(id.as_str()) {
                levels[*l].push(id.as_str());
            }
        }
        levels
    }

    /// The data intervals whose logical date falls on the days `from..=to` (in the DAG's time
    /// zone), within `start_date..=end_date`.
    ///
    /// # Errors
    /// No schedule, `to` before `from`, or too many intervals.
    pub fn plan_backfill(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DataInterval>, String> {
        let Some(schedule) = self.schedule() else {
            return Err(format!(
                "DAG `{}` has no schedule, so it has no intervals to backfill; use `weir trigger --logical-date`",
                self.id()
            ));
        };
        if to < from {
            return Err(format!("--to {to} is before --from {from}"));
        }
        let begin = crate::schedule::start_of_day(self.timezone, from);
        let end = crate::schedule::start_of_day(self.timezone, to.succ_opt().unwrap_or(to));
        let local = |t: DateTime<Utc>| t.with_timezone(&self.timezone).format("%Y-%m-%d %H:%M %Z");
        if let Some(start) = self.start_date
            && end <= start
        {
            return Err(format!(
                "{from} to {to} is before the DAG's start_date ({}): it has no runs there, nothing to backfill",
                local(start)
            ));
        }
        if let Some(last) = self.end_date
            && begin > last
        {
            return Err(format!(
                "{from} to {to} is after the DAG's end_date ({}): it has no runs there, nothing to backfill",
                local(last)
            ));
        }
        schedule.plan_intervals(self.timezone, begin, end, self.start_date, self.end_date)
    }

    /// What a backfill of `from..=to` leaves out, to say so: days before the DAG's
    /// `start_date` or after its `end_date`.
    pub fn backfill_notes(&self, from: NaiveDate, to: NaiveDate) -> Vec<String> {
        let begin = crate::schedule::start_of_day(self.timezone, from);
        let end = crate::schedule::start_of_day(self.timezone, to.succ_opt().unwrap_or(to));
        let local = |t: DateTime<Utc>| t.with_timezone(&self.timezone).format("%Y-%m-%d %H:%M %Z");
        let mut notes = Vec::new();
        if let Some(start) = self.start_date
            && begin < start
            && start < end
        {
            notes.push(format!(
                "the range starts before the DAG's start_date ({}): the days before it have no runs",
                local(start)
            ));
        }
        if let Some(last) = self.end_date
            && last < end
            && begin <= last
        {
            notes.push(format!(
                "the range ends after the DAG's end_date ({}): the days after it have no runs",
                local(last)
            ));
        }
        notes
    }

    /// Rebuilds a DAG from a stored spec (no file, so no places in messages).
    ///
    /// # Errors
    /// The spec's problems.
    pub fn from_spec(spec: DagSpec) -> Result<Dag, Vec<Diagnostic>> {
        let mut diagnostics = Vec::new();
        let graph = check_spec(&spec, None, None, &mut diagnostics);
        if diagnostics.iter().any(|d| d.severity == Severity::Error) {
            return Err(diagnostics);
        }
        Ok(build(spec, graph))
    }
}

/// Parses and validates one DAG file's text.
pub fn parse_dag(text: &str, known: Option<&Known>) -> Parsed {
    let mut diagnostics = Vec::new();
    let mut id_loc = None;
    let mut dag_id = None;
    let dag = parse_inner(text, known, &mut diagnostics, &mut id_loc, &mut dag_id);
    tidy(&mut diagnostics);
    let dag = if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        None
    } else {
        dag
    };
    Parsed {
        dag,
        diagnostics,
        id_loc,
        dag_id,
    }
}

fn parse_inner(
    text: &str,
    known: Option<&Known>,
    out: &mut Vec<Diagnostic>,
    id_loc: &mut Option<Loc>,
    dag_id: &mut Option<String>,
) -> Option<Dag> {
    let root = match Node::parse(text) {
        Ok((root, problems)) => {
            out.extend(problems);
            root
        }
        Err(d) => {
            out.push(d);
            return None;
        }
    };
    match &root.value {
        Value::Map(_) => {}
        Value::Null => {
            out.push(Diagnostic::error(
                Some(Loc { line: 1, col: 1 }),
                "the file has no content: a DAG needs at least `id` and `tasks`",
            ));
            return None;
        }
        _ => {
            out.push(Diagnostic::error(
                Some(root.loc),
                format!(
                    "a DAG file is a mapping with `id` and `tasks`, found {}",
                    root.type_name()
                ),
            ));
            return None;
        }
    };
    *id_loc = root.get("id").map(|n| n.loc);
    *dag_id = root.get("id").and_then(Node::as_str).map(str::to_owned);
    let sink = Sink::default();
    let tasks_node = root.get("tasks");
    if tasks_node.is_none() {
        sink.push(Diagnostic::error(
            Some(root.loc),
            "missing required key `tasks`",
        ));
    }

    // The header: every key but `tasks`, which is decoded task by task below.
    let spec: Option<DagSpec> = decode(&root, &["tasks"], Unknown::Report, "", &sink);

    let mut tasks = IndexMap::new();
    let mut task_nodes = HashMap::new();
    match tasks_node.map(|n| (n, &n.value)) {
        Some((_, Value::Map(task_entries))) => {
            if task_entries.is_empty() {
                sink.push(Diagnostic::error(
                    tasks_node.map(|n| n.loc),
                    "`tasks` is empty: a DAG needs at least one task",
                ));
            }
            for (key, value) in task_entries {
                let Some(id) = key.as_str() else {
                    sink.push(Diagnostic::error(
                        Some(key.loc),
                        format!("task ids are strings, found {}", key.type_name()),
                    ));
                    continue;
                };
                task_nodes.insert(id.to_owned(), (key, value));
                if let Some(task) = decode_task(id, value, &sink) {
                    tasks.insert(id.to_owned(), task);
                }
            }
        }
        Some((n, _)) => sink.push(Diagnostic::error(
            Some(n.loc),
            format!(
                "`tasks` is a mapping of task id to task, found {}",
                n.type_name()
            ),
        )),
        None => {}
    }
    out.extend(sink.into_inner());

    check_templates(text, &task_nodes, out);
    let mut spec = spec?;
    let all_decoded = tasks.len() == task_nodes.len();
    spec.tasks = tasks;
    let places = Places {
        root: &root,
        tasks: &task_nodes,
    };
    let graph = check_spec(&spec, Some(&places), known, out);
    check_template_references(text, &task_nodes, &spec, &graph, out);
    if !all_decoded || out.iter().any(|d| d.severity == Severity::Error) {
        return None;
    }
    Some(build(spec, graph))
}

/// Decodes one task: `kind` picks the step type, the common fields and the kind's own are
/// decoded separately, and a key that belongs to neither is reported once.
fn decode_task(id: &str, node: &Node, sink: &Sink) -> Option<TaskSpec> {
    let context = format!("task `{id}`");
    let Value::Map(_) = &node.value else {
        sink.push(Diagnostic::error(
            Some(node.loc),
            format!(
                "{context}: a task is a mapping with `kind` and its fields, found {}",
                node.type_name()
            ),
        ));
        return None;
    };
    // Common fields first, so a task with a bad `kind` still has them checked.
    let common: Option<TaskCommon> = decode(node, &[], Unknown::Ignore, &context, sink);
    let Some(kind_node) = node.get("kind") else {
        sink.push(Diagnostic::error(
            Some(node.loc),
            format!(
                "{context}: missing required key `kind` (one of {})",
                backticked(&Step::KINDS)
            ),
        ));
        return None;
    };
    let Some(kind) = kind_node.as_str() else {
        sink.push(Diagnostic::error(
            Some(kind_node.loc),
            format!("{context}: `kind` is one of {}", backticked(&Step::KINDS)),
        ));
        return None;
    };
    if !Step::KINDS.contains(&kind) {
        let hint = did_you_mean(kind, Step::KINDS)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        sink.push(Diagnostic::error(
            Some(kind_node.loc),
            format!(
                "{context}: unknown kind `{kind}`{hint}; expected one of {}",
                backticked(&Step::KINDS)
            ),
        ));
        return None;
    }
    let mut others: Vec<&str> = struct_fields::<TaskCommon>().to_vec();
    others.push("kind");
    let step = decode_step(kind, node, &others, &context, sink);
    Some(TaskSpec {
        common: common?,
        step: step?,
    })
}

/// Decodes the kind's own fields. `also_valid` (the common keys and `kind`) were split off
/// before; they only serve as suggestions for a mistyped key.
fn decode_step(
    kind: &str,
    node: &Node,
    also_valid: &[&str],
    context: &str,
    sink: &Sink,
) -> Option<Step> {
    fn one<T: DeserializeOwned>(
        node: &Node,
        also_valid: &[&str],
        context: &str,
        sink: &Sink,
        wrap: fn(T) -> Step,
    ) -> Option<Step> {
        decode::<T>(node, also_valid, Unknown::Report, context, sink).map(wrap)
    }
    match kind {
        "noop" => one::<NoopStep>(node, also_valid, context, sink, Step::Noop),
        "shell" => one::<ShellStep>(node, also_valid, context, sink, Step::Shell),
        "sql" => one::<SqlStep>(node, also_valid, context, sink, Step::Sql),
        "migrate" => one::<MigrateStep>(node, also_valid, context, sink, Step::Migrate),
        "load" => one::<LoadStep>(node, also_valid, context, sink, |l| Step::Load(Box::new(l))),
        "validate" => one::<ValidateStep>(node, also_valid, context, sink, Step::Validate),
        "export" => one::<ExportStep>(node, also_valid, context, sink, Step::Export),
        "http" => one::<HttpStep>(node, also_valid, context, sink, Step::Http),
        "wait_for" => one::<WaitForStep>(node, also_valid, context, sink, Step::WaitFor),
        _ => None,
    }
}

/// Where things are in the file, for checks that run on the decoded spec.
struct Places<'a> {
    root: &'a Node,
    tasks: &'a HashMap<String, (&'a Node, &'a Node)>,
}

impl Places<'_> {
    fn key(&self, key: &str) -> Option<Loc> {
        self.root.get(key).map(|n| n.loc)
    }
    fn task(&self, id: &str) -> Option<Loc> {
        self.tasks.get(id).map(|(k, _)| k.loc)
    }
    fn task_key(&self, id: &str, key: &str) -> Option<Loc> {
        self.tasks
            .get(id)
            .and_then(|(_, v)| v.get(key))
            .map(|n| n.loc)
            .or_else(|| self.task(id))
    }
    fn dependency(&self, id: &str, dep: &str) -> Option<Loc> {
        let node = self.tasks.get(id).and_then(|(_, v)| v.get("depends_on"));
        match node.map(|n| &n.value) {
            Some(Value::Seq(items)) => items
                .iter()
                .find(|n| n.as_str() == Some(dep))
                .map(|n| n.loc),
            _ => node.map(|n| n.loc),
        }
        .or_else(|| self.task(id))
    }
}

fn check_spec(
    spec: &DagSpec,
    places: Option<&Places<'_>>,
    known: Option<&Known>,
    out: &mut Vec<Diagnostic>,
) -> TaskGraph {
    let key = |k: &str| places.and_then(|p| p.key(k));
    let task_loc = |id: &str| places.and_then(|p| p.task(id));
    let task_key = |id: &str, k: &str| places.and_then(|p| p.task_key(id, k));

    if let Err(e) = check_id(&spec.id) {
        out.push(Diagnostic::error(key("id"), format!("DAG id {e}")));
    }
    let tz = spec.timezone.map_or(Tz::UTC, |t| t.0);
    // A `start_date` that failed to decode was reported already: no second message for it.
    let start_written = places.is_some_and(|p| p.root.get("start_date").is_some());
    if spec.schedule.is_some() && spec.start_date.is_none() && !start_written {
        out.push(Diagnostic::error(
            key("schedule"),
            "a scheduled DAG needs a `start_date` (the first logical date)",
        ));
    }
    if let (Some(start), Some(end)) = (spec.start_date, spec.end_date)
        && end.resolve(tz) < start.resolve(tz)
    {
        out.push(Diagnostic::error(
            key("end_date"),
            format!("`end_date` {end} is before `start_date` {start}"),
        ));
    }
    if let Some(start) = spec.start_date {
        let start = start.resolve(tz);
        if spec.schedule.is_some()
            && chrono::Datelike::year(&start) > crate::schedule::LAST_SCHEDULED_YEAR
        {
            out.push(Diagnostic::error(
                key("start_date"),
                format!(
                    "`start_date` {} is after {}, the last year weir schedules in: the DAG would never run",
                    start.format("%Y-%m-%d"),
                    crate::schedule::LAST_SCHEDULED_YEAR
                ),
            ));
        }
        if chrono::Datelike::year(&start) < 1970 {
            out.push(Diagnostic::warning(
                key("start_date"),
                format!(
                    "`start_date` {} is before 1970: is the year a typo?",
                    start.format("%Y-%m-%d")
                ),
            ));
        }
        if spec.catchup
            && let Some(crate::Schedule::Cron(cron)) = &spec.schedule
        {
            let limit = spec.max_catchup_runs as usize;
            let missed = crate::schedule::count_intervals(cron, tz, start, Utc::now(), limit + 1);
            if missed > limit {
                out.push(Diagnostic::warning(
                    key("catchup"),
                    format!(
                        "`catchup` from {} spans more than {limit} intervals: only the latest {limit} run (`max_catchup_runs`); raise it to run more, or backfill older days on purpose",
                        start.format("%Y-%m-%d")
                    ),
                ));
            }
        }
    }
    for (name, value) in [
        ("max_active_runs", spec.max_active_runs),
        ("max_catchup_runs", spec.max_catchup_runs),
        ("max_active_tasks", spec.max_active_tasks),
    ] {
        if value == 0 {
            out.push(Diagnostic::error(
                key(name),
                format!("`{name}` must be at least 1"),
            ));
        }
    }
    if let Some(b) = spec.defaults.retry_backoff {
        check_backoff(
            b,
            places
                .and_then(|p| p.root.get("defaults"))
                .and_then(|d| d.get("retry_backoff"))
                .map(|n| n.loc),
            "defaults",
            out,
        );
    }
    for (name, raw) in &spec.params {
        let at = places
            .and_then(|p| p.root.get("params"))
            .and_then(|p| p.get(name))
            .map(|n| n.loc)
            .or_else(|| key("params"));
        if !is_identifier(name) {
            out.push(Diagnostic::error(at, format!("param `{name}` must be a plain name ([A-Za-z_][A-Za-z0-9_]*) to be usable as `params.{name}`")));
        }
        if let Err(e) = crate::param::Param::parse(raw) {
            out.push(Diagnostic::error(at, format!("param `{name}`: {e}")));
        }
    }

    let ids: Vec<&str> = spec.tasks.keys().map(String::as_str).collect();
    for (id, task) in &spec.tasks {
        if let Err(e) = check_task_id(id) {
            out.push(Diagnostic::error(task_loc(id), format!("task id {e}")));
        }
        let mut seen = HashSet::new();
        for dep in &task.common.depends_on {
            let loc = places.and_then(|p| p.dependency(id, dep));
            if dep == id {
                out.push(Diagnostic::error(
                    loc,
                    format!("task `{id}` depends on itself"),
                ));
            } else if !spec.tasks.contains_key(dep) {
                let hint = did_you_mean(dep, ids.iter().copied().filter(|t| t != id))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                out.push(Diagnostic::error(
                    loc,
                    format!(
                        "task `{id}` depends on `{dep}`, which is not a task of this DAG{hint}"
                    ),
                ));
            } else if !seen.insert(dep) {
                out.push(Diagnostic::warning(
                    loc,
                    format!("task `{id}` lists `{dep}` twice in `depends_on`"),
                ));
            }
        }
        if let Some(b) = task.common.retry_backoff {
            check_backoff(
                b,
                task_key(id, "retry_backoff"),
                &format!("task `{id}`"),
                out,
            );
        }
        check_step(id, &task.step, &|k| task_key(id, k), out);
        if let Some(known) = known {
            check_references(id, task, known, &|k| task_key(id, k), out);
        }
    }
    if let Some(known) = known {
        check_default_references(spec, known, places, out);
        for (field, names) in [
            ("on_failure", &spec.on_failure),
            ("on_success", &spec.on_success),
        ] {
            for n in names.iter().filter(|n| !known.notifiers.contains(*n)) {
                out.push(Diagnostic::warning(
                    key(field),
                    format!(
                        "notifier `{n}` is not in the configuration (it will fail at run time)"
                    ),
                ));
            }
        }
    }
    let graph = graph_of(spec);
    check_cycles(spec, &graph, places, out);
    graph
}

fn check_backoff(value: f64, loc: Option<Loc>, context: &str, out: &mut Vec<Diagnostic>) {
    if !value.is_finite() || value < 1.0 {
        out.push(Diagnostic::error(loc, format!("{context}: `retry_backoff` must be a number >= 1 (1 keeps the delay constant), found {value}")));
    }
}

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
fn unsafe_value(text: &str) -> Option<&str> {
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

fn check_step(id: &str, step: &Step, at: &dyn Fn(&str) -> Option<Loc>, out: &mut Vec<Diagnostic>) {
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
                    if side.table.is_some() == side.query.is_some() {
                        err(
                            "checks",
                            format!(
                                "check `{}`: each side needs exactly one of `table` or `query`",
                                check.name()
                            ),
                        );
                    }
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
        Step::Export(e) if e.table.is_some() == e.query.is_some() => err(
            "kind",
            "an `export` task needs exactly one of `table` or `query`".into(),
        ),
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

fn check_load(l: &LoadStep, err: &mut dyn FnMut(&str, String)) {
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
    if let Some(crate::spec::RejectLimit::Percent(p)) =
        l.rejects.as_ref().and_then(|r| r.max.as_ref())
    {
        let ok = p
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .is_some_and(|n| (0.0..=100.0).contains(&n));
        if !ok {
            err(
                "rejects",
                format!("`max: {p}` must be a count or a percentage like \"5%\""),
            );
        }
    }
}

fn check_references(
    id: &str,
    task: &TaskSpec,
    known: &Known,
    at: &dyn Fn(&str) -> Option<Loc>,
    out: &mut Vec<Diagnostic>,
) {
    let mut warn = |k: &str, msg: String| {
        out.push(Diagnostic::warning(
            at(k),
            format!("task `{id}`: {msg} (it will fail at run time)"),
        ))
    };
    for conn in step_conns(&task.step) {
        if !known.conns.contains(conn) && !crate::template::is_template(conn) {
            warn(
                "conn",
                format!("connection `{conn}` is not in the configuration"),
            );
        }
    }
    warn_unknown_pool_and_notifiers(
        task.common.pool.as_ref(),
        [
            ("on_failure", &task.common.on_failure),
            ("on_retry", &task.common.on_retry),
        ],
        known,
        &mut warn,
    );
}

/// Warns once about names in `defaults` that the configuration lacks.
fn check_default_references(
    spec: &DagSpec,
    known: &Known,
    places: Option<&Places<'_>>,
    out: &mut Vec<Diagnostic>,
) {
    let at = |k: &str| {
        places
            .and_then(|p| p.root.get("defaults"))
            .and_then(|d| d.get(k))
            .map(|n| n.loc)
    };
    let mut warn = |k: &str, msg: String| {
        out.push(Diagnostic::warning(
            at(k),
            format!("defaults: {msg} (it will fail at run time)"),
        ))
    };
    warn_unknown_pool_and_notifiers(
        spec.defaults.pool.as_ref(),
        [
            ("on_failure", &spec.defaults.on_failure),
            ("on_retry", &spec.defaults.on_retry),
        ],
        known,
        &mut warn,
    );
}

/// Warns (through `warn(field, message)`) about a pool and notifiers the configuration lacks:
/// the same check for a task's own fields and for `defaults`.
fn warn_unknown_pool_and_notifiers(
    pool: Option<&String>,
    notifiers: [(&str, &Option<Vec<String>>); 2],
    known: &Known,
    warn: &mut dyn FnMut(&str, String),
) {
    if let Some(pool) = pool.filter(|p| !known.pools.contains(*p)) {
        warn("pool", format!("pool `{pool}` is not in the configuration"));
    }
    for (field, names) in notifiers {
        for name in names
            .iter()
            .flatten()
            .filter(|n| !known.notifiers.contains(*n))
        {
            warn(
                field,
                format!("notifier `{name}` is not in the configuration"),
            );
        }
    }
}

/// Every connection a step names.
pub fn step_conns(step: &Step) -> Vec<&String> {
    let mut conns = Vec::new();
    match step {
        Step::Sql(s) => conns.push(&s.conn),
        Step::Migrate(m) => conns.push(&m.conn),
        Step::Load(l) => {
            conns.push(&l.target.conn);
            conns.extend(l.source.conn.as_ref());
        }
        Step::Export(e) => conns.push(&e.conn),
        Step::WaitFor(w) => conns.extend(w.conn.as_ref()),
        Step::Validate(v) => {
            conns.extend(v.conn.as_ref());
            for c in &v.checks {
                match c {
                    Check::RowCount(c) => conns.extend(c.conn.as_ref()),
                    Check::NotNull(c) | Check::Unique(c) => conns.extend(c.conn.as_ref()),
                    Check::AcceptedValues(c) => conns.extend(c.conn.as_ref()),
                    Check::Range(c) => conns.extend(c.conn.as_ref()),
                    Check::Freshness(c) => conns.extend(c.conn.as_ref()),
                    Check::Sql(c) => conns.extend(c.conn.as_ref()),
                    Check::CompareCount(c) => conns.extend([&c.source.conn, &c.target.conn]),
                    Check::CompareChecksum(c) => conns.extend([&c.source.conn, &c.target.conn]),
                }
            }
        }
        Step::Noop(_) | Step::Shell(_) | Step::Http(_) => {}
    }
    conns
}

/// Reports each cycle once, naming its tasks in dependency order (`a -> b -> c -> a`).
fn check_cycles(
    spec: &DagSpec,
    (graph, nodes): &TaskGraph,
    places: Option<&Places<'_>>,
    out: &mut Vec<Diagnostic>,
) {
    for component in petgraph::algo::tarjan_scc(&graph) {
        if component.len() < 2 {
            continue;
        }
        let members: HashSet<NodeIndex> = component.iter().copied().collect();
        // Start from the member written first in the file, for a stable message.
        let Some(start) = spec
            .tasks
            .keys()
            .filter_map(|id| nodes.get(id))
            .copied()
            .find(|ix| members.contains(ix))
        else {
            continue;
        };
        let path = cycle_through(graph, &members, start);
        let names: Vec<&str> = path.iter().map(|ix| graph[*ix].as_str()).collect();
        let loc = places.and_then(|p| p.task_key(names[0], "depends_on"));
        out.push(Diagnostic::error(
            loc,
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        ));
    }
}

/// A shortest path from `start` back to itself inside one strongly connected component.
fn cycle_through(
    graph: &StableDiGraph<String, ()>,
    members: &HashSet<NodeIndex>,
    start: NodeIndex,
) -> Vec<NodeIndex> {
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(ix) = queue.pop_front() {
        for next in graph.neighbors(ix) {
            if next == start {
                let mut path = vec![ix];
                let mut cur = ix;
                while let Some(p) = parent.get(&cur) {
                    path.push(*p);
                    cur = *p;
                }
                path.reverse();
                return path;
            }
            if members.contains(&next) && !parent.contains_key(&next) && next != start {
                parent.insert(next, ix);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// The tasks as graph nodes (edges upstream → downstream) and each task's node.
type TaskGraph = (StableDiGraph<String, ()>, HashMap<String, NodeIndex>);

/// The tasks reachable from `start` along edges in `direction`, by id.
fn reach(
    graph: &StableDiGraph<String, ()>,
    start: Option<NodeIndex>,
    direction: petgraph::Direction,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack: Vec<NodeIndex> = start.into_iter().collect();
    while let Some(n) = stack.pop() {
        for next in graph.neighbors_directed(n, direction) {
            if out.insert(graph[next].clone()) {
                stack.push(next);
            }
        }
    }
    out
}

fn graph_of(spec: &DagSpec) -> TaskGraph {
    let mut graph = StableDiGraph::with_capacity(spec.tasks.len(), spec.tasks.len());
    let mut nodes = HashMap::with_capacity(spec.tasks.len());
    for id in spec.tasks.keys() {
        nodes.insert(id.clone(), graph.add_node(id.clone()));
    }
    for (id, task) in &spec.tasks {
        let mut seen = HashSet::new();
        for dep in task
            .common
            .depends_on
            .iter()
            .filter(|d| *d != id && seen.insert(*d))
        {
            if let (Some(a), Some(b)) = (nodes.get(dep), nodes.get(id)) {
                graph.add_edge(*a, *b, ());
            }
        }
    }
    (graph, nodes)
}

/// Parses every string of every task as a template; reports the place of a syntax error in the
/// file where it can be worked out (single-line scalars and block scalars), else the string's.
fn check_templates(
    source: &str,
    tasks: &HashMap<String, (&Node, &Node)>,
    out: &mut Vec<Diagnostic>,
) {
    let lines: Vec<&str> = source.lines().collect();
    let mut checker = TemplateChecker::default();
    let mut ids: Vec<&String> = tasks.keys().collect();
    ids.sort();
    for id in ids {
        let (_, node) = tasks[id];
        node.for_each_str(&mut |n, text| {
            if let Err(e) = checker.check(text) {
                let loc = template_error_place(&lines, n.loc, text, e.line, e.col);
                out.push(Diagnostic::error(
                    Some(loc),
                    format!("task `{id}`: template does not parse: {}", e.message),
                ));
            }
        });
    }
}

/// What templates read must exist when they render: `params.<name>` a declared param,
/// `tasks.<id>` a task upstream of the one rendering (only those have run, and only their
/// outputs are in its context).
fn check_template_references(
    source: &str,
    tasks: &HashMap<String, (&Node, &Node)>,
    spec: &DagSpec,
    graph: &TaskGraph,
    out: &mut Vec<Diagnostic>,
) {
    let lines: Vec<&str> = source.lines().collect();
    let mut checker = TemplateChecker::default();
    let params: Vec<&str> = spec.params.keys().map(String::as_str).collect();
    let task_ids: Vec<&str> = spec.tasks.keys().map(String::as_str).collect();
    let mut ids: Vec<&String> = tasks.keys().collect();
    ids.sort();
    for id in ids {
        let (_, node) = tasks[id];
        let upstream = reach(
            &graph.0,
            graph.1.get(id.as_str()).copied(),
            petgraph::Direction::Incoming,
        );
        node.for_each_str(&mut |n, text| {
            if !crate::template::is_template(text) || checker.check(text).is_err() {
                return;
            }
            for r in crate::template::references(text) {
                let message = match r.root {
                    "params" if !spec.params.contains_key(&r.name) => {
                        let hint = did_you_mean(&r.name, params.iter().copied())
                            .map(|s| format!(" (did you mean `params.{s}`?)"))
                            .unwrap_or_default();
                        let declared = if params.is_empty() {
                            "the DAG declares no `params`".to_owned()
                        } else {
                            format!("it declares {}", backticked(&params))
                        };
                        format!(
                            "task `{id}`: `params.{}` is not a param of this DAG{hint}: {declared}",
                            r.name
                        )
                    }
                    "tasks" if !spec.tasks.contains_key(&r.name) => {
                        let hint = did_you_mean(&r.name, task_ids.iter().copied())
                            .map(|s| format!(" (did you mean `tasks.{s}`?)"))
                            .unwrap_or_default();
                        format!(
                            "task `{id}`: `tasks.{}` is not a task of this DAG{hint}",
                            r.name
                        )
                    }
                    "tasks" if r.name == *id => format!(
                        "task `{id}`: `tasks.{id}` is the task itself: templates read the outputs of tasks upstream"
                    ),
                    "tasks" if !upstream.contains(&r.name) => format!(
                        "task `{id}`: reads `tasks.{0}`, but `{0}` is not upstream of `{id}` (its outputs would not exist yet): \
                         add `{0}` to `depends_on`, directly or through another task",
                        r.name
                    ),
                    _ => continue,
                };
                let loc = template_error_place(&lines, n.loc, text, r.line, r.col);
                out.push(Diagnostic::error(Some(loc), message));
            }
        });
    }
}

fn template_error_place(lines: &[&str], at: Loc, text: &str, line: usize, col: usize) -> Loc {
    let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let index = (at.line as usize).saturating_sub(1);
    let previous = index
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .map_or("", |l| l.trim_end());
    let block_header =
        previous.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
    if block_header.ends_with('|') || block_header.ends_with('>') {
        // Block scalar: serde-saphyr places it at its first content line; every template line
        // is one file line, at the same indentation. An error past the end points at the end.
        let template_lines: Vec<&str> = text.lines().collect();
        let count = template_lines.len().max(1);
        if line > count {
            let last = template_lines.last().map_or(0, |l| l.len());
            return Loc {
                line: to_u32(index + count),
                col: to_u32(at.col as usize + last),
            };
        }
        return Loc {
            line: to_u32(index + line),
            col: to_u32(at.col as usize + col.saturating_sub(1)),
        };
    }
    let Some(source_line) = lines.get(index) else {
        return at;
    };
    if text.contains('\n') {
        return at;
    }
    let start = (at.col as usize).saturating_sub(1).min(source_line.len());
    let quoted = source_line[start..].starts_with(['"', '\'']);
    let col = at.col as usize + usize::from(quoted) + col.saturating_sub(1).min(text.len());
    Loc {
        line: at.line,
        col: to_u32(col),
    }
}

fn check_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, `_`, `.` and `-`"
        ))
    }
}

fn check_task_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, `_` and `-` (no dots: templates read `tasks.<id>.outputs`)"
        ))
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Applies defaults; called only on a spec without errors (so without cycles).
fn build(spec: DagSpec, (graph, nodes): TaskGraph) -> Dag {
    let timezone = spec.timezone.map_or(Tz::UTC, |t| t.0);
    let d = &spec.defaults;
    let mut tasks = IndexMap::with_capacity(spec.tasks.len());
    for (id, t) in &spec.tasks {
        let c = &t.common;
        let task = Task {
            id: id.clone(),
            depends_on: c.depends_on.clone(),
            trigger_rule: c.trigger_rule.or(d.trigger_rule).unwrap_or_default(),
            when: c.when.as_ref().map(|w| w.0.clone()),
            foreach: c.foreach.clone(),
            retry: RetryPolicy {
                retries: c.retries.or(d.retries).unwrap_or(0),
                delay: c
                    .retry_delay
                    .or(d.retry_delay)
                    .unwrap_or(Duration(DEFAULT_RETRY_DELAY)),
                backoff: c.retry_backoff.or(d.retry_backoff).unwrap_or(1.0),
                max_delay: c
                    .max_retry_delay
                    .or(d.max_retry_delay)
                    .unwrap_or(Duration(DEFAULT_MAX_RETRY_DELAY)),
            },
            timeout: c.timeout.or(d.timeout),
            queue: c
                .queue
                .clone()
                .or_else(|| d.queue.clone())
                .unwrap_or_else(|| "default".to_owned()),
            pool: c.pool.clone().or_else(|| d.pool.clone()),
            priority: c.priority.or(d.priority).unwrap_or(0),
            on_failure: c
                .on_failure
                .clone()
                .or_else(|| d.on_failure.clone())
                .unwrap_or_default(),
            on_retry: c
                .on_retry
                .clone()
                .or_else(|| d.on_retry.clone())
                .unwrap_or_default(),
            step: t.step.clone(),
        };
        tasks.insert(id.clone(), task);
    }
    // Every param parses: a spec with errors is never built.
    let params = spec
        .params
        .iter()
        .filter_map(|(name, raw)| Some((name.clone(), crate::param::Param::parse(raw).ok()?)))
        .collect();
    Dag {
        start_date: spec.start_date.map(|s| s.resolve(timezone)),
        params,
        end_date: spec.end_date.map(|s| s.resolve_end(timezone)),
        timezone,
        tasks,
        graph,
        nodes,
        spec,
    }
}
