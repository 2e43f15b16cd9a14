//! Advancing active runs: queued runs started within `max_active_runs`, instances queued by
//! their trigger rules (workers' claims keep them within `max_active_tasks` and pools), `when`
//! and `foreach` rendered, due retries re-queued, and the notifications a run's end writes.

use super::*;

/// What a failed try leads to: another try after the task's retry delay, or failure.
pub fn retry_decision(
    dag: &Dag,
    ti: &TaskInstanceRow,
    now: DateTime<Utc>,
) -> (TaskState, Option<DateTime<Utc>>) {
    match dag.tasks.get(&ti.task_id) {
        Some(task) => task.retry.after_failure(ti.try_number, ti.max_tries, now),
        None => (TaskState::Failed, None),
    }
}

/// A run's template context, with the `item` slot for mapped instances.
#[derive(Clone)]
pub(super) struct RunRenderer {
    pub(super) ctx: RenderContext,
}

impl RunRenderer {
    pub(super) fn with_item(&self, item: Option<serde_json::Value>) -> RunRenderer {
        let mut ctx = self.ctx.clone();
        ctx.item = item.unwrap_or(serde_json::Value::Null);
        RunRenderer { ctx }
    }

    pub(super) fn render(&mut self, template: &str) -> std::result::Result<String, String> {
        Ok(Renderer::new(&self.ctx)?.render(template)?)
    }
}

impl Scheduler {
    /// Starts queued runs within `max_active_runs`; returns the ids of those started.
    pub(super) async fn start_queued_runs(
        &mut self,
        active: &[ActiveRun],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let mut started = Vec::new();
        let mut running: HashMap<&str, u32> = HashMap::new();
        for a in active.iter().filter(|a| a.run.state == RunState::Running) {
            *running.entry(a.run.dag_id.as_str()).or_default() += 1;
        }
        for run in active
            .iter()
            .map(|a| &a.run)
            .filter(|r| r.state == RunState::Queued)
        {
            let version = self.dag_version(run.version_id).await?;
            let dag = &version.dag;
            let count = running.entry(run.dag_id.as_str()).or_default();
            if *count < dag.spec.max_active_runs
                && self
                    .store
                    .set_run_state(&run.run_id, RunState::Queued, RunState::Running, &[], now)
                    .await?
            {
                *count += 1;
                started.push(run.run_id.clone());
                tracing::info!(dag_id = %run.dag_id, run_id = %run.run_id, "run started");
            }
        }
        Ok(started)
    }

    /// Advances the runs a pass decides for, in a few statements however many they are: their
    /// instances are read at once, and the instances that are simply ready (no `when`, a
    /// known pool) are queued at once, all runs together. A run with more to decide (skips,
    /// upstream failures, `foreach`, `when`, a missing pool, its end) goes on through
    /// [`Scheduler::advance_run`], which needs another look after each change.
    pub(super) async fn advance_runs(
        &mut self,
        runs: &[&RunRow],
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) -> Result<()> {
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        let mut by_run: HashMap<String, Vec<TaskInstanceRow>> = HashMap::new();
        for ti in self.store.task_instances_of_runs(&ids).await? {
            by_run.entry(ti.run_id.clone()).or_default().push(ti);
        }
        let mut to_queue = Vec::new();
        for run in runs {
            let tis = by_run.remove(&run.run_id).unwrap_or_default();
            let version = self.dag_version(run.version_id).await?;
            let dag = &version.dag;
            let plan = plan_run(dag, &tis);
            let by_id: HashMap<i64, &TaskInstanceRow> = tis.iter().map(|t| (t.id, t)).collect();
            let simple = plan.skip.is_empty()
                && plan.upstream_failed.is_empty()
                && plan.expand.is_empty()
                && plan.finished.is_none()
                && plan.ready.iter().all(|id| {
                    by_id
                        .get(id)
                        .and_then(|ti| Some((*ti, dag.tasks.get(&ti.task_id)?)))
                        .is_some_and(|(ti, task)| {
                            task.when.is_none() && self.unknown_pool(ti).is_none()
                        })
                });
            if simple {
                // Queued instances decide nothing further in this pass: no other look needed.
                if !plan.ready.is_empty() {
                    let _run =
                        tracing::debug_span!("run", dag_id = %run.dag_id, run_id = %run.run_id)
                            .entered();
                    tracing::debug!(ready = plan.ready.len(), "tasks queued");
                }
                to_queue.extend(plan.ready);
            } else {
                self.advance_run(run, tis, now, pass).await?;
            }
        }
        let queued = self
            .store
            .transition_tasks(&to_queue, TaskState::Scheduled, TaskState::Queued, now)
            .await?;
        if queued > 0 {
            tracing::debug!(
                queued,
                runs = runs.len(),
                "the ready instances of the runs queued at once"
            );
        }
        pass.queued += usize::try_from(queued).unwrap_or(usize::MAX);
        Ok(())
    }

