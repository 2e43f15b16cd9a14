//! weir-scheduler: decides what runs when.
//!
//! It reads the dags folder (import errors recorded per file, the last good version kept),
//! stores DAG versions, creates runs (cron with catchup, manual, backfill: all through
//! `Store::create_run`), evaluates trigger rules, `when` and `foreach`, queues task instances
//! within `max_active_runs`, `max_active_tasks` and pools, re-queues retries when due, reaps
//! the tries of workers that stopped heartbeating, finishes runs by Airflow's leaf rule, and
//! runs the dispatcher that sends the notifications those changes wrote (`weir_notify`).
//!
//! Where it sits: uses weir-model, weir-store, weir-ops and weir-notify (run planning, DAG lookups); never
//! the worker or the web server: they meet in database rows.
//!
//! # Layout
//! - [`folder`]: reading DAG files (shared with the CLI's `dags validate`).
//! - [`plan`]: due cron intervals. Pure. (A new run's rows and params: `weir_ops::runs`.)
//! - [`evaluate`]: trigger rules and run outcomes. Pure.
//! - [`scheduler`]: the pass ([`Scheduler::run_once`]) and the loop ([`run`]).
//! - [`error`]: the error type.

pub mod error;
pub mod evaluate;
pub mod folder;
pub mod plan;
pub mod scheduler;

pub use error::SchedulerError;
pub use scheduler::{Pass, Scheduler, SchedulerConfig, delete_old_runs, run};
