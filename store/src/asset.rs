//! Assets: the tables and locations steps write and read. A try's events are recorded in the
//! transaction that records its success (`Store::complete_tasks`); events from outside come
//! through [`Store::record_external_event`]. Each write is queued, in the same transaction,
//! for every DAG scheduled on that asset, and taken off the queue in the transaction that
//! creates the DAG's run (`Store::create_run_consuming`): an update is never lost between
//! the two, nor used twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{BeginWrite, with_pool};
use crate::{Result, Store};

/// Whether a step wrote or read the asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// An update: it triggers the DAGs scheduled on the asset.
    Write,
    /// A read, for lineage.
    Read,
}

impl Access {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// What a step did to one asset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AssetCounts {
    /// Rows written (loaded, exported, affected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Rows inserted (a merge or upsert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<i64>,
    /// Rows updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    /// Bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Files written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
}

/// One asset event of a try, recorded with its success.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetRecord {
    /// The asset's key (`connection.schema.table` or a location URL).
    pub key: String,
    /// Write or read.
    pub access: Access,
    /// Its counts.
    pub counts: AssetCounts,
    /// More: the concrete objects of a location pattern, a migration's versions (a JSON object).
    pub details: Option<serde_json::Value>,
}

/// An event recorded from outside weir (`POST /api/v1/assets/events`, `weir assets touch`).
#[derive(Debug, Clone, Default)]
pub struct ExternalEvent {
    /// The asset's key.
    pub key: String,
    /// `api` or `cli`.
    pub source: &'static str,
    /// The data interval it covers, if the caller says.
    pub interval: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Counts, if the caller says.
    pub counts: AssetCounts,
    /// Anything else the caller sends (a JSON object).
    pub details: Option<serde_json::Value>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AssetEventRow {
    /// Its id (increasing).
    pub id: i64,
    /// The asset.
    pub asset_key: String,
    /// `write` or `read`.
    pub access: String,
    /// `task`, `api` or `cli`.
    pub source: String,
    /// The DAG of the try (task events).
    pub dag_id: Option<String>,
    /// The run.
    pub run_id: Option<String>,
    /// The task.
    pub task_id: Option<String>,
    /// Its map index.
    pub map_index: Option<i32>,
    /// The try.
    pub try_number: Option<i32>,
    /// The data interval's start.
    pub interval_start: Option<DateTime<Utc>>,
    /// The data interval's end.
    pub interval_end: Option<DateTime<Utc>>,
    /// Rows written.
    pub rows_written: Option<i64>,
    /// Rows inserted.
    pub rows_inserted: Option<i64>,
    /// Rows updated.
    pub rows_updated: Option<i64>,
    /// Bytes.
    pub bytes: Option<i64>,
    /// Files.
    pub files: Option<i64>,
    /// More, as JSON text.
    pub details: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl AssetEventRow {
    /// The event as the template context and the API show it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            let details = self
                .details
                .as_deref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
            obj.insert("details".into(), details.unwrap_or(serde_json::Value::Null));
        }
        v
    }
}

pub(crate) const EVENT_COLUMNS: &str = "e.id, e.asset_key, e.access, e.source, e.dag_id, e.run_id, e.task_id, e.map_index, \
     e.try_number, e.interval_start, e.interval_end, e.rows_written, e.rows_inserted, e.rows_updated, e.bytes, e.files, \
     e.details, e.created_at";

/// Records the events of a try in the transaction `$conn` that records its success: each
/// event, its asset if new, and a queue row for every DAG scheduled on a written asset.
/// Evaluates to the number of queue rows written.
macro_rules! insert_try_events {
    ($conn:expr, $ti_id:expr, $try_number:expr, $records:expr, $now:expr) => {{
        let mut queued: u64 = 0;
        for r in $records {
            let r: &$crate::asset::AssetRecord = r;
            let details = r.details.as_ref().map(serde_json::to_string).transpose()?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO weir_asset_events (asset_key, access, source, dag_id, run_id, task_id, map_index, try_number,
                     interval_start, interval_end, rows_written, rows_inserted, rows_updated, bytes, files, details, created_at)
                 SELECT $1, $2, 'task', t.dag_id, t.run_id, t.task_id, t.map_index, $3, r.data_interval_start,
                     r.data_interval_end, $4, $5, $6, $7, $8, $9, $10
                 FROM weir_task_instances t JOIN weir_runs r ON r.run_id = t.run_id WHERE t.id = $11
                 RETURNING id",
            )
            .bind(&r.key)
            .bind(r.access.as_str())
            .bind($try_number)
            .bind(r.counts.rows)
            .bind(r.counts.inserted)
            .bind(r.counts.updated)
            .bind(r.counts.bytes)
            .bind(r.counts.files)
            .bind(&details)
            .bind($now)
            .bind($ti_id)
            .fetch_one(&mut *$conn)
            .await?;
            queued += $crate::asset::after_event!($conn, id, &r.key, r.access, $now);
        }
        queued
    }};
}
pub(crate) use insert_try_events;

