//! Fencing: what the database last confirmed (the leases, and on Postgres the worker's
//! session), the loop that keeps both, and the process guard's deadline that follows them. A
//! worker that stops running or loses the database has its tasks killed by the guard before the
//! scheduler may give them to another worker.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Worker, WorkerConfig};

/// How soon a failed session check or heartbeat is tried again.
const RETRY_SOON: Duration = Duration::from_millis(250);

/// What the database last confirmed, as deadlines on this process's clock: the leases (from
/// the last heartbeat, taken a tenth short) and, on Postgres, the session (a scheduler takes a
/// worker whose session ended for dead after the session grace and a half).
pub(super) struct Confirmed {
    at: tokio::time::Instant,
    leases_until: tokio::time::Instant,
    session_until: Option<tokio::time::Instant>,
    lease: Duration,
    grace: Duration,
}

impl Confirmed {
    pub(super) fn new(cfg: &WorkerConfig, session: bool) -> Confirmed {
        let now = tokio::time::Instant::now();
        let grace = weir_store::session_grace(cfg.heartbeat_timeout);
        Confirmed {
            at: now,
            leases_until: now + cfg.heartbeat_timeout * 9 / 10,
            session_until: session.then_some(now + grace),
            lease: cfg.heartbeat_timeout,
            grace,
        }
    }

    /// When the process guard must have stopped the tasks.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        self.session_until
            .map_or(self.leases_until, |s| s.min(self.leases_until))
    }
}

/// Keeps the worker's session (Postgres) and leases until `stop`, and moves the process
/// guard's deadline with what the database confirmed: should this process stop running or
/// lose the database, the guard kills its tasks before the scheduler may give them to another
/// worker. The session is checked three times per session grace, heartbeats go every third of
/// a lease; a failure is retried within [`RETRY_SOON`]. No call may hang the loop on a
/// connection that went silent (a cut network): each is bounded by the session check's period.
pub(super) async fn keep_alive(
    worker: Worker,
    mut session: Option<weir_store::WorkerSession>,
    mut confirmed: Confirmed,
    stop: CancellationToken,
) {
    use tokio::time::Instant;
    let period = confirmed.lease / 3;
    let tick = if session.is_some() {
        confirmed.grace / 3
    } else {
        period
    };
    let mut next_check = confirmed.at + tick;
    let mut next_heartbeat = confirmed.at + period;
    let mut failing = (false, false);
    // Whether the tries were stopped for want of heartbeats (said once per outage).
    let mut stopped_all = false;
    loop {
        let wake = if session.is_some() {
            next_check.min(next_heartbeat)
        } else {
            next_heartbeat
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {}
        }
        if let Some(s) = &mut session
            && Instant::now() >= next_check
        {
            let sent = Instant::now();
            match tokio::time::timeout(tick, s.keep()).await {
                Ok(Ok(())) => {
                    confirmed.session_until = Some(sent + confirmed.grace);
                    next_check = sent + tick;
                    failing.0 = false;
                }
                failed => {
                    if !failing.0 {
                        match failed {
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "cannot hold the worker's database session; retrying")
                            }
                            _ => tracing::warn!(
                                "the worker's database session did not answer; retrying"
                            ),
                        }
                    }
                    failing.0 = true;
                    next_check = Instant::now() + RETRY_SOON;
                }
            }
        }
        if Instant::now() >= next_heartbeat {
            let sent = Instant::now();
            match tokio::time::timeout(tick, worker.heartbeat()).await {
                Ok(Ok(())) => {
                    confirmed.leases_until = sent + confirmed.lease * 9 / 10;
                    next_heartbeat = sent + period;
                    failing.1 = false;
                    stopped_all = false;
                }
                failed => {
                    if !failing.1 {
                        match failed {
                            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
                            _ => tracing::warn!("heartbeat unanswered; retrying"),
                        }
                    }
                    failing.1 = true;
                    next_heartbeat = Instant::now() + RETRY_SOON.max(tick / 2);
                }
            }
        }
        worker.fence_at(confirmed.deadline());
        // Past the leases, the scheduler may have given our tries to another worker: stop
        // them ourselves too (the guard has killed their processes already). Tries whose
        // outcome waits to be written stay listed; cancelling them again is harmless.
        if Instant::now() >= confirmed.leases_until + confirmed.lease / 10 {
            let running = worker
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !running.is_empty() && !stopped_all {
                tracing::error!("no heartbeat for a whole lease: stopping every running try");
                stopped_all = true;
            }
            for token in running.values() {
                token.cancel();
            }
        }
    }
}

impl Worker {
    /// Tells the process guard to stop this worker's tasks at `deadline` unless a later call
    /// moves it.
    pub(super) fn fence_at(&self, deadline: tokio::time::Instant) {
        *self
            .fence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(deadline);
        crate::step::guard::beat(deadline.saturating_duration_since(tokio::time::Instant::now()));
    }

    /// Whether the process guard's deadline has passed: a task that died now was most likely
    /// killed by it (a fenced try is lost, not failed).
    pub(super) fn fenced(&self) -> bool {
        self.fence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|deadline| tokio::time::Instant::now() >= deadline)
    }
}
