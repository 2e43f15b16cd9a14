//! `weir standalone`, `weir scheduler`, `weir worker`, `weir db migrate`.

use anyhow::{Context, Result};

use super::EXIT_OK;
use crate::config::Config;
use crate::engine::{
    clock, create_store, scheduler_config, shutdown_on_signal, web_config, worker_config,
};

/// Scheduler, worker and web server in one process over one store (SQLite by default),
/// until Ctrl-C.
pub(crate) async fn standalone(config: &Config, no_auth: bool) -> Result<u8> {
    let store = create_store(config).await?;
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
    // The web server reads through a pool of its own: viewers never take the engine's
    // database connections.
    let web_store = store.with_own_pool().await?;
    let (listener, state) = web_server(&web_store, config, no_auth).await?;
    if let Some(password) = weir_web::auth::ensure_first_admin(&store, clock().now()).await? {
        println!(
            "created the first user: `{}` (admin), password {password}\n  (shown once: keep it; `weir users create` adds users, `weir users delete` removes them)",
            weir_web::auth::FIRST_ADMIN
        );
    }
    println!(
        "scheduler, worker ({} slots, queues {}) and web UI at http://{} running. Ctrl-C stops (running tasks get 30s to finish).",
        config.worker.concurrency,
        config.worker.queues.join(","),
        listener.local_addr()?
    );
    let shutdown = shutdown_on_signal();
    // On Postgres the scheduler has its own pool too: a scheduler taking the lead from this one
    // (cut off from the database) ends the old leader's sessions, and must not end the worker's.
    let scheduler_store = match store.backend() {
        weir_store::Backend::Postgres => store.with_own_pool().await?,
        weir_store::Backend::Sqlite => store.clone(),
    };
    let scheduler = tokio::spawn(weir_scheduler::run(
        scheduler_store,
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
    let web = tokio::spawn(weir_web::serve(listener, state, shutdown.clone()));
    // The parts live and die together: one that stops on its own (an error, a panic) stops
    // the others and the process exits non-zero, so a supervisor restarts it; never a
    // process that looks alive with a dead scheduler.
    type Part = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;
    let parts: [(&str, Part); 3] = [
        ("scheduler", Box::pin(flatten(scheduler))),
        ("worker", Box::pin(flatten(worker))),
        ("web server", Box::pin(flatten(web))),
    ];
    let (names, futures): (Vec<&str>, Vec<_>) = parts.into_iter().unzip();
    let (first, index, rest) = futures_util::future::select_all(futures).await;
    let stopped_by_signal = shutdown.is_cancelled();
    shutdown.cancel();
    let mut failure = first.err().map(|e| e.context(names[index]));
    if failure.is_none() && !stopped_by_signal {
        failure = Some(anyhow::anyhow!("the {} stopped on its own", names[index]));
    }
    for result in futures_util::future::join_all(rest).await {
        if let Err(e) = result {
            tracing::error!(error = %e, "while stopping");
        }
    }
    store.close().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

/// A spawned part's outcome as one result: its error, or its panic as an error.
async fn flatten<E>(handle: tokio::task::JoinHandle<Result<(), E>>) -> anyhow::Result<()>
where
    E: Into<anyhow::Error>,
{
    match handle.await {
        Ok(result) => result.map_err(Into::into),
        Err(e) if e.is_panic() => Err(anyhow::anyhow!("panicked: {e}")),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Binds the web server's address and builds its state.
async fn web_server(
    store: &weir_store::Store,
    config: &Config,
    no_auth: bool,
) -> Result<(tokio::net::TcpListener, weir_web::AppState)> {
    let web = web_config(config, no_auth)?;
    let listener = weir_web::bind(&web)
        .await
        .with_context(|| format!("cannot listen on {} ([web] bind, WEIR_WEB_BIND)", web.bind))?;
    let state = weir_web::AppState::new(store.clone(), web, clock())?;
    Ok((listener, state))
}

/// The web server alone (any number of them, against the same database).
pub(crate) async fn web(config: &Config, no_auth: bool) -> Result<u8> {
    let store = create_store(config).await?;
    let (listener, state) = web_server(&store, config, no_auth).await?;
    if !no_auth && store.users().await?.is_empty() {
        eprintln!(
            "weir web: the database has no users yet, so nobody can sign in. Create the first admin with\n  \
             weir users create NAME --role admin\n(it prints a password; `weir standalone` creates one by itself)"
        );
    }
    eprintln!(
        "weir web: http://{}, metadata in {}{}",
        listener.local_addr()?,
        store.display_url(),
        if no_auth {
            " (no auth: everyone is an admin)"
        } else {
            ""
        }
    );
    weir_web::serve(listener, state, shutdown_on_signal()).await?;
    store.close().await;
    Ok(EXIT_OK)
}

/// The scheduler alone (one is active per database; others stand by).
pub(crate) async fn scheduler(
    config: &Config,
    metrics_bind: Option<std::net::SocketAddr>,
) -> Result<u8> {
    let store = create_store(config).await?;
    eprintln!(
        "weir scheduler: dags from {}, metadata in {}",
        config.dags_folder.display(),
        store.display_url()
    );
    let shutdown = shutdown_on_signal();
    let metrics = metrics_server(&store, config, metrics_bind, &shutdown).await?;
    weir_scheduler::run(store.clone(), scheduler_config(config)?, clock(), shutdown).await?;
    if let Some(m) = metrics {
        m.await.context("metrics task")?.context("metrics server")?;
    }
    store.close().await;
    Ok(EXIT_OK)
}

/// A worker alone.
pub(crate) async fn worker(
    config: &Config,
    queues: &[String],
    concurrency: Option<u32>,
    metrics_bind: Option<std::net::SocketAddr>,
) -> Result<u8> {
    let store = create_store(config).await?;
    let cfg = worker_config(config, queues, concurrency)?;
    eprintln!(
        "weir worker: queues {}, {} slots, metadata in {}",
        cfg.queues.join(","),
        cfg.concurrency,
        store.display_url()
    );
    let shutdown = shutdown_on_signal();
    let metrics = metrics_server(&store, config, metrics_bind, &shutdown).await?;
    weir_worker::run(store.clone(), cfg, clock(), shutdown).await?;
    if let Some(m) = metrics {
        m.await.context("metrics task")?.context("metrics server")?;
    }
    store.close().await;
    Ok(EXIT_OK)
}

/// With `--metrics-bind`, serves `/metrics` and `/health` of this process until `shutdown`.
async fn metrics_server(
    store: &weir_store::Store,
    config: &Config,
    bind: Option<std::net::SocketAddr>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let Some(bind) = bind else {
        return Ok(None);
    };
    let web = weir_web::WebConfig {
        bind,
        base_url: crate::engine::base_url(config),
        no_auth: false,
    };
    let listener = weir_web::bind(&web)
        .await
        .with_context(|| format!("cannot listen on {bind} (--metrics-bind)"))?;
    eprintln!("metrics at http://{}/metrics", listener.local_addr()?);
    let state = weir_web::AppState::new(store.clone(), web, clock())?;
    Ok(Some(tokio::spawn(weir_web::serve_router(
        listener,
        weir_web::ops_router(state),
        shutdown.clone(),
    ))))
}

/// `weir db cleanup --older-than D`: deletes finished runs that ended more than `D` ago, with
/// their task instances and logs, in small batches.
pub(crate) async fn cleanup(config: &Config, older_than: &str) -> Result<u8> {
    let age = weir_model::duration::parse_duration(older_than)
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let store = create_store(config).await?;
    let cutoff = weir_model::duration::earlier(clock().now(), age.0);
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
    let url = &config.database_url;
    let created_file = weir_store::sqlite_file(url).is_some_and(|f| !f.exists());
    let before = if created_file {
        None
    } else {
        let store = weir_store::Store::connect_without_migrating(url).await?;
        let before = store.applied_migrations().await?;
        store.close().await;
        before
    };
    let store = create_store(config).await?;
    let after = store.applied_migrations().await?.unwrap_or_default();
    match before {
        None => println!(
            "created the weir schema in {} ({after} migrations){}",
            store.display_url(),
            config.origin_note()
        ),
        Some(n) if n < after => println!(
            "metadata database {}: applied {} migration(s), now up to date",
            store.display_url(),
            after - n
        ),
        Some(_) => println!("metadata database {} is up to date", store.display_url()),
    }
    store.close().await;
    Ok(EXIT_OK)
}
