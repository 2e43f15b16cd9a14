//! Lateness: assets declared with `freshness` that were not updated in time, and runs not
//! finished by their DAG's `deadline`. Each late spell is told once through the notifiers
//! (the DAG's own list for it, else its `on_failure`); nothing about the runs changes.

use weir_model::asset::DeadlineReference;

use super::*;

/// How often declared assets are checked (freshness is counted in minutes and hours).
const FRESHNESS_EVERY: chrono::Duration = chrono::Duration::seconds(10);

impl Scheduler {
    /// Checks declared assets' freshness (every [`FRESHNESS_EVERY`]).
    pub(super) async fn check_freshness(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.next_freshness.is_some_and(|t| t > now) {
            return Ok(());
        }
        self.next_freshness = Some(now + FRESHNESS_EVERY);
        let mut declared = Vec::new();
        for row in self.store.list_dags().await? {
            if row.removed_at.is_some() {
                continue;
            }
            let version = self.dag_version(row.version_id).await?;
            let dag = &version.dag;
            for (key, asset) in &dag.spec.assets {
                let Some(freshness) = asset.freshness else {
                    continue;
                };
                declared.push(key.clone());
                let notifiers = asset.notify.as_ref().unwrap_or(&dag.spec.on_failure);
                let found = self
                    .store
                    .check_freshness(key, dag.id(), freshness.to_chrono(), notifiers, now)
                    .await?;
                if let weir_store::Freshness::Stale { since, told: true } = found {
                    tracing::warn!(asset = %key, dag_id = dag.id(), late_since = %since, "asset is stale");
                }
            }
        }
        self.store.forget_freshness_except(&declared).await?;
        Ok(())
    }

    /// Tells once about each active run past its DAG's deadline; returns the next deadline to
    /// come among them.
    pub(super) async fn check_deadlines(
        &mut self,
        active: &[ActiveRun],
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut next = None;
        for a in active.iter().filter(|a| a.run.deadline_missed_at.is_none()) {
            let version = self.dag_version(a.run.version_id).await?;
            let dag = &version.dag;
            let Some(deadline) = &dag.spec.deadline else {
                continue;
            };
            let (reference, word) = match deadline.reference {
                DeadlineReference::DataIntervalEnd => {
                    (a.run.data_interval_end, "data_interval_end")
                }
                DeadlineReference::LogicalDate => (a.run.logical_date, "logical_date"),
                DeadlineReference::QueuedAt => (a.run.created_at, "queued_at"),
            };
            let due = weir_model::duration::later(reference, deadline.within.0);
            if due > now {
                next = [next, Some(due)].into_iter().flatten().min();
                continue;
            }
            let describe = format!(
                "run {} had not finished by {} ({} after its {word}); it is still {}",
                a.run.run_id,
                due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                deadline.within,
                a.run.state,
            );
            let notifiers = deadline.notify.as_ref().unwrap_or(&dag.spec.on_failure);
            if self
                .store
                .mark_deadline_missed(&a.run, due, &describe, notifiers, now)
                .await?
            {
                tracing::warn!(dag_id = dag.id(), run_id = %a.run.run_id, due = %due, "run missed its deadline");
            }
        }
        Ok(next)
    }
}
