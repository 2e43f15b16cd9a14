//! Retention: runs older than `[scheduler] retention` deleted with their task instances and
//! logs, in batches.

use super::*;

/// Runs deleted per retention transaction.
pub const RETENTION_BATCH: i64 = 200;

/// Deletes finished runs that ended before `cutoff`, in batches, and the settled
/// notifications and OpenLineage events written before it; returns how many runs went. (Asset
/// events stay: they are an asset's history, and what `backfill --missing` reads once a
/// run is gone.)
///
/// # Errors
/// Store failures (what was deleted before stays deleted).
pub async fn delete_old_runs(store: &Store, cutoff: DateTime<Utc>) -> Result<u64> {
    while store
        .delete_notifications_before(cutoff, RETENTION_BATCH)
        .await?
        > 0
    {}
    while store.delete_lineage_before(cutoff, RETENTION_BATCH).await? > 0 {}
    let mut total = 0;
    loop {
        let n = store
            .delete_runs_ended_before(cutoff, RETENTION_BATCH)
            .await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

impl Scheduler {
    /// Once a day, deletes finished runs older than `keep_runs`.
    pub(super) async fn apply_retention(&mut self, now: DateTime<Utc>) -> Result<()> {
        let Some(keep) = self.cfg.keep_runs else {
            return Ok(());
        };
        if self
            .last_retention
            .is_some_and(|t| now - t < chrono::Duration::days(1))
        {
            return Ok(());
        }
        self.last_retention = Some(now);
        let cutoff = weir_model::duration::earlier(now, keep);
        let deleted = delete_old_runs(&self.store, cutoff).await?;
        if deleted > 0 {
            tracing::info!(deleted, cutoff = %cutoff, "retention: old runs deleted");
        }
        Ok(())
    }
}
