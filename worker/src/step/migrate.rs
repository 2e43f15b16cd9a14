//! `kind: migrate`: versioned `NNNN_name.sql` files applied in order to a target connection,
//! recorded in `weir_schema_history` (version, name, checksum, applied_at, duration_ms) in the
//! target itself.
//!
//! - Idempotent: applied versions are skipped; running it again applies nothing.
//! - An applied file whose text changed (its SHA-256 differs from the recorded one) is an
//!   error naming the file, before anything is applied.
//! - Each migration and its history row are one transaction, so a failing migration leaves
//!   neither its changes nor a record (on Postgres and SQLite, whose DDL is transactional;
//!   MySQL/MariaDB commit each DDL statement on their own: a failed migration there may leave
//!   part of its statements applied, and is not recorded).
//! - On Postgres, each migration's transaction takes an advisory lock, so two tries migrating
//!   one database at once apply each version once.

use crate::step::db::SqlDb;
use sha2::{Digest, Sha256};
use weir_model::files::{Migration, migrations};

use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// The advisory lock key of migrations on a Postgres target.
const MIGRATE_LOCK: i64 = 7_377_101;

/// Runs a `migrate` step with the migration files of its DAG version.
pub async fn run(
    conn: &str,
    dir: &str,
    files: &std::collections::BTreeMap<String, String>,
    conns: &Connections,
    log: &LogSink,
) -> TaskOutcome {
    let pool = match conns.pool(conn).await {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let found = migrations(files, dir);
    log.note(format!(
        "{} migration(s) in `{dir}`, target `{conn}`",
        found.len()
    ));
    let result = match &pool {
        DataPool::Postgres(p) => apply(p, Dialect::Postgres, &found, log).await,
        DataPool::MySql(p) => apply(p, Dialect::MySql, &found, log).await,
        DataPool::Sqlite(p) => apply(p, Dialect::Sqlite, &found, log).await,
    };
    match result {
        Ok((applied, latest)) => {
            log.note(format!(
                "{applied} applied; the database is at version {}",
                latest.map_or_else(|| "none".to_owned(), |v| v.to_string())
            ));
            let mut outputs = serde_json::Map::new();
            outputs.insert("applied".into(), applied.to_string().into());
            outputs.insert(
                "version".into(),
                latest.map_or(serde_json::Value::Null, |v| v.to_string().into()),
            );
            TaskOutcome::Succeeded { outputs }
        }
        Err(error) => {
            log.note(&error);
            TaskOutcome::Failed {
                error,
                retryable: false,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    fn create_history(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "CREATE TABLE IF NOT EXISTS weir_schema_history (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                 checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL, duration_ms BIGINT NOT NULL)"
            }
            Dialect::MySql => {
                "CREATE TABLE IF NOT EXISTS weir_schema_history (version BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, \
                 checksum CHAR(64) NOT NULL, applied_at DATETIME(6) NOT NULL, duration_ms BIGINT NOT NULL)"
            }
            Dialect::Sqlite => {
                "CREATE TABLE IF NOT EXISTS weir_schema_history (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                 checksum TEXT NOT NULL, applied_at TEXT NOT NULL, duration_ms INTEGER NOT NULL)"
            }
        }
    }

    fn insert_history(self) -> &'static str {
        match self {
            Dialect::MySql => {
                "INSERT INTO weir_schema_history (version, name, checksum, applied_at, duration_ms) VALUES (?, ?, ?, ?, ?)"
            }
            Dialect::Postgres | Dialect::Sqlite => {
                "INSERT INTO weir_schema_history (version, name, checksum, applied_at, duration_ms) VALUES ($1, $2, $3, $4, $5)"
            }
        }
    }
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies what is not applied yet; returns how many, and the latest version recorded.
async fn apply<DB>(
    pool: &sqlx::Pool<DB>,
    dialect: Dialect,
    found: &[Migration<'_>],
    log: &LogSink,
) -> Result<(u64, Option<i64>), String>
where
    DB: SqlDb,
{
    let db_error = |what: &str, e: sqlx::Error| format!("{what}: {}", crate::conn::db_error(&e));
    sqlx::raw_sql(dialect.create_history())
        .execute(DB::pool(pool))
        .await
        .map_err(|e| db_error("creating weir_schema_history", e))?;
    let applied = history(DB::pool(pool)).await?;
    let unknown: Vec<String> = applied
        .iter()
        .filter(|(v, _)| {
            !found
                .iter()
                .any(|m| i64::try_from(m.version).ok() == Some(*v))
        })
        .map(|(v, _)| v.to_string())
        .collect();
    if !unknown.is_empty() {
        // Applied by an older folder (a deleted file, another DAG): reported, not an error.
        log.note(format!(
            "applied version(s) {} have no file in the folder",
            unknown.join(", ")
        ));
    }
    // Every drift is reported before anything is applied.
    let mut drift = Vec::new();
    for m in found {
        let version =
            i64::try_from(m.version).map_err(|_| format!("{}: version too large", m.file_name))?;
        if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == version)
            && *recorded != checksum(m.sql)
        {
            drift.push(format!(
                "{} was applied with checksum {}… and has changed since ({}…): applied migrations must not be edited; add a new one",
                m.file_name,
                &recorded[..recorded.len().min(12)],
                &checksum(m.sql)[..12]
            ));
        }
    }
    if !drift.is_empty() {
        return Err(drift.join("; "));
    }
    let mut count = 0;
    for m in found {
        let version =
            i64::try_from(m.version).map_err(|_| format!("{}: version too large", m.file_name))?;
        if applied.iter().any(|(v, _)| *v == version) {
            continue;
        }
        let started = std::time::Instant::now();
        let mut tx = crate::conn::begin_write(pool)
            .await
            .map_err(|e| db_error(m.file_name, e))?;
        if dialect == Dialect::Postgres {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SELECT pg_advisory_xact_lock({MIGRATE_LOCK})"
            )))
            .execute(DB::on(&mut *tx))
            .await
            .map_err(|e| db_error(m.file_name, e))?;
            // Another try may have applied it while this one waited for the lock.
            if history(DB::on(&mut *tx))
                .await?
                .iter()
                .any(|(v, _)| *v == version)
            {
                continue;
            }
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql.to_owned()))
            .execute(DB::on(&mut *tx))
            .await
            .map_err(|e| {
                format!(
                    "{} failed, not recorded: {}",
                    m.file_name,
                    crate::conn::db_error(&e)
                )
            })?;
        let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        sqlx::query(dialect.insert_history())
            .bind(DB::int(version))
            .bind(DB::str(m.name))
            .bind(DB::text(checksum(m.sql)))
            .bind(DB::time(chrono::Utc::now()))
            .bind(DB::int(ms))
            .execute(DB::on(&mut *tx))
            .await
            .map_err(|e| db_error("recording the migration", e))?;
        tx.commit().await.map_err(|e| db_error(m.file_name, e))?;
        log.note(format!("applied {} in {ms} ms", m.file_name));
        count += 1;
    }
    let latest = history(DB::pool(pool)).await?.iter().map(|(v, _)| *v).max();
    Ok((count, latest))
}

async fn history<'e, DB, E>(executor: E) -> Result<Vec<(i64, String)>, String>
where
    DB: SqlDb,
    E: sqlx::Executor<'e, Database = DB>,
{
    let rows = sqlx::query("SELECT version, checksum FROM weir_schema_history ORDER BY version")
        .fetch_all(executor)
        .await
        .map_err(|e| format!("reading weir_schema_history: {}", crate::conn::db_error(&e)))?;
    rows.iter()
        .map(|r| {
            Ok((
                DB::get_int(r, 0).map_err(|e| e.to_string())?,
                DB::get_text(r, 1)
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default(),
            ))
        })
        .collect()
}
