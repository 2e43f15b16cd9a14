//! Worker registrations: who is alive, for operators and for lease accounting.

use chrono::{DateTime, Utc};

use crate::db::{Db, with_pool};
use crate::{Result, Store};

/// The first key of workers' session locks (`pg_advisory_lock(space, hashtext(worker_id))`).
const WORKER_LOCK_SPACE: i32 = 7_377_002;

/// This machine as far as process ids mean anything: hostname, boot and pid namespace (two
/// containers sharing a hostname are different machines here).
pub fn machine_id() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        "{}/{}/{ns}",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id")
    )
}

/// How a worker was seen to end (see [`Store::dead_workers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEnd {
    /// Its process is gone (seen from its own machine): certain.
    ProcessGone,
    /// Its Postgres session ended: its process died, or it lost the database (a network
    /// that reset its connections). A live worker stops its tasks within [`session_grace`]
    /// of its last confirmed session, so its tries may be taken back once the session has
    /// been seen gone for longer than that.
    SessionEnded,
}

/// How long a worker may go without confirming its database session before its process
/// guard stops its tasks (it confirms three times as often): a third of the lease, so the
/// fast path for a dead worker on another machine costs half a lease, not a whole one.
pub fn session_grace(heartbeat_timeout: std::time::Duration) -> std::time::Duration {
    heartbeat_timeout / 3
}

/// Whether process `pid` of this machine exists (one of another user counts: it exists).
fn process_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// A worker's Postgres session holding its lock (see [`Store::worker_session`]).
#[derive(Debug)]
pub struct WorkerSession {
    pool: sqlx::PgPool,
    worker_id: String,
    conn: Option<sqlx::PgConnection>,
}

impl WorkerSession {
    /// Checks the session and takes the lock again on a new one when it was lost (a database
    /// restart ends every session).
    ///
    /// # Errors
    /// Database failures.
    pub async fn keep(&mut self) -> Result<()> {
        use sqlx::Connection;
        if let Some(conn) = &mut self.conn
            && conn.ping().await.is_ok()
        {
            return Ok(());
        }
        self.conn = None;
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(WORKER_LOCK_SPACE)
            .bind(&self.worker_id)
            .execute(&mut conn)
            .await?;
        self.conn = Some(conn);
        Ok(())
    }
}

/// A registered worker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    /// Worker id (unique per process start).
    pub worker_id: String,
    /// Host it runs on.
    pub hostname: String,
    /// Queues it takes from (JSON list).
    pub queues: String,
    /// Slots.
    pub concurrency: i32,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Clean stop, if it stopped cleanly.
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Registers a starting worker.
    ///
    /// # Errors
    /// Database failures (a duplicate id among them).
    pub async fn register_worker(
        &self,
        worker_id: &str,
        hostname: &str,
        queues: &[String],
        concurrency: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let queues = serde_json::to_string(queues)?;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_workers (worker_id, hostname, queues, concurrency, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(worker_id)
            .bind(hostname)
            .bind(&queues)
            .bind(concurrency)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records the worker's process: its pid on this machine ([`machine_id`]), so that a
    /// scheduler on the same machine notices its death at once.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_worker_process(&self, worker_id: &str, pid: u32) -> Result<()> {
        let pid = i64::from(pid);
        let machine = machine_id();
        with_pool!(self, |pool| {
            sqlx::query("UPDATE weir_workers SET pid = $2, machine = $3 WHERE worker_id = $1")
                .bind(worker_id)
                .bind(pid)
                .bind(&machine)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// On Postgres, takes a session-level lock named after the worker on a connection of its
    /// own, held as long as the returned session lives (and re-taken by [`WorkerSession::keep`]
    /// after the connection was lost): when the process dies its session ends and the lock
    /// with it, which the scheduler sees at once. `None` on SQLite.
    ///
    /// # Errors
    /// Database failures.
    pub async fn worker_session(&self, worker_id: &str) -> Result<Option<WorkerSession>> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let mut session = WorkerSession {
            pool: pool.clone(),
            worker_id: worker_id.to_owned(),
            conn: None,
        };
        session.keep().await?;
        sqlx::query("UPDATE weir_workers SET session_lock = true WHERE worker_id = $1")
            .bind(worker_id)
            .execute(pool)
            .await?;
        Ok(Some(session))
    }

    /// Workers running tries that are seen ended, without waiting for their leases: on any
    /// backend those of this machine whose process is gone; with `sessions`, on Postgres, also
    /// those whose session lock is gone (not right after a database restart, which ends every
    /// session: live workers take theirs again within a heartbeat). Only workers with running
    /// tries are looked at.
    ///
    /// # Errors
    /// Database failures.
    pub async fn dead_workers(&self, sessions: bool) -> Result<Vec<(String, WorkerEnd)>> {
        const CANDIDATES: &str = "SELECT DISTINCT w.worker_id, CAST(w.pid AS BIGINT), w.machine, w.session_lock FROM weir_workers w
             JOIN weir_task_instances t ON t.worker_id = w.worker_id AND t.state = 'running'";
        let rows: Vec<(String, Option<i64>, Option<String>, bool)> =
            with_pool!(self, |pool| sqlx::query_as(CANDIDATES)
                .fetch_all(pool)
                .await?);
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let here = machine_id();
        let mut dead: Vec<(String, WorkerEnd)> = rows
            .iter()
            .filter(|(_, pid, machine, _)| {
                machine.as_deref() == Some(here.as_str()) && pid.is_some_and(|p| !process_alive(p))
            })
            .map(|(id, ..)| (id.clone(), WorkerEnd::ProcessGone))
            .collect();
        if let (true, Db::Postgres(pool)) = (sessions, &self.db) {
            let locked: Vec<String> = rows
                .iter()
                .filter(|(.., session)| *session)
                .map(|(id, ..)| id.clone())
                .collect();
            if !locked.is_empty() {
                let gone: Vec<String> = sqlx::query_scalar(
                    "SELECT w FROM unnest($1::text[]) AS w WHERE NOT EXISTS (
                         SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                           AND l.classid = $2::oid AND l.objid = hashtext(w)::oid AND l.objsubid = 2)",
                )
                .bind(&locked)
                .bind(WORKER_LOCK_SPACE)
                .fetch_all(pool)
                .await?;
                for g in gone {
                    if !dead.iter().any(|(id, _)| *id == g) {
                        dead.push((g, WorkerEnd::SessionEnded));
                    }
                }
            }
        }
        Ok(dead)
    }
    ///
    /// # Errors
    /// Database failures.
    pub async fn stop_worker(&self, worker_id: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE weir_workers SET stopped_at = $2 WHERE worker_id = $1")
                .bind(worker_id)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Workers that have not stopped, newest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>> {
        const SQL: &str = "SELECT worker_id, hostname, queues, concurrency, started_at, heartbeat_at, stopped_at FROM weir_workers
             WHERE stopped_at IS NULL ORDER BY started_at DESC";
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, WorkerRow>(SQL)
            .fetch_all(pool)
            .await?))
    }
}
