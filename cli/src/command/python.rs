//! `weir python env DAG TASK`: a `python` or `dbt` task's environment on this machine, built
//! as a worker would build it, for debugging the task by hand.

use anyhow::{Result, bail};
use tokio_util::sync::CancellationToken;
use weir_scheduler::folder::{find_dag, load_dag_files};
use weir_worker::conn::{Connections, Masker};
use weir_worker::log::LogSink;
use weir_worker::step::python::{env, environment_of};

use super::EXIT_OK;
use crate::config::Config;

/// Prints the environment's folder on standard output (building it first when missing); what
/// the build prints goes to standard error.
pub(crate) async fn env(config: &Config, dag_id: &str, task_id: &str) -> Result<u8> {
    let files = load_dag_files(
        std::slice::from_ref(&config.dags_folder),
        Some(&config.known()),
    )?;
    let (file, dag) = find_dag(&files, dag_id)?;
    let task = super::task_test::task_of(dag, task_id)?;
    let urls = config.connection_urls();
    let conns = Connections::with_stores(urls.clone(), config.store_conns());
    let Some(spec) = environment_of(&task.step, &file.files, &conns) else {
        bail!(
            "task `{task_id}` is a `{}` task: only `python` and `dbt` tasks have an environment",
            task.step.kind()
        );
    };
    let spec = spec.map_err(|e| anyhow::anyhow!("task `{task_id}`: {e}"))?;
    let (sink, mut rx) = LogSink::channel(Masker::for_config(&config.secrets(), &urls));
    let printer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            eprintln!("{}", line.text);
        }
    });
    let built = env::ensure(
        &config.python.setup(),
        &spec,
        &sink,
        &CancellationToken::new(),
    )
    .await;
    drop(sink);
    let _ = printer.await;
    let built = built.map_err(|e| anyhow::anyhow!("task `{task_id}`: {e}"))?;
    if built.created_in.is_none() {
        eprintln!("environment ready (cached): {}", spec.describe());
    }
    eprintln!(
        "activate it with: source {}/bin/activate",
        built.dir.display()
    );
    println!("{}", built.dir.display());
    Ok(EXIT_OK)
}
