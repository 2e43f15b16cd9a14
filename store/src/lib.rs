//! weir-store: the state store. Everything weir knows for sure lives here: DAG versions, runs,
//! task instances with their leases, logs, workers.
//!
//! Where it sits: above weir-model, below the scheduler, the workers, the web server and the
//! CLI, which meet only in these rows. One API over two backends: SQLite (embedded, one
//! process) and Postgres (any number of schedulers and workers on any number of hosts). All
//! SQL of weir is in this crate, as plain strings with bound parameters; most statements are
//! the same text on both backends (both take `$1` placeholders), the claim differs.
//!
//! Wake-ups: a state change that someone else waits for calls [`Store::wake_scheduler`] or
//! [`Store::wake_workers`]. In one process that is an in-memory notification; with Postgres it
//! is also a `NOTIFY`, which [`Store::listen`] turns back into local notifications on every
//! host. Wake-ups are hints: every loop also re-reads the database on a timer.
//!
//! # Layout
//! - [`error`]: the error type; sqlx errors are mapped there only.
//! - `db`: connecting, migrating, the backend dispatch.
//! - `dag`: DAG versions, paused flags, import errors.
//! - `leader`: which scheduler is active (a lease with a generation, fenced on takeover).
//! - `run`: runs and the creation of their task instances.
//! - `task`: task-instance transitions: queueing, claiming (leases), heartbeats, completion,
//!   reaping, clearing.
//! - `log`: task log lines, log tails and the spans of tries.
//! - `notify`: the notification outbox.
//! - `user`: users of the web UI and API, their roles and API tokens.
//! - `session`: login sessions. `audit`: the audit log.
//! - `heartbeat`: scheduler heartbeats. `stats`: counts for metrics.
//! - `history`: recent runs and the grid, as a DAG's pages show them.
//! - `manual`: cancelling a run and marking instances by hand.
//! - `worker`: worker registrations.

pub mod asset;
mod audit;
mod claim;
mod dag;
mod db;
pub mod error;
mod explain;
mod freshness;
mod heartbeat;
mod history;
mod leader;
mod lineage;
mod log;
mod manual;
mod notify;
mod run;
mod session;
mod stats;
mod task;
mod user;
mod wake;
mod worker;

pub use asset::{
    Access, AssetCounts, AssetEventRow, AssetRecord, AssetSummary, ExternalEvent, LineageEdge,
    LineageOf, StaleInterval,
};
pub use audit::AuditRow;
pub use claim::ObjectOwner;
pub use dag::{DagRow, DagVersion, ImportErrorRow};
pub use db::{Backend, Store, redact, sqlite_file};
pub use error::StoreError;
pub use freshness::{Freshness, FreshnessRow};
pub use heartbeat::SchedulerRow;
pub use history::{GridCell, RunBrief};
pub use leader::Leadership;
pub use lineage::ClaimedLineage;
pub use log::{LogLine, NewLogLine, TrySpan};
pub use notify::{ClaimedNotification, Notice, NoticeEvent, Notification, NotificationRow};
pub use run::{ActiveRun, NewRun, NewTaskInstance, RunFilter, RunRow, VersionMove, run_id_for};
pub use session::SessionRow;
pub use stats::StateCounts;
pub use task::{Claim, ClaimedTask, Completion, TaskInstanceRow};
pub use user::{LoginAttempt, Role, UserRow};
pub use worker::{WorkerEnd, WorkerRow, WorkerSession, machine_id, session_grace};

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
