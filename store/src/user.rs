//! Users of the web UI and API, with their roles and API tokens. The store keeps what it is
//! given: password hashes (argon2id PHC strings) and token digests (SHA-256), never secrets.

use chrono::{DateTime, Utc};

use crate::db::with_pool;
use crate::{Result, Store, StoreError};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads; triggers, clears, pauses, backfills.
    Operator,
    /// Everything, users included.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    ///
    /// # Errors
    /// An unknown name (a corrupt row).
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(StoreError::Corrupt(format!("unknown role `{other}`"))),
        }
    }
}

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// API tokens minted and not deleted.
    pub tokens: i64,
}

#[derive(sqlx::FromRow)]
struct RawUser {
    name: String,
    role: String,
    password_hash: String,
    created_at: DateTime<Utc>,
    tokens: i64,
}

impl TryFrom<RawUser> for UserRow {
    type Error = StoreError;
    fn try_from(r: RawUser) -> Result<UserRow> {
        Ok(UserRow {
            role: Role::parse(&r.role)?,
            name: r.name,
            password_hash: r.password_hash,
            created_at: r.created_at,
            tokens: r.tokens,
        })
    }
}

const USERS_SQL: &str = "SELECT u.name, u.role, u.password_hash, u.created_at,
        (SELECT COUNT(*) FROM weir_api_tokens t WHERE t.user_name = u.name) AS tokens
    FROM weir_users u";

impl Store {
    /// Creates a user.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the name is taken; database failures.
    pub async fn create_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(now)
            .execute(pool)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Duplicate(_) => {
                    StoreError::Conflict(format!("a user named `{name}` exists already"))
                }
                other => other,
            })?;
        });
        Ok(())
    }

    /// Every user, by name.
    ///
    /// # Errors
    /// Database failures.
    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let sql = format!("{USERS_SQL} ORDER BY u.name");
        let rows: Vec<RawUser> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(UserRow::try_from).collect()
    }

    /// One user.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; database failures.
    pub async fn user(&self, name: &str) -> Result<UserRow> {
        let sql = format!("{USERS_SQL} WHERE u.name = $1");
        let row: Option<RawUser> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("user `{name}`")))?
            .try_into()
    }

    /// Deletes a user and their tokens; whether the user existed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let deleted = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM weir_users WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Stores an API token's SHA-256 (hex) for a user.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown user; database failures.
    pub async fn add_token(
        &self,
        name: &str,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.user(name).await?;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_api_tokens (user_name, token_sha256, created_at) VALUES ($1, $2, $3)",
            )
            .bind(name)
            .bind(token_sha256)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The user a token (by its SHA-256) belongs to, recording its use to the minute: a
    /// request reads, and writes the token's `last_used_at` only when the stored time is a
    /// minute old or more (every API call was a write, and a commit, before).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown token; database failures.
    pub async fn user_by_token(&self, token_sha256: &str, now: DateTime<Utc>) -> Result<UserRow> {
        let sql = format!(
            "SELECT x.*, t.last_used_at FROM ({USERS_SQL}) x
             JOIN weir_api_tokens t ON t.user_name = x.name WHERE t.token_sha256 = $1"
        );
        let row: Option<(RawUser, Option<DateTime<Utc>>)> = with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(token_sha256)
                .fetch_optional(pool)
                .await?
                .map(|r| {
                    use sqlx::{FromRow, Row};
                    Ok::<_, sqlx::Error>((RawUser::from_row(&r)?, r.try_get("last_used_at")?))
                })
                .transpose()?
        });
        let (user, last_used) = row.ok_or_else(|| StoreError::NotFound("API token".to_owned()))?;
        if last_used.is_none_or(|at| now - at >= TOKEN_USE_GRANULARITY) {
            with_pool!(self, |pool| {
                sqlx::query(
                    "UPDATE weir_api_tokens SET last_used_at = $2
                     WHERE token_sha256 = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                )
                .bind(token_sha256)
                .bind(now)
                .execute(pool)
                .await?;
            });
        }
        user.try_into()
    }
}

/// How exactly a token's `last_used_at` is kept.
const TOKEN_USE_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// A login's place in the rate limit (see [`Store::begin_login`]).
#[derive(Debug)]
pub enum LoginAttempt {
    /// Counted: the attempt's rows, deleted by [`Store::login_succeeded`].
    Allowed(Vec<i64>),
    /// Refused: this key had its limit of attempts in the window.
    Refused(String),
}

impl Store {
    /// Counts a password login against each of `limits` (a key and how many attempts it may
    /// have since `since`) and records it, in one transaction that holds the keys (Postgres:
    /// transaction-level advisory locks; SQLite: the write lock), so that parallel attempts
    /// are counted one after the other. Refused when any key is at its limit (nothing is
    /// recorded then).
    ///
    /// # Errors
    /// Database failures.
    pub async fn begin_login(
        &self,
        limits: &[(String, i64)],
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<LoginAttempt> {
        use crate::db::BeginWrite;
        let mut keys: Vec<&(String, i64)> = limits.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if self.backend() == crate::Backend::Postgres {
                for (key, _) in &keys {
                    sqlx::query("SELECT pg_advisory_xact_lock(7377003, hashtext($1))")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for (key, allowed) in &keys {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM weir_login_attempts WHERE key = $1 AND at >= $2",
                )
                .bind(key)
                .bind(since)
                .fetch_one(&mut *tx)
                .await?;
                if n >= *allowed {
                    return Ok(LoginAttempt::Refused(key.clone()));
                }
            }
            let mut ids = Vec::with_capacity(keys.len());
            for (key, _) in &keys {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO weir_login_attempts (key, at) VALUES ($1, $2) RETURNING id",
                )
                .bind(key)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                ids.push(id);
            }
            // Old attempts go along (rows older than any window).
            sqlx::query("DELETE FROM weir_login_attempts WHERE at < $1")
                .bind(since - chrono::Duration::days(1))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(LoginAttempt::Allowed(ids))
        })
    }

    /// A login counted by [`Store::begin_login`] succeeded: it does not count against the
    /// limit.
    ///
    /// # Errors
    /// Database failures.
    pub async fn login_succeeded(&self, ids: &[i64]) -> Result<()> {
        with_pool!(self, |pool| {
            for id in ids {
                sqlx::query("DELETE FROM weir_login_attempts WHERE id = $1")
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }
}
