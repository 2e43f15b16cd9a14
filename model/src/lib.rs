//! weir-model: the DAG format and the pure logic around it.
//!
//! It owns the YAML mirror of a DAG file ([`DagSpec`]), its validation into a [`Dag`] on a
//! petgraph with every problem reported at once with its line and column, schedules and data
//! intervals (Airflow's cron timetable, DST-correct), durations, dates, trigger rules, template
//! syntax checks and the JSON Schema of the format.
//!
//! Where it sits: the bottom of the crate graph (see ARCHITECTURE.md).
//! It does no I/O and knows nothing of tokio or sqlx: callers hand it text and get values back.
//!
//! # Layout
//! - [`yaml`]: YAML text to a located node tree, and a serde deserializer over it that collects
//!   every problem.
//! - [`spec`]: the YAML mirror (`DagSpec`, `TaskSpec`, one struct per step kind).
//! - [`dag`]: validation into [`Dag`] (graph, defaults, cycles, references).
//! - [`schedule`]: cron parsing, ticks and data intervals; [`asset`]: asset keys and the
//!   schedules on assets and arriving files.
//! - [`duration`], [`date`], [`timezone`], [`trigger`], [`text`]: value types of the format.
//! - [`template`]: tera syntax checks and rendering.
//! - [`sql`]: SQL dialects, quoting, and placing template values into statements as data.
//! - [`schema`]: the JSON Schema.
//! - [`diagnostic`], [`suggest`]: problems with places, and "did you mean".
//! - [`error`]: the errors of rendering and of building SQL ([`RenderError`], [`SqlError`]).

pub mod asset;
pub mod clock;
pub mod dag;
pub mod date;
pub mod diagnostic;
pub mod duration;
pub mod error;
pub mod files;
pub mod param;
pub mod schedule;
pub mod schema;
pub mod spec;
pub mod sql;
pub mod state;
pub mod suggest;
pub mod template;
pub mod text;
pub mod timezone;
pub mod trigger;
pub mod yaml;
mod yaml_tree;

pub use dag::{Dag, Known, Parsed, RetryPolicy, Task, parse_dag};
pub use diagnostic::{Diagnostic, Loc, Severity};
pub use error::{RenderError, SqlError};
pub use schedule::{DataInterval, Schedule};
pub use spec::{DagSpec, Step, TaskSpec};
pub use state::{RunState, RunType, TaskState};
pub use trigger::TriggerRule;
