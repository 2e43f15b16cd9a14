//! What the engine commands share: opening the store, building the services' configuration
//! from `weir.toml`, and turning SIGINT/SIGTERM into a cancellation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use weir_model::clock::{Clock, SystemClock};
use weir_notify::{MessageTemplate, Notifier, NotifyConfig, Smtp};
use weir_scheduler::{Scheduler, SchedulerConfig};
use weir_store::Store;
use weir_worker::WorkerConfig;

use crate::config::{Config, NotifierConfig, SmtpTls};

/// Opens the metadata database of `config`, creating and migrating it as needed: for the
/// services, `weir db migrate` and `weir users create`.
pub(crate) async fn create_store(config: &Config) -> Result<Store> {
    Store::connect(&config.database_url).await.with_context(|| {
        format!(
            "opening the metadata database {}",
            weir_store::redact(&config.database_url)
        )
    })
}

/// Opens the metadata database of `config`, which must exist (with weir's schema): a command
/// run from the wrong folder, or with the wrong `--config`, must not create an empty database
/// that no scheduler reads. Pending migrations are applied.
pub(crate) async fn open_store(config: &Config) -> Result<Store> {
    let url = &config.database_url;
    let missing = |place: String| {
        anyhow::anyhow!(
            "no weir metadata database {place} (database_url = {}{}).\n\
             Run weir where its configuration is (or pass --config PATH/weir.toml); to create a new \
             one, start weir (`weir standalone`) or run `weir db migrate`",
            weir_store::redact(url),
            config.origin_note()
        )
    };
    if let Some(file) = weir_store::sqlite_file(url)
        && !file.exists()
    {
        let shown = std::path::absolute(&file).unwrap_or(file);
        return Err(missing(format!("at {}", shown.display())));
    }
    let store = Store::connect_without_migrating(url)
        .await
        .with_context(|| format!("opening the metadata database {}", weir_store::redact(url)))?;
    if store.applied_migrations().await?.is_none() {
        store.close().await;
        return Err(missing(format!("in {}", weir_store::redact(url))));
    }
    store.migrate().await.with_context(|| {
        format!(
            "migrating the metadata database {}",
            weir_store::redact(url)
        )
    })?;
    Ok(store)
}

pub(crate) fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The duration `text` of the configuration's `key`; an error names where it was set.
fn duration(config: &Config, text: &str, key: &str) -> Result<Duration> {
    weir_model::duration::parse_duration(text)
        .map(|d| d.0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.place_of(key)))
}

/// A `[retention]` age: a duration, or `forever` (`None`: nothing is deleted).
fn retention_age(config: &Config, text: &str, key: &str) -> Result<Option<Duration>> {
    match text {
        "forever" => Ok(None),
        text => duration(config, text, key).map(Some),
    }
}

/// `scheduler.leader_lease`, between one second (renewals every fifth of it must fit in a
/// database's round trips) and ten minutes (a standby waits that long for a cut-off leader).
fn leader_lease(config: &Config) -> Result<Duration> {
    const KEY: &str = "scheduler.leader_lease";
    let lease = duration(config, &config.scheduler.leader_lease, KEY)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&lease) {
        anyhow::bail!(
            "{}: `{}` is outside 1s..10m",
            config.place_of(KEY),
            config.scheduler.leader_lease
        );
    }
    Ok(lease)
}

/// The environment variables templates may read (`template_env` in the configuration).
fn template_env(config: &Config) -> BTreeMap<String, String> {
    config
        .template_env
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect()
}

pub(crate) fn scheduler_config(config: &Config) -> Result<SchedulerConfig> {
    Ok(SchedulerConfig {
        dags_folder: config.dags_folder.clone(),
        heartbeat_timeout: duration(
            config,
            &config.scheduler.heartbeat_timeout,
            "scheduler.heartbeat_timeout",
        )?,
        leader_lease: leader_lease(config)?,
        pools: config.pools.clone(),
        known: config.known(),
        template_env: template_env(config),
        // Also the longest a run created by another process waits to be noticed with SQLite.
        scan_interval: Duration::from_secs(1),
        watch_folder: config.scheduler.watch_dags,
        keep_runs: retention_age(config, &config.retention.keep_runs, "retention.keep_runs")?,
        notify: notify_config(config),
        stores: weir_storage::Stores::new(config.store_conns()),
        lineage: config
            .openlineage
            .url
            .clone()
            .map(|url| weir_notify::LineageEndpoint {
                url,
                api_key: config.openlineage.api_key.clone(),
            }),
    })
}