    /// Evaluates a run (its instances `tis` as just read) until nothing more changes in this
    /// pass (so skips and upstream failures propagate through the whole graph at once), then
    /// finishes it if it is done.
    #[tracing::instrument(name = "run", skip_all, fields(dag_id = %run.dag_id, run_id = %run.run_id))]
    pub(super) async fn advance_run(
        &mut self,
        run: &RunRow,
        tis: Vec<TaskInstanceRow>,
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) -> Result<()> {
        let version = self.dag_version(run.version_id).await?;
        let dag = &version.dag;
        let mut read = Some(tis);
        for _ in 0..dag.tasks.len() + 2 {
            let tis = match read.take() {
                Some(tis) => tis,
                None => self.store.task_instances(&run.run_id).await?,
            };
            let plan = plan_run(dag, &tis);
            let mut changed = 0;
            changed += self
                .store
                .transition_tasks(&plan.skip, TaskState::Scheduled, TaskState::Skipped, now)
                .await?;
            changed += self
                .store
                .transition_tasks(
                    &plan.upstream_failed,
                    TaskState::Scheduled,
                    TaskState::UpstreamFailed,
                    now,
                )
                .await?;
            if !plan.expand.is_empty() || !plan.ready.is_empty() {
                let renderer = self.renderer(run, &tis)?;
                let by_id: HashMap<i64, &TaskInstanceRow> = tis.iter().map(|t| (t.id, t)).collect();
                for id in &plan.expand {
                    let Some(ti) = by_id.get(id) else { continue };
                    changed += u64::from(self.expand(run, ti, dag, &renderer, now).await?);
                }
                let mut to_queue = Vec::new();
                for id in &plan.ready {
                    let Some(ti) = by_id.get(id) else { continue };
                    let Some(task) = dag.tasks.get(&ti.task_id) else {
                        continue;
                    };
                    if let Some(when) = &task.when {
                        let mut ctx_renderer = renderer.with_item(ti.map_item.clone());
                        match ctx_renderer.render(when) {
                            Ok(text) if is_falsy(&text) => {
                                changed += self
                                    .store
                                    .transition_tasks(
                                        &[ti.id],
                                        TaskState::Scheduled,
                                        TaskState::Skipped,
                                        now,
                                    )
                                    .await?;
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let message = format!("`when` does not render: {e}");
                                changed += self.fail_unrun(run, dag, ti, &message, now).await?;
                                continue;
                            }
                        }
                    }
                    if let Some(pool) = self.unknown_pool(ti) {
                        let message = format!(
                            "pool `{pool}` is not in the configuration (add it under [pools])"
                        );
                        changed += self.fail_unrun(run, dag, ti, &message, now).await?;
                        continue;
                    }
                    // Queued at once: `max_active_tasks` and pool sizes are counted by the
                    // workers' claims, so a run is not held back by this pass's timing.
                    to_queue.push(ti.id);
                }
                let queued = self
                    .store
                    .transition_tasks(&to_queue, TaskState::Scheduled, TaskState::Queued, now)
                    .await?;
                if queued > 0 {
                    tracing::debug!(queued, "tasks queued");
                }
                pass.queued += usize::try_from(queued).unwrap_or(usize::MAX);
                changed += queued;
            }
            if let Some(outcome) = plan.finished {
                let notify = run_notifications(dag, run, &tis, outcome, now);
                if self
                    .store
                    .set_run_state(&run.run_id, RunState::Running, outcome, &notify, now)
                    .await?
                {
                    pass.runs_finished += 1;
                    tracing::info!(state = %outcome, "run finished");
                }
                return Ok(());
            }
            if changed == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The instance's pool when the configuration has no such pool (it cannot run).
    fn unknown_pool<'t>(&self, ti: &'t TaskInstanceRow) -> Option<&'t str> {
        ti.pool
            .as_deref()
            .filter(|p| !self.cfg.pools.contains_key(*p))
    }

    pub(super) fn renderer(&self, run: &RunRow, tis: &[TaskInstanceRow]) -> Result<RunRenderer> {
        let ctx = weir_ops::context::run_context_with_outputs(run, tis, &self.cfg.template_env);
        Ok(RunRenderer { ctx })
    }

    pub(super) async fn expand(
        &self,
        run: &RunRow,
        ti: &TaskInstanceRow,
        dag: &Dag,
        renderer: &RunRenderer,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(foreach) = dag.tasks.get(&ti.task_id).and_then(|t| t.foreach.as_ref()) else {
            return Ok(false);
        };
        let items = match foreach {
            weir_model::spec::Foreach::Items(items) => Ok(items.clone()),
            weir_model::spec::Foreach::Template(t) => renderer
                .clone()
                .render(t)
                .and_then(|text| parse_items(&text).map_err(String::from)),
        };
        match items {
            Ok(items) => {
                tracing::info!(run_id = %ti.run_id, task_id = %ti.task_id, items = items.len(), "foreach expanded");
                Ok(self.store.expand_mapped(ti, &items, now).await?)
            }
            Err(e) => {
                let message = format!("`foreach` does not render a list: {e}");
                Ok(self.fail_unrun(run, dag, ti, &message, now).await? > 0)
            }
        }
    }

    /// Fails a `scheduled` instance that cannot run, with its `on_failure` notifications;
    /// returns 1 if it changed, else 0.
    pub(super) async fn fail_unrun(
        &self,
        run: &RunRow,
        dag: &Dag,
        ti: &TaskInstanceRow,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let notify = dag.tasks.get(&ti.task_id).map_or_else(Vec::new, |task| {
            try_notifications(task, run, ti, TaskState::Failed, Some(error), now)
        });
        Ok(u64::from(
            self.store
                .fail_scheduled(ti.id, error, &notify, now)
                .await?,
        ))
    }

    /// Queues the retries that are due (claims keep them within limits); returns how many.
    pub(super) async fn requeue_due_retries(
        &mut self,
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) -> Result<u64> {
        let ids: Vec<i64> = self
            .store
            .due_retries(now)
            .await?
            .iter()
            .map(|ti| ti.id)
            .collect();
        let queued = self
            .store
            .transition_tasks(&ids, TaskState::UpForRetry, TaskState::Queued, now)
            .await?;
        pass.queued += usize::try_from(queued).unwrap_or(usize::MAX);
        Ok(queued)
    }
}
