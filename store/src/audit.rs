//! The audit log: who did what, on what, when.

use chrono::{DateTime, Utc};

use crate::db::with_pool;
use crate::{Result, Store};

/// One entry of the audit log.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    /// Increasing id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub user_name: String,
    /// What: `trigger`, `backfill`, `clear`, `mark_success`, `mark_failed`, `cancel`, `pause`,
    /// `unpause`, `login`, `login_failed`, `logout`.
    pub action: String,
    /// On what: a DAG, run or task.
    pub target: String,
    /// The action's arguments (a JSON object, as text).
    pub detail: String,
}

impl Store {
    /// Appends to the audit log.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit(
        &self,
        user: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let detail = detail.to_string();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_audit (at, user_name, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(now)
            .bind(user)
            .bind(action)
            .bind(target)
            .bind(&detail)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The newest audit entries with an id below `before` (`i64::MAX` for the newest),
    /// `offset` skipped.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit_log(&self, before: i64, offset: i64, limit: i64) -> Result<Vec<AuditRow>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, AuditRow>(
                "SELECT id, at, user_name, action, target, detail FROM weir_audit WHERE id < $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
            )
            .bind(before)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }))
    }

    /// How many audit entries of `action` on `target` there are since `since` (e.g. failed
    /// logins of a name; the login rate limit itself counts `weir_login_attempts`).
    ///
    /// # Errors
    /// Database failures.
    pub async fn count_audit(
        &self,
        action: &str,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM weir_audit WHERE action = $1 AND target = $2 AND at >= $3",
            )
            .bind(action)
            .bind(target)
            .bind(since)
            .fetch_one(pool)
            .await?
        }))
    }
}
