//! Login sessions of the web UI, stored by the SHA-256 of their ids.

use chrono::{DateTime, Utc};

use crate::db::with_pool;
use crate::user::UserRow;
use crate::{Result, Store, StoreError};

/// A login session found by its id.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Whose it is.
    pub user: UserRow,
    /// The token every state-changing form and cookie-authenticated API call must carry.
    pub csrf_token: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores a new session (by the SHA-256 of its id).
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_session(
        &self,
        id_sha256: &str,
        user: &str,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_sessions (id_sha256, user_name, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_sha256)
            .bind(user)
            .bind(csrf_token)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The live session with this id digest, with its user.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none or it expired; database failures.
    pub async fn session(&self, id_sha256: &str, now: DateTime<Utc>) -> Result<SessionRow> {
        let row: Option<(String, String, DateTime<Utc>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT user_name, csrf_token, expires_at FROM weir_sessions WHERE id_sha256 = $1 AND expires_at > $2",
            )
            .bind(id_sha256)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        let (name, csrf_token, expires_at) =
            row.ok_or_else(|| StoreError::NotFound("session".to_owned()))?;
        Ok(SessionRow {
            user: self.user(&name).await?,
            csrf_token,
            expires_at,
        })
    }

    /// Ends a session (logout), and drops every expired one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_session(&self, id_sha256: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM weir_sessions WHERE id_sha256 = $1 OR expires_at <= $2")
                .bind(id_sha256)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
