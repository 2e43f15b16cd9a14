//! The notification outbox: what to tell which notifier, written in the transaction of the
//! state change it tells about, and drained by a scheduler process (claim, send, mark).
//!
//! Delivery is at least once: a sender that dies between sending and marking leaves the claim
//! to expire, and the next claim sends again. A notice is never lost and never invented for a
//! change that rolled back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{BeginWrite, Db, with_pool};
use crate::{Result, RunRow, Store, TaskInstanceRow};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    /// A run ended failed (the DAG's `on_failure`).
    RunFailed,
    /// A run ended successful (the DAG's `on_success`).
    RunSucceeded,
    /// A task failed for good (the task's `on_failure`).
    TaskFailed,
    /// A task's try failed and another try will follow (the task's `on_retry`).
    TaskRetry,
    /// An asset declared with `freshness` was not updated in time.
    AssetStale,
    /// A run had not finished by its DAG's `deadline`.
    DeadlineMissed,
}

impl NoticeEvent {
    /// The event as stored and sent: `run_failed`, `run_succeeded`, `task_failed`, `task_retry`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::RunFailed => "run_failed",
            NoticeEvent::RunSucceeded => "run_succeeded",
            NoticeEvent::TaskFailed => "task_failed",
            NoticeEvent::TaskRetry => "task_retry",
            NoticeEvent::AssetStale => "asset_stale",
            NoticeEvent::DeadlineMissed => "deadline_missed",
        }
    }
}

/// The facts of one event, as stored (JSON) and handed to the notifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// What happened.
    pub event: NoticeEvent,
    /// DAG id.
    pub dag_id: String,
    /// Run id.
    pub run_id: String,
    /// The run's logical date.
    pub logical_date: DateTime<Utc>,
    /// The run's `ds` (`YYYY-MM-DD`, as templates see it).
    pub ds: String,
    /// Task events: the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Task events of a `foreach` instance: its index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_index: Option<i32>,
    /// Task events: the try that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub try_number: Option<i32>,
    /// Task events: how many tries the task has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tries: Option<i32>,
    /// The failure (a task's error; for a failed run, its failed tasks and their errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `asset_stale`: the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// `asset_stale`, `deadline_missed`: since when it is late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_since: Option<DateTime<Utc>>,
}

impl Notice {
    /// A run's event.
    #[must_use]
    pub fn for_run(
        run: &RunRow,
        event: NoticeEvent,
        error: Option<String>,
        at: DateTime<Utc>,
    ) -> Notice {
        Notice {
            event,
            dag_id: run.dag_id.clone(),
            run_id: run.run_id.clone(),
            logical_date: run.logical_date,
            ds: run.ds(),
            task_id: None,
            map_index: None,
            try_number: None,
            max_tries: None,
            error,
            at,
            asset: None,
            late_since: None,
        }
    }

    /// A try's event (`ti` as it was while the try ran).
    #[must_use]
    pub fn for_try(
        run: &RunRow,
        ti: &TaskInstanceRow,
        event: NoticeEvent,
        error: Option<String>,
        at: DateTime<Utc>,
    ) -> Notice {
        Notice {
            task_id: Some(ti.task_id.clone()),
            map_index: (ti.map_index >= 0).then_some(ti.map_index),
            // 0: the task failed before its first try (nothing to count).
            try_number: (ti.try_number > 0).then_some(ti.try_number),
            max_tries: Some(ti.max_tries),
            ..Notice::for_run(run, event, error, at)
        }
    }

    /// This notice for each of `notifiers`.
    #[must_use]
    pub fn to(&self, notifiers: &[String]) -> Vec<Notification> {
        notifiers
            .iter()
            .map(|n| Notification {
                notifier: n.clone(),
                notice: self.clone(),
            })
            .collect()
    }
}

/// A notice addressed to one notifier, on its way into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notifier's name in the configuration.
    pub notifier: String,
    /// What to tell.
    pub notice: Notice,
}

