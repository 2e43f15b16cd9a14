//! Runs from assets: a DAG scheduled on assets runs when they were updated (`all`: each of them
//! since its last run from assets; `any`: once per update); with `cron` too, a due interval's
//! run waits until they were. Updates wait in the DAG's queue, written with each event; a run
//! takes the updates it used off the queue in the transaction that creates it.

use weir_model::asset::AssetCondition;
use weir_store::AssetEventRow;

use super::*;

impl Scheduler {
    /// Creates the runs that queued asset updates call for (every pass: the queue is empty
    /// unless an asset was updated, and an event wakes the scheduler).
    pub(super) async fn create_asset_runs(
        &mut self,
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) -> Result<()> {
        let dags = self.store.dags_with_queued_events().await?;
        if dags.is_empty() {
            return Ok(());
        }
        let unfinished = self.store.unfinished_runs_by_dag().await?;
        for dag_id in dags {
            let row = match self.store.dag(&dag_id).await {
                Ok(row) => row,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if row.paused || row.removed_at.is_some() {
                continue;
            }
            let version = self.dag_version(row.version_id).await?;
            let dag = &version.dag;
            let Some(condition) = dag.asset_condition() else {
                continue;
            };
            let mut room = i64::from(dag.spec.max_active_runs)
                - unfinished.get(dag.id()).copied().unwrap_or(0);
            if room <= 0 {
                continue;
            }
            let events = self.store.queued_events(dag.id()).await?;
            // Updates of assets the DAG no longer waits for cannot make a run.
            let (events, stray): (Vec<_>, Vec<_>) = events
                .into_iter()
                .partition(|e| condition.keys().contains(&e.asset_key));
            if !stray.is_empty() {
                let ids: Vec<i64> = stray.iter().map(|e| e.id).collect();
                self.store.drop_queued_events(dag.id(), &ids).await?;
            }
            // With cron, one run per due interval takes every update queued by then.
            let batches: Vec<Vec<AssetEventRow>> = match condition {
                AssetCondition::All(keys) => {
                    if keys
                        .iter()
                        .all(|k| events.iter().any(|e| &e.asset_key == k))
                    {
                        vec![events]
                    } else {
                        Vec::new()
                    }
                }
                AssetCondition::Any(_) if dag.schedule().is_some() => {
                    if events.is_empty() {
                        Vec::new()
                    } else {
                        vec![events]
                    }
                }
                AssetCondition::Any(_) => events.into_iter().map(|e| vec![e]).collect(),
            };
            for batch in batches {
                if room <= 0 {
                    break;
                }
                let Some(new) = self.asset_run(dag, row.version_id, &batch, now).await? else {
                    // A cron schedule with no interval due: the updates wait for the next tick.
                    if let (Some(Schedule::Cron(cron)), Some(last)) = (
                        dag.schedule(),
                        self.store.last_scheduled_logical_date(dag.id()).await?,
                    ) {
                        let next_end = cron
                            .next_after(dag.timezone, last)
                            .and_then(|s| cron.next_after(dag.timezone, s));
                        pass.next_due = [pass.next_due, next_end].into_iter().flatten().min();
                    }
                    break;
                };
                let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                if let Some(run) = self.store.create_run_consuming(&new, &ids, now).await? {
                    tracing::info!(dag_id = dag.id(), run_id = %run.run_id, events = ids.len(), "run created from asset updates");
                    pass.runs_created += 1;
                    room -= 1;
                }
            }
        }
        Ok(())
    }

    /// The run `events` make: with `cron`, the latest due interval's (none if no interval is
    /// due); otherwise a run at `now` covering the events' data intervals.
    async fn asset_run(
        &self,
        dag: &Dag,
        version_id: i64,
        events: &[AssetEventRow],
        now: DateTime<Utc>,
    ) -> Result<Option<weir_store::NewRun>> {
        let trigger = trigger_json(events);
        if dag.schedule().is_some() {
            let last = self.store.last_scheduled_logical_date(dag.id()).await?;
            let Some(interval) = due_intervals(dag, last, now).pop() else {
                return Ok(None);
            };
            let mut new = new_run(
                dag,
                version_id,
                RunType::Scheduled,
                interval,
                &serde_json::Map::new(),
            )?;
            new.triggered_by = Some(trigger);
            return Ok(Some(new));
        }
        let start = events.iter().filter_map(|e| e.interval_start).min();
        let end = events.iter().filter_map(|e| e.interval_end).max();
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if s <= e => (s, e),
            _ => (now, now),
        };
        let interval = weir_model::DataInterval { start, end };
        let new = self
            .triggered_run(dag, version_id, RunType::Assets, interval, trigger, now)
            .await?;
        Ok(Some(new))
    }

    /// A run made by data (assets, files) at `now`: its logical date is when it was
    /// triggered (unique per DAG: after its latest run), `trigger` its context's `trigger`.
    pub(super) async fn triggered_run(
        &self,
        dag: &Dag,
        version_id: i64,
        run_type: RunType,
        interval: weir_model::DataInterval,
        trigger: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<weir_store::NewRun> {
        let mut new = new_run(dag, version_id, run_type, interval, &serde_json::Map::new())?;
        let latest = self.store.latest_logical_date(dag.id()).await?;
        new.logical_date = match latest {
            Some(l) if l >= now => l + chrono::Duration::microseconds(1),
            _ => now,
        };
        new.triggered_by = Some(trigger);
        Ok(new)
    }
}

/// The template context's `trigger` of a run from `events`: each event, and by asset.
fn trigger_json(events: &[AssetEventRow]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = events.iter().map(AssetEventRow::to_json).collect();
    let mut by_asset = serde_json::Map::new();
    for (e, json) in events.iter().zip(&list) {
        if let serde_json::Value::Array(a) = by_asset
            .entry(e.asset_key.clone())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            a.push(json.clone());
        }
    }
    serde_json::json!({ "kind": "assets", "events": list, "assets": by_asset })
}