/// After an event `$id` of `$key`: the asset's row if new, and for a write a queue row for
/// each DAG scheduled on it. Evaluates to the number of queue rows.
macro_rules! after_event {
    ($conn:expr, $id:expr, $key:expr, $access:expr, $now:expr) => {{
        sqlx::query("INSERT INTO weir_assets (asset_key, first_seen) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind($key)
            .bind($now)
            .execute(&mut *$conn)
            .await?;
        if $access == $crate::asset::Access::Write {
            sqlx::query(
                "INSERT INTO weir_asset_queue (dag_id, event_id, asset_key)
                 SELECT dag_id, $1, asset_key FROM weir_asset_subscriptions WHERE asset_key = $2",
            )
            .bind($id)
            .bind($key)
            .execute(&mut *$conn)
            .await?
            .rows_affected()
        } else {
            0
        }
    }};
}
pub(crate) use after_event;

impl Store {
    /// Records an update of an asset from outside weir, queued for the DAGs scheduled on it;
    /// wakes the scheduler when one is. Returns the event's id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_external_event(
        &self,
        e: &ExternalEvent,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let details = e.details.as_ref().map(serde_json::to_string).transpose()?;
        let (id, queued) = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO weir_asset_events (asset_key, access, source, interval_start, interval_end, rows_written,
                     rows_inserted, rows_updated, bytes, files, details, created_at)
                 VALUES ($1, 'write', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .bind(&e.key)
            .bind(e.source)
            .bind(e.interval.map(|i| i.0))
            .bind(e.interval.map(|i| i.1))
            .bind(e.counts.rows)
            .bind(e.counts.inserted)
            .bind(e.counts.updated)
            .bind(e.counts.bytes)
            .bind(e.counts.files)
            .bind(&details)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let queued = after_event!(tx, id, &e.key, Access::Write, now);
            tx.commit().await?;
            (id, queued)
        });
        if queued > 0 {
            self.wake_scheduler().await;
        }
        Ok(id)
    }

    /// The DAGs with asset updates waiting for a run.
    ///
    /// # Errors
    /// Database failures.
    pub async fn dags_with_queued_events(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT DISTINCT dag_id FROM weir_asset_queue ORDER BY dag_id")
                .fetch_all(pool)
                .await?
        }))
    }

    /// The updates waiting for `dag_id`'s next run from assets, oldest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn queued_events(&self, dag_id: &str) -> Result<Vec<AssetEventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM weir_asset_queue q JOIN weir_asset_events e ON e.id = q.event_id
             WHERE q.dag_id = $1 ORDER BY e.id"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AssetEventRow>(sqlx::AssertSqlSafe(sql))
                .bind(dag_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Drops updates from a DAG's queue (ones that can never make a run).
    ///
    /// # Errors
    /// Database failures.
    pub async fn drop_queued_events(&self, dag_id: &str, events: &[i64]) -> Result<()> {
        with_pool!(self, |pool| {
            for id in events {
                sqlx::query("DELETE FROM weir_asset_queue WHERE dag_id = $1 AND event_id = $2")
                    .bind(dag_id)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// The latest events of an asset (or of every asset with `None`), newest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn asset_events(&self, key: Option<&str>, limit: i64) -> Result<Vec<AssetEventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM weir_asset_events e WHERE ($1 IS NULL OR e.asset_key = $1)
             ORDER BY e.id DESC LIMIT $2"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AssetEventRow>(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The events a run's tries recorded, oldest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn run_asset_events(&self, run_id: &str) -> Result<Vec<AssetEventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM weir_asset_events e WHERE e.run_id = $1 ORDER BY e.id"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AssetEventRow>(sqlx::AssertSqlSafe(sql))
                .bind(run_id)
                .fetch_all(pool)
                .await?
        }))
    }
}

/// An asset with its latest update.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AssetSummary {
    /// Its key.
    pub asset_key: String,
    /// When weir first saw it.
    pub first_seen: DateTime<Utc>,
    /// Its latest update.
    pub last_update: Option<DateTime<Utc>>,
    /// How many updates are recorded.
    pub updates: i64,
}

impl Store {
    /// Every asset weir has seen, by key, with its latest update.
    ///
    /// # Errors
    /// Database failures.
    pub async fn assets(&self) -> Result<Vec<AssetSummary>> {
        const SQL: &str = "SELECT a.asset_key, a.first_seen,
                 (SELECT MAX(e.created_at) FROM weir_asset_events e WHERE e.asset_key = a.asset_key AND e.access = 'write') AS last_update,
                 (SELECT COUNT(*) FROM weir_asset_events e WHERE e.asset_key = a.asset_key AND e.access = 'write') AS updates
             FROM weir_assets a ORDER BY a.asset_key";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AssetSummary>(SQL)
                .fetch_all(pool)
                .await?
        }))
    }
}