/// An outbox row claimed for sending.
#[derive(Debug, Clone)]
pub struct ClaimedNotification {
    /// Row id.
    pub id: i64,
    /// The notifier's name in the configuration.
    pub notifier: String,
    /// What to tell.
    pub notice: Notice,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// An outbox row as it stands (for the CLI, the UI and tests).
#[derive(Debug, Clone)]
pub struct NotificationRow {
    /// Row id.
    pub id: i64,
    /// The notifier's name.
    pub notifier: String,
    /// What it tells.
    pub notice: Notice,
    /// Attempts so far.
    pub attempts: i32,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
    /// Every attempt failed: no more are made.
    pub gave_up: bool,
    /// The last failed attempt's error.
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RawNotification {
    id: i64,
    notifier: String,
    payload: String,
    attempts: i32,
    sent_at: Option<DateTime<Utc>>,
    gave_up: bool,
    error: Option<String>,
}

impl TryFrom<RawNotification> for NotificationRow {
    type Error = crate::StoreError;
    fn try_from(r: RawNotification) -> Result<NotificationRow> {
        Ok(NotificationRow {
            id: r.id,
            notifier: r.notifier,
            notice: serde_json::from_str(&r.payload)?,
            attempts: r.attempts,
            sent_at: r.sent_at,
            gave_up: r.gave_up,
            error: r.error,
        })
    }
}

/// Rows per `INSERT`: 5 binds a row.
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// Writes `notifications` on `$conn` (inside the caller's transaction), due at `$now`.
macro_rules! insert_notifications {
    ($conn:expr, $notifications:expr, $now:expr) => {
        for chunk in $notifications.chunks($crate::notify::ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO weir_notifications (notifier, run_id, payload, created_at, next_attempt_at) ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for n in chunk {
                let n: &$crate::notify::Notification = n;
                rows.push((n, serde_json::to_string(&n.notice)?));
            }
            insert.push_values(&rows, |mut row, (n, payload)| {
                row.push_bind(n.notifier.as_str())
                    .push_bind(n.notice.run_id.as_str())
                    .push_bind(payload.as_str())
                    .push_bind($now)
                    .push_bind($now);
            });
            insert.build().execute(&mut *$conn).await?;
        }
    };
}
pub(crate) use insert_notifications;

impl Store {
    /// Claims up to `limit` due notifications for sending: each claimed row's next attempt
    /// moves to `now + lease` (so a sender that dies leaves it to the next claim) and its
    /// attempt count goes up. Concurrent senders never claim the same row.
    ///
    /// # Errors
    /// Database failures; a stored payload that does not parse.
    pub async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedNotification>> {
        let until = now + lease;
        let rows: Vec<RawNotification> =
            match &self.db {
                Db::Postgres(pool) => sqlx::query_as(
                    "UPDATE weir_notifications SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id IN (SELECT id FROM weir_notifications
                                  WHERE sent_at IS NULL AND NOT gave_up AND next_attempt_at <= $1
                                  ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id, notifier, payload, attempts, sent_at, gave_up, error",
                )
                .bind(now)
                .bind(until)
                .bind(limit)
                .fetch_all(pool)
                .await?,
                // One writer at a time: the select and the update cannot interleave with another claim.
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_write().await?;
                    let rows = sqlx::query_as(
                    "UPDATE weir_notifications SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id IN (SELECT id FROM weir_notifications
                                  WHERE sent_at IS NULL AND NOT gave_up AND next_attempt_at <= $1
                                  ORDER BY next_attempt_at, id LIMIT $3)
                     RETURNING id, notifier, payload, attempts, sent_at, gave_up, error",
                )
                .bind(now)
                .bind(until)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                    tx.commit().await?;
                    rows
                }
            };
        rows.into_iter()
            .map(|r| {
                let row = NotificationRow::try_from(r)?;
                Ok(ClaimedNotification {
                    id: row.id,
                    notifier: row.notifier,
                    notice: row.notice,
                    attempts: row.attempts,
                })
            })
            .collect()
    }

    /// Records a delivered notification.
    ///
    /// # Errors
    /// Database failures.
    pub async fn notification_sent(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE weir_notifications SET sent_at = $2, error = NULL WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a failed attempt: try again at `retry_at`, or give up when it is `None`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE weir_notifications SET error = $2,
                     next_attempt_at = COALESCE($3, next_attempt_at), gave_up = ($3 IS NULL)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(retry_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// When the next unsent notification is due (including claimed ones whose sender may die).
    ///
    /// # Errors
    /// Database failures.
    pub async fn next_notification_due(&self) -> Result<Option<DateTime<Utc>>> {
        let due = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT MIN(next_attempt_at) FROM weir_notifications WHERE sent_at IS NULL AND NOT gave_up",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(due)
    }

    /// The notifications written for a run, oldest first.
    ///
    /// # Errors
    /// Database failures; a stored payload that does not parse.
    pub async fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRow>> {
        let rows: Vec<RawNotification> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, notifier, payload, attempts, sent_at, gave_up, error
                 FROM weir_notifications WHERE run_id = $1 ORDER BY id",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(NotificationRow::try_from).collect()
    }

    /// Deletes up to `batch` delivered or abandoned notifications written before `cutoff`
    /// (retention); returns how many went. Call until 0.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_notifications_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64> {
        self.delete_settled("weir_notifications", cutoff, batch)
            .await
    }

    /// Deletes up to `batch` rows of the outbox `table` (`weir_notifications`,
    /// `weir_lineage_outbox`: rows with `created_at`, `sent_at`, `gave_up`) written before
    /// `cutoff` and delivered or abandoned; returns how many went.
    pub(crate) async fn delete_settled(
        &self,
        table: &'static str,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE id IN (
                 SELECT id FROM {table}
                 WHERE created_at < $1 AND (sent_at IS NOT NULL OR gave_up)
                 ORDER BY created_at LIMIT $2)"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(cutoff)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
