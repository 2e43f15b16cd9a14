//! `weir tasks test DAG TASK [--date D] [--param K=V] [--output T.K=V] [--item X | --map-index
//! N]`: one task, here and now, nothing written to weir's store (a data step does write to its
//! own connection: testing a load loads).

use anyhow::{Result, bail};
use tokio_util::sync::CancellationToken;
use weir_model::template::{RenderContext, Renderer};
use weir_ops::context::{Rendering, render_with_files};
use weir_worker::TaskOutcome;
use weir_worker::conn::{Connections, Masker};
use weir_worker::log::LogSink;
use weir_worker::step::{execute, shell::ShellEnv};

use super::{EXIT_FAILED, EXIT_OK};
use crate::config::Config;
use weir_scheduler::folder::{find_dag, load_dag_files};

/// What the command line gives the test: the date, params, upstream outputs, the item.
pub(crate) struct Given {
    pub(crate) date: Option<String>,
    pub(crate) params: Vec<String>,
    pub(crate) outputs: Vec<String>,
    pub(crate) item: Option<String>,
    pub(crate) map_index: Option<usize>,
}

/// Renders the task for the date with the given params and upstream outputs (none ran here)
/// and runs it, printing its log; exit 1 when it fails.
pub(crate) async fn test(
    config: &Config,
    dag_id: &str,
    task_id: &str,
    given: &Given,
) -> Result<u8> {
    let files = load_dag_files(
        std::slice::from_ref(&config.dags_folder),
        Some(&config.known()),
    )?;
    let (file, dag) = find_dag(&files, dag_id)?;
    let task = task_of(dag, task_id)?;
    let logical_date = super::runs::parse_test_date(dag, given.date.as_deref())?;
    let overrides = weir_ops::runs::parse_param_overrides(dag, &given.params)?;
    let params = weir_ops::runs::apply_params(dag, &overrides)?;
    let run_id = format!("{dag_id}__test");
    let mut ctx = RenderContext::for_run(
        dag_id,
        &run_id,
        logical_date,
        (logical_date, logical_date),
        dag.timezone,
        params,
    );
    ctx.task_id = task_id.to_owned();
    ctx.try_number = 1;
    for (upstream, outputs) in upstream_outputs(dag, task_id, &given.outputs)? {
        ctx.add_outputs(&upstream, serde_json::Value::Object(outputs));
    }
    let map_index = match (&task.foreach, &given.item, given.map_index) {
        (None, None, None) => -1,
        (None, _, _) => {
            bail!("task `{task_id}` has no `foreach`: --item and --map-index are for mapped tasks")
        }
        (Some(_), Some(item), _) => {
            ctx.item = serde_json::from_str(item)
                .unwrap_or_else(|_| serde_json::Value::String(item.clone()));
            0
        }
        (Some(foreach), None, index) => {
            let items = match foreach {
                weir_model::spec::Foreach::Items(items) => items.clone(),
                weir_model::spec::Foreach::Template(t) => Renderer::new(&ctx)
                    .and_then(|r| r.render(t))
                    .and_then(|text| weir_model::template::parse_items(&text))
                    .map_err(|e| anyhow::anyhow!("`foreach`: {e} (give the item with --item)"))?,
            };
            let index = index.unwrap_or(0);
            let Some(item) = items.get(index) else {
                bail!(
                    "--map-index {index}: `foreach` of task `{task_id}` has {} item(s)",
                    items.len()
                );
            };
            if given.map_index.is_none() {
                eprintln!(
                    "testing item 0 of {} ({item}); --map-index N or --item X picks another",
                    items.len()
                );
            }
            ctx.item = item.clone();
            i32::try_from(index).unwrap_or(i32::MAX)
        }
    };
    let urls = config.connection_urls();
    let conns = Connections::with_stores(urls.clone(), config.store_conns());
    let dialect_of = |conn: &str| conns.dialect(conn).map_err(|e| e.to_string());
    let step = Renderer::new(&ctx)
        .and_then(|r| render_with_files(&r, &task.step, &file.files, Rendering::Try(&dialect_of)))
        .map_err(|e| anyhow::anyhow!("task `{task_id}`: {e}"))?;
    let (sink, mut rx) = LogSink::channel(Masker::for_config(&config.secrets(), &urls));
    let printer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            match line.stream {
                "stderr" => eprintln!("{}", line.text),
                "weir" => eprintln!("[weir] {}", line.text),
                _ => println!("{}", line.text),
            }
        }
    });
    // An incremental load tested here reads everything: no store is opened.
    // Nor is a commit ledger kept: a test run is not a try of an instance.
    let env = ShellEnv {
        inherited: weir_worker::step::shell::inherited_env(&config.worker.pass_env).into(),
        incremental_cursor: None,
        attempt: None,
        keep_rejects: None,
        claims: None,
        context: serde_json::to_value(&ctx)?,
        python: config.python.setup(),
        vars: vec![
            ("WEIR_DAG_ID".into(), dag_id.into()),
            ("WEIR_RUN_ID".into(), run_id.clone()),
            ("WEIR_TASK_ID".into(), task_id.into()),
            ("WEIR_MAP_INDEX".into(), map_index.to_string()),
            ("WEIR_TRY_NUMBER".into(), "1".into()),
            ("WEIR_DS".into(), ctx.ds.clone()),
        ],
    };
    let outcome = execute(
        &step,
        &env,
        &conns,
        &file.files,
        task.timeout.map(|t| t.0),
        &sink,
        &CancellationToken::new(),
    )
    .await;
    drop(sink);
    let _ = printer.await;
    conns.close().await;
    match outcome {
        TaskOutcome::Succeeded { outputs } => {
            if !outputs.is_empty() {
                eprintln!("outputs: {}", serde_json::Value::Object(outputs));
            }
            Ok(EXIT_OK)
        }
        other => {
            eprintln!("task `{task_id}` {}", failure(&other));
            Ok(EXIT_FAILED)
        }
    }
}

