//! `weir assets`: the assets weir has seen, their events, and updates recorded from outside.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::args::TouchArgs;
use crate::command::EXIT_OK;
use crate::config::Config;
use crate::engine::open_store;

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A time as `--interval-start` takes it: a date (midnight UTC) or RFC 3339.
pub(crate) fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    weir_model::date::parse_date(text)
        .map(|d| d.resolve(chrono_tz::Tz::UTC))
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// The event a `touch` records.
pub(crate) fn touch_event(
    args: &TouchArgs,
    source: &'static str,
) -> Result<weir_store::ExternalEvent> {
    let interval = match (&args.interval_start, &args.interval_end) {
        (Some(s), Some(e)) => Some((
            parse_time("--interval-start", s)?,
            parse_time("--interval-end", e)?,
        )),
        _ => None,
    };
    let details = args
        .details
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("--details is not JSON")?;
    Ok(weir_store::ExternalEvent {
        key: args.asset.clone(),
        source,
        interval,
        counts: weir_store::AssetCounts {
            rows: args.rows,
            ..Default::default()
        },
        details,
    })
}

/// Records an update of an asset made outside weir.
pub(crate) async fn touch(config: &Config, args: &TouchArgs) -> Result<u8> {
    let store = open_store(config).await?;
    crate::engine::sync_dags(&store, config).await?;
    let actor = crate::audit::actor();
    let id = weir_ops::operator::touch_asset(
        &store,
        weir_ops::operator::Actor(&actor),
        touch_event(args, "cli")?,
        crate::engine::clock().now(),
    )
    .await?;
    println!("recorded an update of {} (event {id})", args.asset);
    store.close().await;
    Ok(EXIT_OK)
}

/// Lists the assets with their latest update.
pub(crate) async fn list(config: &Config, json: bool) -> Result<u8> {
    let store = open_store(config).await?;
    let assets = store.assets().await?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&assets)?)?;
        return Ok(EXIT_OK);
    }
    let width = assets
        .iter()
        .map(|a| a.asset_key.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(out, "{:width$}  {:20}  UPDATES", "ASSET", "LAST UPDATE")?;
    for a in &assets {
        let last = a.last_update.map_or_else(|| "never".to_owned(), rfc);
        writeln!(out, "{:width$}  {last:20}  {}", a.asset_key, a.updates)?;
    }
    Ok(EXIT_OK)
}

/// Lists events, newest first.
pub(crate) async fn events(
    config: &Config,
    asset: Option<&str>,
    limit: i64,
    json: bool,
) -> Result<u8> {
    let store = open_store(config).await?;
    let rows = store.asset_events(asset, limit.clamp(1, 10_000)).await?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(weir_store::AssetEventRow::to_json)
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(EXIT_OK);
    }
    for e in &rows {
        let by = match (&e.run_id, &e.task_id) {
            (Some(run), Some(task)) => format!("{run} {task} try {}", e.try_number.unwrap_or(0)),
            _ => e.source.clone(),
        };
        let rows = e
            .rows_written
            .map(|n| format!(" rows={n}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}  {:5}  {}  {by}{rows}",
            rfc(e.created_at),
            e.access,
            e.asset_key
        )?;
    }
    Ok(EXIT_OK)
}
