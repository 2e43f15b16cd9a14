//! weir-ops: what every process shares above the store: the actions an operator asks for
//! (trigger, backfill, clear, mark), the rows a new run starts with and the params it takes,
//! a try's template context, and the cache of parsed DAG versions.
//!
//! Where it sits: model → store → **ops** → scheduler / worker → web / cli. It depends on
//! weir-model and weir-store only, so the web server and the CLI reach operator actions
//! without the scheduler's or the worker's code, and the scheduler creates its scheduled runs
//! with the same [`runs::new_run`] a trigger uses.
//!
//! # Layout
//! - [`operator`]: what an operator does, each action audited: trigger, backfill, clear, mark,
//!   cancel, pause, reset incremental cursors. The web, the API and the CLI call these.
//! - [`actions`]: the cores of trigger, backfill, clear and mark, and the DAG lookups they
//!   start from (the engine's tests drive them directly).
//! - [`context`]: a try's template context and its rendering (scheduler, worker, task page).
//! - [`json`]: the JSON shapes of runs and task instances (SPEC §5), for the API and the CLI.
//! - [`runs`]: a new run's rows; params checked against their declarations.
//! - [`versions`]: stored DAG versions, parsed once per process (scheduler, worker, web).
//! - [`error`]: the error type.

pub mod actions;
pub mod context;
pub mod error;
pub mod json;
pub mod operator;
pub mod runs;
pub mod versions;

pub use error::{OpsError, Result};
