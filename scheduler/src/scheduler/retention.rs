//! Retention: runs older than `[retention] keep_runs` deleted with their task instances and
//! logs, in batches, by a task of its own beside the active scheduler's passes.

use super::*;

/// Runs deleted per retention transaction.
pub const RETENTION_BATCH: i64 = 200;

/// How often the active scheduler looks for runs past `keep_runs`.
const RETENTION_EVERY: Duration = Duration::from_secs(24 * 3600);

/// After a failed cleanup, how long until the next attempt.
const RETENTION_RETRY: Duration = Duration::from_secs(60);

/// Deletes finished runs that ended before `cutoff`, in batches, and the settled
/// notifications and OpenLineage events written before it; returns how many runs went. (Asset
/// events stay: they are an asset's history, and what `backfill --missing` reads once a
/// run is gone.)
///
/// # Errors
/// Store failures (what was deleted before stays deleted).
pub async fn delete_old_runs(store: &Store, cutoff: DateTime<Utc>) -> Result<u64> {
    delete_paced(store, cutoff, 0).await
}

/// After each batch of runs, the scheduler's retention waits this many times as long as the
/// batch took: it takes at most a quarter of the database's time, and a pass's statements
/// (which queue behind a batch for SQLite's one connection) mostly find it free.
const RETENTION_REST: u32 = 3;

/// [`delete_old_runs`], waiting `rest` times as long as each batch of runs took before the next.
async fn delete_paced(store: &Store, cutoff: DateTime<Utc>, rest: u32) -> Result<u64> {
    while store
        .delete_notifications_before(cutoff, RETENTION_BATCH)
        .await?
        > 0
    {}
    while store.delete_lineage_before(cutoff, RETENTION_BATCH).await? > 0 {}
    let mut total = 0;
    loop {
        let started = std::time::Instant::now();
        let n = store
            .delete_runs_ended_before(cutoff, RETENTION_BATCH)
            .await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
        if rest > 0 {
            tokio::time::sleep(started.elapsed() * rest).await;
        }
    }
}

/// Retention while this scheduler leads (cancelled through `stop` when it stops leading):
/// at once, then once a day, deletes the finished runs older than `keep`. A first cleanup of
/// millions of old instances takes minutes; in a task of its own, resting between its short
/// batches, it holds up no pass.
pub(super) async fn keep_deleting(
    store: Store,
    keep: Duration,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    loop {
        let cutoff = weir_model::duration::earlier(clock.now(), keep);
        let next = tokio::select! {
            () = stop.cancelled() => return,
            deleted = delete_paced(&store, cutoff, RETENTION_REST) => match deleted {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, cutoff = %cutoff, "retention: old runs deleted");
                    }
                    RETENTION_EVERY
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention: cannot delete old runs; retrying");
                    RETENTION_RETRY
                }
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
    }
}
