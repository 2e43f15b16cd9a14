//! Freshness of declared assets and runs' deadlines: whether each is late, and the notice told
//! once per late spell, written in the transaction that records the lateness.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{BeginWrite, with_pool};
use crate::notify::{Notice, NoticeEvent, Notification, insert_notifications};
use crate::{Result, RunRow, Store};

/// A declared asset's freshness as last checked.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FreshnessRow {
    /// The asset.
    pub asset_key: String,
    /// The DAG declaring it.
    pub dag_id: String,
    /// Its `freshness`, in seconds.
    pub freshness_s: i64,
    /// Since when it is stale (`None`: fresh).
    pub stale_since: Option<DateTime<Utc>>,
    /// When it was last checked.
    pub checked_at: DateTime<Utc>,
}

/// What [`Store::check_freshness`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Updated within its freshness.
    Fresh,
    /// Late since then; `told`: this check wrote the notices (the first of this late spell).
    Stale {
        /// Since when.
        since: DateTime<Utc>,
        /// Whether this check told the notifiers.
        told: bool,
    },
}

impl Store {
    /// The latest update of an asset: when, and by which run.
    ///
    /// # Errors
    /// Database failures.
    pub async fn last_update(&self, key: &str) -> Result<Option<(DateTime<Utc>, Option<String>)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, (DateTime<Utc>, Option<String>)>(
                "SELECT created_at, run_id FROM weir_asset_events WHERE asset_key = $1 AND access = 'write'
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Checks asset `key`, declared by `dag_id` with `freshness`, at `now`: it is stale once
    /// `freshness` has passed since its last update (or since weir first checked it, if it was
    /// never updated). The first check of a late spell writes a notice for each of `notifiers`
    /// in the same transaction; later checks of the same spell write nothing.
    ///
    /// # Errors
    /// Database failures.
    pub async fn check_freshness(
        &self,
        key: &str,
        dag_id: &str,
        freshness: chrono::Duration,
        notifiers: &[String],
        now: DateTime<Utc>,
    ) -> Result<Freshness> {
        let last = self.last_update(key).await?;
        let spell = last
            .as_ref()
            .map_or_else(|| "never".to_owned(), |(t, _)| t.to_rfc3339());
        let found = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let (declared_at, told_for): (DateTime<Utc>, Option<String>) = sqlx::query_as(
                "INSERT INTO weir_asset_freshness (asset_key, dag_id, freshness_s, declared_at, checked_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (asset_key) DO UPDATE SET dag_id = $2, freshness_s = $3, checked_at = $4
                 RETURNING declared_at, told_for",
            )
            .bind(key)
            .bind(dag_id)
            .bind(freshness.num_seconds())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let due = last.as_ref().map_or(declared_at, |(t, _)| *t) + freshness;
            let stale = now > due;
            sqlx::query("UPDATE weir_asset_freshness SET stale_since = $2 WHERE asset_key = $1")
                .bind(key)
                .bind(stale.then_some(due))
                .execute(&mut *tx)
                .await?;
            let tell = stale && told_for.as_deref() != Some(spell.as_str());
            if tell {
                sqlx::query("UPDATE weir_asset_freshness SET told_for = $2 WHERE asset_key = $1")
                    .bind(key)
                    .bind(&spell)
                    .execute(&mut *tx)
                    .await?;
                let ago = match &last {
                    Some((t, _)) => format!(
                        "last updated at {}",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    None => "never updated".to_owned(),
                };
                let notice = Notice {
                    event: NoticeEvent::AssetStale,
                    dag_id: dag_id.to_owned(),
                    run_id: last
                        .as_ref()
                        .and_then(|(_, r)| r.clone())
                        .unwrap_or_default(),
                    logical_date: due,
                    ds: due.format("%Y-%m-%d").to_string(),
                    task_id: None,
                    map_index: None,
                    try_number: None,
                    max_tries: None,
                    error: Some(format!(
                        "asset {key} is stale: {ago}, and its freshness is {}",
                        weir_duration(freshness)
                    )),
                    at: now,
                    asset: Some(key.to_owned()),
                    late_since: Some(due),
                };
                let notes: Vec<Notification> = notice.to(notifiers);
                insert_notifications!(tx, notes, now);
            }
            tx.commit().await?;
            if stale {
                Freshness::Stale {
                    since: due,
                    told: tell,
                }
            } else {
                Freshness::Fresh
            }
        });
        Ok(found)
    }

    /// Forgets the freshness of assets no DAG declares any more.
    ///
    /// # Errors
    /// Database failures.
    pub async fn forget_freshness_except(&self, declared: &[String]) -> Result<()> {
        let rows: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT asset_key FROM weir_asset_freshness")
                .fetch_all(pool)
                .await?
        });
        for key in rows.iter().filter(|k| !declared.contains(k)) {
            with_pool!(self, |pool| {
                sqlx::query("DELETE FROM weir_asset_freshness WHERE asset_key = $1")
                    .bind(key)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    /// The freshness of every declared asset, by key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn freshness(&self) -> Result<Vec<FreshnessRow>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, FreshnessRow>(
                "SELECT asset_key, dag_id, freshness_s, stale_since, checked_at FROM weir_asset_freshness ORDER BY asset_key",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records that `run` missed its deadline (`due`), with a notice for each of `notifiers`
    /// in the same transaction; `false` when it was recorded before (told once per run).
    ///
    /// # Errors
    /// Database failures.
    pub async fn mark_deadline_missed(
        &self,
        run: &RunRow,
        due: DateTime<Utc>,
        describe: &str,
        notifiers: &[String],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let marked = sqlx::query(
                "UPDATE weir_runs SET deadline_missed_at = $2 WHERE run_id = $1 AND deadline_missed_at IS NULL",
            )
            .bind(&run.run_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if marked {
                let mut notice = Notice::for_run(
                    run,
                    NoticeEvent::DeadlineMissed,
                    Some(describe.to_owned()),
                    now,
                );
                notice.late_since = Some(due);
                let notes = notice.to(notifiers);
                insert_notifications!(tx, notes, now);
            }
            tx.commit().await?;
            marked
        }))
    }

    /// Runs that missed their deadline, by DAG (for `/metrics`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn deadline_misses(&self) -> Result<Vec<(String, i64)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT dag_id, COUNT(*) FROM weir_runs WHERE deadline_missed_at IS NOT NULL GROUP BY dag_id ORDER BY dag_id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// When a run was found past its deadline, if it was.
    ///
    /// # Errors
    /// Database failures.
    pub async fn deadline_missed_at(&self, run_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT deadline_missed_at FROM weir_runs WHERE run_id = $1",
            )
            .bind(run_id)
            .fetch_optional(pool)
            .await?
            .flatten()
        }))
    }
}

/// `26h`, `90m`, `45s`: a span as DAG files write it (largest whole unit).
fn weir_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= len && s % len == 0 {
            return format!("{}{unit}", s / len);
        }
    }
    format!("{s}s")
}
