//! Which scheduler is active: a lease in the database, renewed by its holder, fenced on takeover.
//!
//! With Postgres, several schedulers may run; one leads. Two things decide who:
//! - **The lease row** (`weir_leader`) is the truth: its holder, a generation bumped on every
//!   takeover, and an expiry in the database's clock that the leader pushes forward every
//!   fifth of a lease. A leader that cannot renew in time stops acting on its own (it measures
//!   the lease from before it sent the renewal, so it always stops before the database's expiry).
//! - **A session-level advisory lock**, held by the leader on the connection it renews through,
//!   only makes a death visible at once: when the leader's process dies its session ends, the
//!   lock is free, and a standby takes the lease over without waiting for it to expire.
//!
//! A leader cut off from the database (a broken network, a stalled host) keeps a session the
//! server still thinks alive, and with it the lock: before weir had the lease, a standby never
//! took over. Now a standby takes over once the lease has expired, and then ends every database
//! session of the old leader's pool (`pg_terminate_backend`, by the pool's application name),
//! so that nothing the old leader had in flight can commit when its network comes back. The old
//! leader has already stopped by then, and finds itself a standby when it reconnects.
//!
//! With SQLite there is one process, and it always leads.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::db::Db;
use crate::{Result, Store};

/// The advisory lock key of the active scheduler.
const LEADER_LOCK: i64 = 7_377_002;

/// Proof of being the active scheduler; dropping it gives the role up (the renewing task and
/// its connection, hence the lock, go with it).
#[derive(Debug)]
pub struct Leadership {
    /// `None` with SQLite (never lost).
    lost: Option<watch::Receiver<bool>>,
    renewing: Option<tokio::task::JoinHandle<()>>,
    generation: i64,
}

impl Leadership {
    /// Resolves once the role is lost (the lease could not be renewed in time, or another
    /// scheduler holds it); never with SQLite.
    pub async fn lost(&mut self) {
        match &mut self.lost {
            None => std::future::pending().await,
            Some(rx) => {
                let _ = rx.wait_for(|lost| *lost).await;
            }
        }
    }

    /// The lease's generation (bumped by every takeover).
    pub fn generation(&self) -> i64 {
        self.generation
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.renewing.take() {
            task.abort();
        }
    }
}

/// The lease row as a standby reads it.
#[derive(sqlx::FromRow)]
struct LeaseRow {
    generation: i64,
    session_name: String,
    locked: bool,
    expired: bool,
}

impl Store {
    /// Tries to become the active scheduler, as `holder` (for messages), with a lease of
    /// `lease` (see the module's notes). `Ok(None)`: another scheduler leads.
    ///
    /// # Errors
    /// Database failures.
    pub async fn try_lead(&self, holder: &str, lease: Duration) -> Result<Option<Leadership>> {
        let pool = match &self.db {
            Db::Sqlite(_) => {
                return Ok(Some(Leadership {
                    lost: None,
                    renewing: None,
                    generation: 0,
                }));
            }
            Db::Postgres(pool) => pool,
        };
        let mut conn = pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if locked {
            // Should anything below fail or be abandoned, the lock must not stay in the pool.
            conn.close_on_drop();
        }
        let sent = Instant::now();
        let mut tx = conn.begin().await?;
        let row: LeaseRow = sqlx::query_as(
            "SELECT generation, session_name, locked, expires_at < clock_timestamp() AS expired
             FROM weir_leader WHERE id = 1 FOR UPDATE",
        )
        .fetch_one(&mut *tx)
        .await?;
        // Holding the lock proves the previous leader's session is gone, if it held the lock.
        let dead = locked && (row.locked || row.generation == 0);
        // A lease never taken (generation 0) may belong to a leader from before leases.
        let stale = row.generation > 0 && row.expired;
        if !dead && !stale {
            tx.rollback().await?;
            // A lock won while the leader lives without it goes with the closed connection.
            return Ok(None);
        }
        let generation: i64 = sqlx::query_scalar(
            "UPDATE weir_leader SET holder = $1, session_name = $2, locked = $3,
                 generation = generation + 1,
                 expires_at = clock_timestamp() + $4 * interval '1 millisecond'
             WHERE id = 1 RETURNING generation",
        )
        .bind(holder)
        .bind(&*self.session_name)
        .bind(locked)
        .bind(millis(lease))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        // The renewing connection (and the lock) leave the pool for good.
        let mut conn = conn.detach();
        if !dead {
            fence_out(&mut conn, &row.session_name, generation, locked).await;
        }
        let (tell, lost) = watch::channel(false);
        let renewing = tokio::spawn(renew(conn, generation, lease, sent + lease, tell));
        Ok(Some(Leadership {
            lost: Some(lost),
            renewing: Some(renewing),
            generation,
        }))
    }
}

/// After taking over an expired lease: ends every session of the old leader's pool (its
/// in-flight transactions roll back instead of committing when its network returns), then
/// takes the lock that its lock session no longer holds. Failing either (a role that may not
/// signal the other's backends), this leader leads by the lease alone: the lease decides, and
/// a death is then seen when the lease expires instead of at once.
async fn fence_out(conn: &mut PgConnection, old_session: &str, generation: i64, locked: bool) {
    let ended: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()
         ) s WHERE ended",
    )
    .bind(old_session)
    .fetch_one(&mut *conn)
    .await;
    match ended {
        Ok(n) => tracing::warn!(
            sessions = n,
            old = old_session,
            "the active scheduler did not renew its lease in time (cut off or stalled): took over and ended its database sessions"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            old = old_session,
            "took over from a scheduler that did not renew its lease, but could not end its database sessions"
        ),
    }
    if locked {
        return;
    }
    // The terminated lock session lets go of the lock within moments.
    for _ in 0..20 {
        let won: std::result::Result<bool, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut *conn)
                .await;
        if matches!(won, Ok(true)) {
            let noted = sqlx::query(
                "UPDATE weir_leader SET locked = true WHERE id = 1 AND generation = $1",
            )
            .bind(generation)
            .execute(&mut *conn)
            .await;
            if noted.is_ok() {
                return;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the old leader's lock is still held; leading by the lease alone");
}

/// Renews the lease every fifth of it until that fails or cannot be done before `valid_until`;
/// then reports the loss. The connection (and the lock) ends with this task.
async fn renew(
    mut conn: PgConnection,
    generation: i64,
    lease: Duration,
    mut valid_until: Instant,
    tell: watch::Sender<bool>,
) {
    loop {
        tokio::time::sleep(lease / 5).await;
        let sent = Instant::now();
        let budget = valid_until.saturating_duration_since(sent);
        let renewed = tokio::time::timeout(
            budget,
            sqlx::query(
                "UPDATE weir_leader SET expires_at = clock_timestamp() + $2 * interval '1 millisecond'
                 WHERE id = 1 AND generation = $1",
            )
            .bind(generation)
            .bind(millis(lease))
            .execute(&mut conn),
        )
        .await;
        match renewed {
            Ok(Ok(done)) if done.rows_affected() == 1 => valid_until = sent + lease,
            Ok(Ok(_)) => {
                tracing::warn!("another scheduler took the lease over");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "renewing the scheduler's lease failed");
                break;
            }
            Err(_) => {
                tracing::warn!("the database did not answer before the scheduler's lease ran out");
                break;
            }
        }
    }
    let _ = tell.send(true);
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
