//! `weir tasks test DAG TASK [--date D]`: one task, here and now, nothing written to weir's
//! store (a data step does write to its own connection: testing a load loads).

use anyhow::{Result, bail};
use tokio_util::sync::CancellationToken;
use weir_model::template::{RenderContext, Renderer};
use weir_worker::TaskOutcome;
use weir_worker::conn::{Connections, Masker};
use weir_worker::log::LogSink;
use weir_worker::step::{execute, shell::ShellEnv};
use weir_worker::worker::render_with_files;

use super::{EXIT_FAILED, EXIT_OK};
use crate::config::Config;
use weir_scheduler::folder::{find_dag, load_dag_files};

/// Renders the task for the date (upstream outputs are empty: nothing ran) and runs it,
/// printing its log; exit 1 when it fails.
pub(crate) async fn test(
    config: &Config,
    dag_id: &str,
    task_id: &str,
    date: Option<&str>,
) -> Result<u8> {
    let files = load_dag_files(
        std::slice::from_ref(&config.dags_folder),
        Some(&config.known()),
    )?;
    let (file, dag) = find_dag(&files, dag_id)?;
    let Some(task) = dag.tasks.get(task_id) else {
        let hint = weir_model::suggest::did_you_mean(task_id, dag.tasks.keys().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        bail!("DAG `{dag_id}` has no task `{task_id}`{hint}");
    };
    let logical_date = super::runs::parse_test_date(dag, date)?;
    let params = weir_scheduler::plan::apply_params(dag, &serde_json::Map::new())?;
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
    let step = Renderer::new(&ctx)
        .and_then(|r| render_with_files(&r, &task.step, &file.files))
        .map_err(|e| anyhow::anyhow!(e))?;
    let urls = config.connection_urls();
    let conns = Connections::new(urls.clone());
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
        incremental_cursor: None,
        attempt: None,
        keep_rejects: None,
        vars: vec![
            ("WEIR_DAG_ID".into(), dag_id.into()),
            ("WEIR_RUN_ID".into(), run_id.clone()),
            ("WEIR_TASK_ID".into(), task_id.into()),
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
            eprintln!("task failed: {other:?}");
            Ok(EXIT_FAILED)
        }
    }
}
