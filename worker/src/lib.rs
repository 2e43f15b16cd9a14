//! weir-worker: runs task instances.
//!
//! A worker claims queued task instances with one atomic statement (a lease), runs up to
//! `concurrency` tries at once (a semaphore permit moves into each), renders each task's
//! templates from its pinned DAG version, runs its step, streams its output into the store
//! line by line, heartbeats its leases, and records the outcome only while it still holds the
//! lease. Task process groups die with the worker (a guard process kills them when the worker
//! is gone) and with their try.
//!
//! Where it sits: uses weir-model, weir-store, weir-ops and weir-notify; never the scheduler
//! or the web server.
//!
//! # Layout
//! - [`worker`]: the claim loop, tries, heartbeats and fencing (`liveness`), recording
//!   outcomes (`record`), shutdown ([`run`]).
//! - [`step`]: one executor per step kind (shell, sql, migrate, load, validate, export, http),
//!   SQL text helpers, what generic SQL code needs of a database (`db`), and the process
//!   guard.
//! - [`conn`]: data connections (pools opened on first use) and secret masking.
//! - [`log`]: batching log lines into the store.
//! - [`outcome`]: how a try ended.
//! - [`error`]: the error type.

pub mod conn;
pub mod error;
pub mod lineage;
pub mod log;
pub mod outcome;
pub mod step;
pub mod worker;

pub use error::WorkerError;
pub use outcome::TaskOutcome;
pub use worker::{Worker, WorkerConfig, run};
