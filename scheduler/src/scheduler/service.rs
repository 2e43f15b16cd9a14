//! The scheduler as a service: [`run`] waits to lead (one active scheduler per database),
//! then repeats passes, woken by notifications and timers, and records its heartbeat.

use super::*;

/// Runs the scheduler until `shutdown`: waits to become the active scheduler (Postgres: one
/// per database; a second one stands by and takes over when the first dies), then repeats
/// passes, woken by notifications, by the next due time, or at least every `scan_interval`.
///
/// # Errors
/// Never for database hiccups (logged and retried); only for a misconfigured dags folder.
pub async fn run(
    store: Store,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = store.listen();
    // Notifications go out from every scheduler process, active or standing by: claims keep
    // them from sending a row twice, and a standby keeps sending while the active one is down.
    let dispatcher = Dispatcher::new(store.clone(), Arc::clone(&clock), cfg.notify.clone());
    let notify = dispatcher.waker();
    let sending = tokio::spawn(dispatcher.run(shutdown.child_token()));
    let lineage = cfg.lineage.clone().map(|endpoint| {
        let sender = weir_notify::LineageSender::new(store.clone(), Arc::clone(&clock), endpoint);
        tokio::spawn(sender.run(shutdown.child_token()))
    });
    let result = lead_and_schedule(&store, cfg, clock, &shutdown, &notify).await;
    if let Some(l) = listener {
        l.abort();
    }
    sending.abort();
    if let Some(l) = lineage {
        l.abort();
    }
    result
}

/// How long after a change in the dags folder the scheduler reads it: the other events of
/// the same save arrive meanwhile.
const FOLDER_SETTLE: Duration = Duration::from_millis(20);

pub(super) async fn lead_and_schedule(
    store: &Store,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    shutdown: &CancellationToken,
    notify: &Notify,
) -> Result<()> {
    let mut announced_standby = false;
    let mut beat = Heartbeat::new();
    // A standby asks this often; a leader that died is replaced within it.
    let standby_retry = (cfg.leader_lease / 2).min(Duration::from_secs(2));
    loop {
        // A cut-off database never answers: the attempt is bounded like a renewal.
        let leadership = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            l = tokio::time::timeout(cfg.leader_lease, store.try_lead(&beat.id, cfg.leader_lease)) => l,
        };
        let mut leadership = match leadership {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => {
                beat.maybe(store, false, 0.0, clock.now()).await;
                if !announced_standby {
                    tracing::info!("another scheduler is active; standing by");
                    announced_standby = true;
                }
                tracing::debug!(
                    retry_in_ms = standby_retry.as_millis() as u64,
                    "the leader lease is held by another scheduler"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(standby_retry) => continue,
                }
            }
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the database; retrying"),
                    _ => tracing::warn!("the database did not answer; retrying"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(standby_retry) => continue,
                }
            }
        };
        tracing::info!(
            generation = leadership.generation(),
            "this scheduler is active"
        );
        announced_standby = false;
        let mut scheduler = Scheduler::new(store.clone(), cfg.clone(), Arc::clone(&clock));
        // Stopped when this scheduler stops leading (the guard dropped) or shuts down.
        let _retention = cfg.keep_runs.map(|keep| {
            let stop = shutdown.child_token();
            tokio::spawn(super::retention::keep_deleting(
                store.clone(),
                keep,
                Arc::clone(&clock),
                stop.clone(),
            ));
            stop.drop_guard()
        });
        let watch = if cfg.watch_folder {
            super::watch::watch(&cfg.dags_folder)
        } else {
            None
        };
        let mut full = true;
        loop {
            // Everything a leader does happens while its lease holds: losing it abandons a
            // pass in the middle (its transaction rolls back; a new leader ended its sessions).
            let started = std::time::Instant::now();
            let pass = tokio::select! {
                () = leadership.lost() => break,
                pass = scheduler.pass(full) => pass,
            };
            let loop_ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(target: "weir::pass", ms = loop_ms, "pass");
            beat.maybe(store, true, loop_ms, clock.now()).await;
            let next_due = match pass {
                Ok(pass) => {
                    // Run ends and reaped tries write notifications; workers' failed tries
                    // are picked up by the dispatcher's own poll.
                    if pass.runs_finished > 0 || pass.reaped > 0 {
                        notify.notify_one();
                    }
                    pass.next_due
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    Some(clock.now() + chrono::Duration::seconds(1))
                }
            };
            full = false;
            let now = clock.now();
            let wait = next_due
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(cfg.scan_interval)
                .min(cfg.scan_interval);
            let folder = async {
                match &watch {
                    Some(w) => w.changed.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = leadership.lost() => break,
                () = store.scheduler_woken() => {}
                () = tokio::time::sleep(wait) => {}
                () = folder => {
                    // An editor's save is several events: let them land, then read once.
                    tokio::time::sleep(FOLDER_SETTLE).await;
                    scheduler.scan_soon();
                }
            }
        }
        tracing::warn!("lost the scheduler's lease: stopped acting; standing by");
    }
}

/// A scheduler process's heartbeat row (for `/health` and the loop-latency gauge), written at
/// most every [`Heartbeat::EVERY`]: a failed write is logged, never fatal.
pub(super) struct Heartbeat {
    pub(super) id: String,
    pub(super) host: String,
    pub(super) last: Option<std::time::Instant>,
}

impl Heartbeat {
    pub(super) const EVERY: Duration = Duration::from_secs(5);

    pub(super) fn new() -> Heartbeat {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "host".into());
        Heartbeat {
            id: format!("{host}-{}", std::process::id()),
            host,
            last: None,
        }
    }

    pub(super) async fn maybe(
        &mut self,
        store: &Store,
        leader: bool,
        loop_ms: f64,
        now: DateTime<Utc>,
    ) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        // Bounded: a database that went silent must not hold up the loop.
        let write = store.scheduler_heartbeat(&self.id, &self.host, leader, loop_ms, now);
        match tokio::time::timeout(Duration::from_secs(2), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the scheduler heartbeat"),
            Err(_) => tracing::warn!("the scheduler heartbeat got no answer"),
        }
    }
}
