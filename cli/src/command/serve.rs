//! `weir standalone`, `weir scheduler`, `weir worker`, `weir db migrate`.

use anyhow::{Context, Result};

use super::EXIT_OK;
use crate::config::Config;
use crate::engine::{clock, open_store, scheduler_config, shutdown_on_signal, worker_config};

/// Scheduler and worker in one process over one store (SQLite by default), until Ctrl-C.
pub(crate) async fn standalone(config: &Config) -> Result<u8> {
    let store = open_store(config).await?;
    let dags = crate::engine::sync_dags(&store, config).await;
    dags.context("reading the dags folder")?;
    let dag_count = store.list_dags().await?.len();
    let errors = store.import_errors().await?;
    println!(
        "weir standalone: {} DAG(s) from {}, metadata in {}",
        dag_count,
        config.dags_folder.display(),
        store.display_url()
    );
    for e in &errors {
        println!("import error: {}", e.message);
    }
    println!(
        "scheduler and worker ({} slots, queues {}) running; the web UI is not built yet. Ctrl-C stops (running tasks get 30s to finish).",
        config.worker.concurrency,
        config.worker.queues.join(",")
    );
    let shutdown = shutdown_on_signal();
    let scheduler = tokio::spawn(weir_scheduler::run(
        store.clone(),
        scheduler_config(config)?,
        clock(),
        shutdown.clone(),
    ));
    let worker = tokio::spawn(weir_worker::run(
        store.clone(),
        worker_config(config, &[], None)?,
        clock(),
        shutdown.clone(),
    ));
    let (s, w) = tokio::join!(scheduler, worker);
    shutdown.cancel();
    s.context("scheduler task")?.context("scheduler")?;
    w.context("worker task")?.context("worker")?;
    store.close().await;
    Ok(EXIT_OK)
}

/// The scheduler alone (one is active per database; others stand by).
pub(crate) async fn scheduler(config: &Config) -> Result<u8> {
    let store = open_store(config).await?;
    eprintln!(
        "weir scheduler: dags from {}, metadata in {}",
        config.dags_folder.display(),
        store.display_url()
    );
    weir_scheduler::run(
        store.clone(),
        scheduler_config(config)?,
        clock(),
        shutdown_on_signal(),
    )
    .await?;
    store.close().await;
    Ok(EXIT_OK)
}

/// A worker alone.
pub(crate) async fn worker(
    config: &Config,
    queues: &[String],
    concurrency: Option<u32>,
) -> Result<u8> {
    let store = open_store(config).await?;
    let cfg = worker_config(config, queues, concurrency)?;
    eprintln!(
        "weir worker: queues {}, {} slots, metadata in {}",
        cfg.queues.join(","),
        cfg.concurrency,
        store.display_url()
    );
    weir_worker::run(store.clone(), cfg, clock(), shutdown_on_signal()).await?;
    store.close().await;
    Ok(EXIT_OK)
}

/// `weir db cleanup --older-than D`: deletes finished runs that ended more than `D` ago, with
/// their task instances and logs, in small batches.
pub(crate) async fn cleanup(config: &Config, older_than: &str) -> Result<u8> {
    let age = weir_model::duration::parse_duration(older_than)
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let store = open_store(config).await?;
    let cutoff = clock().now() - chrono::Duration::from_std(age.0).unwrap_or(chrono::Duration::MAX);
    let deleted = weir_scheduler::delete_old_runs(&store, cutoff).await?;
    println!(
        "deleted {deleted} run(s) that ended before {}",
        cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    store.close().await;
    Ok(EXIT_OK)
}

/// Applies the metadata migrations.
pub(crate) async fn migrate(config: &Config) -> Result<u8> {
    let store = open_store(config).await?;
    println!("metadata database {} is up to date", store.display_url());
    store.close().await;
    Ok(EXIT_OK)
}