impl Store {
    /// The logical dates in `[from, to]` at which `dag_id` materialized its interval: a run
    /// there succeeded, or (its run deleted since) the DAG recorded a write for that interval.
    ///
    /// # Errors
    /// Database failures.
    pub async fn materialized_starts(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<std::collections::BTreeSet<DateTime<Utc>>> {
        let rows: Vec<DateTime<Utc>> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT logical_date FROM weir_runs
                 WHERE dag_id = $1 AND state = 'success' AND logical_date >= $2 AND logical_date <= $3
                 UNION
                 SELECT e.interval_start FROM weir_asset_events e
                 WHERE e.dag_id = $1 AND e.access = 'write' AND e.interval_start >= $2 AND e.interval_start <= $3
                   AND NOT EXISTS (SELECT 1 FROM weir_runs r WHERE r.run_id = e.run_id)",
            )
            .bind(dag_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().collect())
    }
}

/// An interval of an asset written before an upstream asset it was built from was written
/// again for that interval.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StaleInterval {
    /// The interval's start.
    pub interval_start: DateTime<Utc>,
    /// Its end.
    pub interval_end: Option<DateTime<Utc>>,
    /// When this asset's interval was last written.
    pub written_at: DateTime<Utc>,
    /// The upstream asset (read by the run that wrote it).
    pub upstream: String,
    /// When the upstream asset's interval was written again.
    pub upstream_at: DateTime<Utc>,
}

/// Which edges [`Store::lineage`] returns.
#[derive(Debug, Clone, Copy)]
pub enum LineageOf<'a> {
    /// Every edge.
    All,
    /// One DAG's.
    Dag(&'a str),
    /// One asset's.
    Asset(&'a str),
}

/// One edge of the lineage graph: a DAG wrote (`write`), read (`read`) or runs on
/// (`trigger`) an asset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, sqlx::FromRow)]
pub struct LineageEdge {
    /// The DAG.
    pub dag_id: String,
    /// The asset.
    pub asset_key: String,
    /// `write`, `read` or `trigger`.
    pub access: String,
}

impl Store {
    /// Who wrote, read and runs on which asset (each edge once): every edge, or those of one
    /// DAG or one asset.
    ///
    /// # Errors
    /// Database failures.
    pub async fn lineage(&self, of: LineageOf<'_>) -> Result<Vec<LineageEdge>> {
        let (filter, name) = match of {
            LineageOf::All => ("", None),
            LineageOf::Dag(d) => ("dag_id = $1 AND ", Some(d)),
            LineageOf::Asset(a) => ("asset_key = $1 AND ", Some(a)),
        };
        let sql = format!(
            "SELECT DISTINCT dag_id, asset_key, access FROM weir_asset_events WHERE {filter}dag_id IS NOT NULL
             UNION
             SELECT dag_id, asset_key, 'trigger' FROM weir_asset_subscriptions WHERE {}
             ORDER BY 1, 2, 3",
            if filter.is_empty() { "TRUE" } else { filter.trim_end_matches(" AND ") }
        );
        Ok(with_pool!(self, |pool| {
            let q = sqlx::query_as::<_, LineageEdge>(sqlx::AssertSqlSafe(sql));
            match name {
                Some(n) => q.bind(n),
                None => q,
            }
            .fetch_all(pool)
            .await?
        }))
    }

    /// The intervals of asset `key` whose latest write came before an upstream asset (one the
    /// writing run read) was written again for the same interval, newest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn stale_intervals(&self, key: &str) -> Result<Vec<StaleInterval>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, StaleInterval>(
                "WITH latest AS (
                     SELECT e.interval_start, e.interval_end, e.run_id, e.created_at,
                            ROW_NUMBER() OVER (PARTITION BY e.interval_start ORDER BY e.id DESC) AS n
                     FROM weir_asset_events e
                     WHERE e.asset_key = $1 AND e.access = 'write' AND e.interval_start IS NOT NULL)
                 SELECT l.interval_start, l.interval_end, l.created_at AS written_at,
                        r.asset_key AS upstream, MAX(u.created_at) AS upstream_at
                 FROM latest l
                 JOIN weir_asset_events r ON r.run_id = l.run_id AND r.access = 'read'
                 JOIN weir_asset_events u ON u.asset_key = r.asset_key AND u.access = 'write'
                      AND u.interval_start = l.interval_start AND u.created_at > l.created_at
                 WHERE l.n = 1
                 GROUP BY l.interval_start, l.interval_end, l.created_at, r.asset_key
                 ORDER BY l.interval_start DESC, r.asset_key
                 LIMIT 200",
            )
            .bind(key)
            .fetch_all(pool)
            .await?
        }))
    }
}
