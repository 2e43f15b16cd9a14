//! Parsing and validating a DAG file into a [`Dag`]: the typed tasks with their defaults
//! applied, on a petgraph, with every problem of the file reported in one pass.
//!
//!
//! # Layout
//! - this module: the types ([`Dag`], [`Task`], [`Parsed`], [`Known`]), [`parse_dag`], and
//!   the build of a checked spec into a `Dag`;
//! - `decode`: YAML into the spec, task by task; `check`: the spec as a whole; `steps`: each
//!   step's shape; `templates`: what templates read; `graph`: the task graph and its cycles;
//! - `retry`: [`RetryPolicy`].

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use serde::de::DeserializeOwned;

use crate::asset::{AssetCondition, ScheduleRule, ScheduleSpec};
use crate::diagnostic::{Diagnostic, Loc, Severity, tidy};
use crate::duration::Duration;
use crate::schedule::{DataInterval, Schedule};
use crate::spec::{
    Check, DagSpec, DbtStep, ExportStep, Foreach, HttpStep, LoadMode, LoadStep, MigrateStep,
    NoopStep, PythonStep, ShellStep, SqlStep, Step, TaskCommon, TaskSpec, TransferStep,
    ValidateStep, WaitForStep,
};
use crate::suggest::did_you_mean;
use crate::template::TemplateChecker;
use crate::trigger::TriggerRule;
use crate::yaml::{Node, Sink, Unknown, Value, backticked, decode, struct_fields};

mod check;
mod decode;
mod graph;
mod retry;
mod steps;
mod templates;

pub use check::step_conns;
use check::*;
use decode::*;
use graph::*;
pub use retry::RetryPolicy;
use steps::*;
use templates::*;

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
    /// Assets it declares it writes (templates).
    pub produces: Vec<String>,
    /// Assets it declares it reads (templates).
    pub consumes: Vec<String>,
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
        self.spec.schedule.as_ref().and_then(ScheduleSpec::cron)
    }

    /// The assets whose updates run this DAG, if it is scheduled on assets.
    pub fn asset_condition(&self) -> Option<&AssetCondition> {
        self.spec.schedule.as_ref().and_then(ScheduleSpec::assets)
    }

    /// The file trigger (`schedule: {files: …}`), if any.
    pub fn file_trigger(&self) -> Option<&ScheduleRule> {
        self.spec.schedule.as_ref().and_then(ScheduleSpec::files)
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
            produces: c.produces.clone(),
            consumes: c.consumes.clone(),
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