/// Notifiers, the relay and the UI's address, as the scheduler's dispatcher wants them.
fn notify_config(config: &Config) -> NotifyConfig {
    let notifiers = config
        .notifiers
        .iter()
        .map(|(name, n)| {
            let (subject, body) = n.message();
            let message = MessageTemplate {
                subject: subject.cloned(),
                body: body.cloned(),
            };
            let notifier = match n {
                NotifierConfig::Email { to, .. } => Notifier::Email {
                    to: to.clone(),
                    message,
                },
                NotifierConfig::Webhook { url, .. } => Notifier::Webhook {
                    url: url.clone(),
                    message,
                },
            };
            (name.clone(), notifier)
        })
        .collect();
    let smtp = config.smtp.as_ref().map(|s| Smtp {
        host: s.host.clone(),
        port: s.port,
        tls: match s.tls {
            SmtpTls::Starttls => weir_notify::SmtpTls::Starttls,
            SmtpTls::Tls => weir_notify::SmtpTls::Tls,
            SmtpTls::None => weir_notify::SmtpTls::None,
        },
        from: s.from.clone(),
        username: s.username.clone(),
        password: s.password.clone(),
        ca_file: s.ca_file.clone(),
    });
    NotifyConfig {
        notifiers,
        smtp,
        base_url: base_url(config),
    }
}

/// How users reach the web UI: `[web] base_url`, default `http://<bind>`; no trailing `/`.
pub(crate) fn base_url(config: &Config) -> String {
    let url = config
        .web
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.web.bind));
    url.trim_end_matches('/').to_owned()
}

/// The web server's settings.
pub(crate) fn web_config(config: &Config, no_auth: bool) -> Result<weir_web::WebConfig> {
    let bind = config.web.bind.parse().with_context(|| {
        format!(
            "[web] bind = \"{}\" is not an address like 127.0.0.1:8080",
            config.web.bind
        )
    })?;
    Ok(weir_web::WebConfig {
        bind,
        base_url: base_url(config),
        no_auth,
    })
}

pub(crate) fn worker_config(
    config: &Config,
    queues: &[String],
    concurrency: Option<u32>,
) -> Result<WorkerConfig> {
    Ok(WorkerConfig {
        queues: if queues.is_empty() {
            config.worker.queues.clone()
        } else {
            queues.to_vec()
        },
        concurrency: concurrency.unwrap_or(config.worker.concurrency).max(1),
        heartbeat_timeout: duration(
            config,
            &config.scheduler.heartbeat_timeout,
            "scheduler.heartbeat_timeout",
        )?,
        shutdown_grace: Duration::from_secs(30),
        template_env: template_env(config),
        // With Postgres, NOTIFY wakes workers at once; this bounds the wait without it (SQLite
        // across processes, a lost notification).
        poll_interval: Duration::from_millis(500),
        connections: config.connection_urls(),
        stores: config.store_conns(),
        secrets: config.secrets(),
        pass_env: config.worker.pass_env.clone(),
        python: config.python.setup(),
        lineage_namespace: config
            .openlineage
            .url
            .as_ref()
            .map(|_| config.openlineage.namespace.clone()),
        keep_rejects: retention_age(
            config,
            &config.retention.keep_rejects,
            "retention.keep_rejects",
        )?,
    })
}

/// Reads the dags folder into the store when the folder is here (a CLI next to the DAGs);
/// with a remote database and no local folder, the scheduler's copy is used as is.
pub(crate) async fn sync_dags(store: &Store, config: &Config) -> Result<()> {
    if !config.dags_folder.is_dir() {
        return Ok(());
    }
    let mut scheduler = Scheduler::new(store.clone(), scheduler_config(config)?, clock());
    scheduler
        .sync_folder_once()
        .await
        .context("reading the dags folder")?;
    Ok(())
}

/// A token cancelled at the first SIGINT (Ctrl-C) or SIGTERM.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_for_a_duration_or_forever() {
        let config = Config::default();
        let age = |text| retention_age(&config, text, "retention.keep_runs");
        assert_eq!(
            age("30d").expect("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(age("forever").expect("forever"), None);
        let e = age("100y").expect_err("100y");
        assert!(
            e.to_string()
                .starts_with("weir.toml: retention.keep_runs: `100y`"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_duration_names_the_variable_that_set_it() {
        let env = BTreeMap::from([
            ("WEIR_RETENTION_KEEP_RUNS".to_owned(), "100y".to_owned()),
            ("WEIR_SCHEDULER_LEADER_LEASE".to_owned(), "1h".to_owned()),
        ]);
        let file = std::path::Path::new("/srv/weir/weir.toml");
        let mut config =
            Config::parse("[retention]\nkeep_rejects = \"soon\"\n", file, &env).expect("parse");
        config.origin = Some(file.to_path_buf());
        let e = scheduler_config(&config).expect_err("a lease of an hour");
        assert_eq!(
            e.to_string(),
            "WEIR_SCHEDULER_LEADER_LEASE (scheduler.leader_lease): `1h` is outside 1s..10m"
        );
        config.scheduler.leader_lease = "15s".to_owned();
        let e = scheduler_config(&config).expect_err("100 years");
        assert!(
            e.to_string()
                .starts_with("WEIR_RETENTION_KEEP_RUNS (retention.keep_runs): `100y`"),
            "{e}"
        );
        let e = worker_config(&config, &[], None).expect_err("soon");
        assert!(
            e.to_string()
                .starts_with("/srv/weir/weir.toml: retention.keep_rejects: `soon`"),
            "{e}"
        );
    }
}
