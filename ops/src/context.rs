//! A try's template context and its rendering, assembled here only: the scheduler renders
//! `when` and `foreach` with it, the worker a try's step, the task page the step for reading.

use std::collections::BTreeMap;

use weir_model::sql::Dialect;
use weir_model::template::{RenderContext, Renderer};
use weir_model::{Dag, RenderError, Step, TaskState};
use weir_store::{RunRow, Store, StoreError, TaskInstanceRow};

/// The context every task of `run` shares (SPEC §2): the run's dates and params in its time
/// zone, and the environment variables the configuration allows (`env.<NAME>`).
pub fn run_context(run: &RunRow, template_env: &BTreeMap<String, String>) -> RenderContext {
    let mut ctx = RenderContext::for_run(
        &run.dag_id,
        &run.run_id,
        run.logical_date,
        (run.data_interval_start, run.data_interval_end),
        run.tz(),
        run.params.clone(),
    );
    ctx.set_env(template_env);
    if let Some(trigger) = &run.triggered_by {
        ctx.trigger = trigger.clone();
    }
    ctx
}

/// [`run_context`] with the outputs of the run's succeeded instances among `tis` (the
/// scheduler's view of a run, for `when` and `foreach`).
pub fn run_context_with_outputs(
    run: &RunRow,
    tis: &[TaskInstanceRow],
    template_env: &BTreeMap<String, String>,
) -> RenderContext {
    let mut ctx = run_context(run, template_env);
    ctx.add_succeeded_outputs(
        tis.iter()
            .filter(|t| t.state == TaskState::Success)
            .map(|t| (t.task_id.as_str(), t.map_index, t.outputs.as_ref())),
    );
    ctx
}

/// The template context of one try of `ti` (a task of `dag`, the run's version): the run's
/// context, the try, the `foreach` item, and the outputs of every task upstream of it (direct
/// or not).
///
/// # Errors
/// Database failures.
pub async fn try_context(
    store: &Store,
    run: &RunRow,
    ti: &TaskInstanceRow,
    dag: &Dag,
    template_env: &BTreeMap<String, String>,
) -> Result<RenderContext, StoreError> {
    let mut ctx = run_context(run, template_env);
    ctx.task_id = ti.task_id.clone();
    ctx.try_number = ti.try_number;
    ctx.item = ti.map_item.clone().unwrap_or(serde_json::Value::Null);
    // Only outputs of tasks upstream: validation allows `tasks.<id>` for those only.
    let upstream: Vec<String> = dag.ancestors(&ti.task_id).into_iter().collect();
    if !upstream.is_empty() {
        let outputs = store.succeeded_outputs(&run.run_id, &upstream).await?;
        ctx.add_succeeded_outputs(outputs.iter().map(|(t, m, o)| (t.as_str(), *m, o.as_ref())));
    }
    Ok(ctx)
}

/// The SQL dialect of a connection, by its name (a worker's configured connections).
pub type DialectOf<'a> = &'a dyn Fn(&str) -> Result<Dialect, String>;

/// What a step is rendered for.
#[derive(Clone, Copy)]
pub enum Rendering<'a> {
    /// A try, whose connections have these dialects: a shell script's values become
    /// variables, SQL texts place theirs by the dialect of their connection (see
    /// [`Renderer::render_step`]).
    Try(DialectOf<'a>),
    /// Reading (the task page): every value in place as text (see
    /// [`Renderer::render_step_for_reading`]).
    Reading,
}

/// A step rendered, with a `sql` step's `file` read from the DAG version's files.
///
/// # Errors
/// The first template that fails, or a file the version does not hold.
pub fn render_with_files(
    renderer: &Renderer,
    step: &Step,
    files: &BTreeMap<String, String>,
    rendering: Rendering<'_>,
) -> Result<Step, RenderError> {
    let mut step = match rendering {
        Rendering::Try(dialect_of) => renderer.render_step(step, dialect_of)?,
        Rendering::Reading => renderer.render_step_for_reading(step)?,
    };
    if let Step::Sql(s) = &mut step
        && let Some(path) = s.file.take()
    {
        let text = files
            .get(&path)
            .ok_or_else(|| format!("the DAG version holds no file `{path}`"))?;
        let rendered = match rendering {
            Rendering::Try(dialect_of) => renderer.render_sql(text, dialect_of(&s.conn)?),
            Rendering::Reading => renderer.render(text),
        };
        s.sql = vec![rendered.map_err(|e| RenderError(format!("{path}: {e}")))?];
    }
    Ok(step)
}