/// Task `task_id` of `dag`, or an error naming the closest id.
pub(crate) fn task_of<'a>(dag: &'a weir_model::Dag, task_id: &str) -> Result<&'a weir_model::Task> {
    dag.tasks.get(task_id).ok_or_else(|| {
        let hint = weir_model::suggest::did_you_mean(task_id, dag.tasks.keys().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        anyhow::anyhow!("no task `{task_id}` in DAG `{}`{hint}", dag.id())
    })
}

/// `--output extract.rows=10`: outputs of tasks upstream of `task_id`, by task.
fn upstream_outputs(
    dag: &weir_model::Dag,
    task_id: &str,
    given: &[String],
) -> Result<std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>> {
    let upstream = dag.ancestors(task_id);
    let mut out: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        std::collections::BTreeMap::new();
    for pair in given {
        let Some((path, value)) = pair.split_once('=') else {
            bail!("--output `{pair}`: write TASK.KEY=VALUE, e.g. --output extract.rows=10");
        };
        let Some((task, key)) = path
            .split_once('.')
            .filter(|(t, k)| !t.is_empty() && !k.is_empty())
        else {
            bail!("--output `{pair}`: write TASK.KEY=VALUE, e.g. --output extract.rows=10");
        };
        if !upstream.contains(task) {
            let list = if upstream.is_empty() {
                "it has no upstream tasks".to_owned()
            } else {
                format!(
                    "its upstream tasks are {}",
                    upstream
                        .iter()
                        .map(|u| format!("`{u}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            bail!("--output `{pair}`: `{task}` is not upstream of `{task_id}` ({list})");
        }
        out.entry(task.to_owned())
            .or_default()
            .insert(key.to_owned(), output_value(value));
    }
    Ok(out)
}

/// An `--output` value as a task would have returned it: JSON where it reads as JSON (`10`,
/// `true`, `[1, 2]`, `{"a": 1}`), text otherwise (`2026-01-01`, `abc`).
fn output_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// A failed test's outcome in words: `failed: exit code 3`, `timed out after 5m`.
fn failure(outcome: &TaskOutcome) -> String {
    match outcome {
        TaskOutcome::Failed { error, .. } => format!("failed: {error}"),
        TaskOutcome::FailedWithOutputs { error, outputs, .. } => {
            format!(
                "failed: {error}; outputs: {}",
                serde_json::Value::Object(outputs.clone())
            )
        }
        TaskOutcome::NotYet { reason, .. } => format!("is still waiting: {reason}"),
        TaskOutcome::TimedOut { after } => {
            format!("timed out after {}", super::runs::words(*after))
        }
        TaskOutcome::Cancelled { reason } => format!("was stopped: {reason}"),
        TaskOutcome::Succeeded { .. } => "succeeded".to_owned(),
    }
}
