//! Data connections (the databases steps read and write, named in the config) and the secrets
//! that must never reach a log.
//!
//! Pools are opened on first use and kept for the worker's life: a cache, keyed by name; the
//! configuration is the truth.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions as _, MySqlPool, PgPool, SqlitePool};
use tokio::sync::Mutex;
use weir_model::sql::Dialect;

/// An open data connection.
#[derive(Debug, Clone)]
pub enum DataPool {
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL or MariaDB.
    MySql(MySqlPool),
    /// SQLite (a file, created when missing).
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the data pool of either backend (each query must be valid
/// on all three, or branch on the variant).
#[macro_export]
macro_rules! with_data_pool {
    ($pool_enum:expr, |$pool:ident| $body:expr) => {
        match $pool_enum {
            $crate::conn::DataPool::Postgres($pool) => $body,
            $crate::conn::DataPool::MySql($pool) => $body,
            $crate::conn::DataPool::Sqlite($pool) => $body,
        }
    };
}

/// How long opening a data connection may take before the step fails (and retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Pools per data connection at most; steps of one worker share them.
const MAX_CONNECTIONS: u32 = 8;

/// The configured connections of a worker and their pools.
#[derive(Debug, Default)]
pub struct Connections {
    urls: BTreeMap<String, String>,
    pools: Mutex<HashMap<String, DataPool>>,
    stores: weir_storage::Stores,
    /// The storage connections (to tell a step that names one as a database; for code).
    store_conns: Vec<weir_storage::StoreConn>,
}

impl Connections {
    /// Connections by name (`postgres://`, `mysql://` or `mariadb://`, `sqlite://`).
    pub fn new(urls: BTreeMap<String, String>) -> Connections {
        Connections::with_stores(urls, Vec::new())
    }

    /// Database connections by name, and storage connections.
    pub fn with_stores(
        urls: BTreeMap<String, String>,
        stores: Vec<weir_storage::StoreConn>,
    ) -> Connections {
        Connections {
            urls,
            pools: Mutex::default(),
            stores: weir_storage::Stores::new(stores.clone()),
            store_conns: stores,
        }
    }

    /// The stores files are read from and written to.
    pub fn stores(&self) -> &weir_storage::Stores {
        &self.stores
    }

    fn unknown(&self, name: &str) -> ConnError {
        if self.store_conns.iter().any(|s| s.name == name) {
            ConnError::NotADatabase(name.to_owned())
        } else {
            ConnError::Unknown(name.to_owned())
        }
    }

    /// The dialect of connection `name`, from its URL (nothing is opened).
    ///
    /// # Errors
    /// An unknown name, or a URL of another kind.
    pub fn dialect(&self, name: &str) -> Result<Dialect, ConnError> {
        let url = self.urls.get(name).ok_or_else(|| self.unknown(name))?;
        Dialect::of_url(url).ok_or_else(|| ConnError::Unsupported {
            name: name.to_owned(),
            url: weir_store::redact(url),
        })
    }

    /// The URL of connection `name` (with its password: never for messages).
    pub fn url(&self, name: &str) -> Option<&str> {
        self.urls.get(name).map(String::as_str)
    }

    /// Connection `name` as a task's code receives it (`conns:` of a `python` step): a
    /// database's URL (with its password), or a store's `{url, options…}` (with its
    /// credentials); `None` for an unknown name.
    pub fn for_code(&self, name: &str) -> Option<serde_json::Value> {
        if let Some(url) = self.urls.get(name) {
            return Some(serde_json::Value::String(url.clone()));
        }
        let store = self.store_conns.iter().find(|s| s.name == name)?;
        let mut out = serde_json::Map::new();
        out.insert("url".into(), store.at.to_string().into());
        for (k, v) in &store.options {
            out.insert(k.clone(), v.clone().into());
        }
        Some(serde_json::Value::Object(out))
    }

    /// The schema a table named without one is in, on connection `name`: `public` on
    /// Postgres, the database of the URL on MySQL, `main` on SQLite (nothing is opened).
    pub fn default_schema(&self, name: &str) -> Option<String> {
        let url = self.urls.get(name)?;
        match Dialect::of_url(url)? {
            Dialect::Postgres => Some("public".into()),
            Dialect::Sqlite => Some("main".into()),
            Dialect::MySql => url::Url::parse(url)
                .ok()
                .map(|u| u.path().trim_start_matches('/').to_owned())
                .filter(|db| !db.is_empty()),
        }
    }

    /// The pool of connection `name`, opened on first use.
    ///
    /// # Errors
    /// An unknown name (with how to configure it), an unsupported URL, or a database that
    /// cannot be reached; messages never contain the password.
    pub async fn pool(&self, name: &str) -> Result<DataPool, ConnError> {
        let mut pools = self.pools.lock().await;
        if let Some(p) = pools.get(name) {
            return Ok(p.clone());
        }
        let url = self.urls.get(name).ok_or_else(|| self.unknown(name))?;
        let shown = weir_store::redact(url);
        let failed = |e: sqlx::Error| ConnError::Connect {
            name: name.to_owned(),
            url: shown.clone(),
            error: mask_url_password(&e.to_string(), url).into_owned(),
        };
        // Data steps run long statements on purpose (a million-row stream): sqlx's "slow
        // statement" is a debug line here, not a warning.
        let (slow_level, slow_after) = (log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = match Dialect::of_url(url) {
            Some(Dialect::Postgres) => {
                // Template values placed in strings assume `\` is an ordinary character in '…'
                // (weir_model::sql); this makes it so whatever the server's default.
                let options = sqlx::postgres::PgConnectOptions::from_str(url)
                    .map_err(failed)?
                    .options([("standard_conforming_strings", "on")])
                    .log_slow_statements(slow_level, slow_after);
                DataPool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(options)
                        .await
                        .map_err(failed)?,
                )
            }
            Some(Dialect::MySql) => {
                let url = match url.strip_prefix("mariadb://") {
                    Some(rest) => format!("mysql://{rest}"),
                    None => url.clone(),
                };
                let options = sqlx::mysql::MySqlConnectOptions::from_str(&url)
                    .map_err(failed)?
                    .log_slow_statements(slow_level, slow_after);
                DataPool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(options)
                        .await
                        .map_err(failed)?,
                )
            }
            Some(Dialect::Sqlite) => {
                // WAL: a step reading a table (a load's database source) does not block another
                // writing on the same file.
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(failed)?
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(CONNECT_TIMEOUT)
                    .log_slow_statements(slow_level, slow_after);
                DataPool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .connect_with(options)
                        .await
                        .map_err(failed)?,
                )
            }
            None => {
                return Err(ConnError::Unsupported {
                    name: name.to_owned(),
                    url: shown,
                });
            }
        };
        pools.insert(name.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Closes every open pool.
    pub async fn close(&self) {
        for (_, pool) in self.pools.lock().await.drain() {
            with_data_pool!(pool, |p| p.close().await);
        }
    }
}

/// Why a data connection is not available.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Not in the configuration.
    #[error(
        "connection `{0}` is not configured (add [connections.{0}] with a url to weir.toml, or set WEIR_CONN_{upper})",
        upper = .0.to_uppercase()
    )]
    Unknown(String),
    /// A storage connection where a database is needed.
    #[error(
        "connection `{0}` is a storage connection (a bucket or server for files), not a database; name it in a location (s3://…), or use a database connection here"
    )]
    NotADatabase(String),
    /// A URL of another kind.
    #[error(
        "connection `{name}`: `{url}` is not a postgres://, mysql://, mariadb:// or sqlite: URL"
    )]
    Unsupported {
        /// Connection name.
        name: String,
        /// The URL, password hidden.
        url: String,
    },
    /// The database could not be reached.
    #[error("connection `{name}` ({url}): {error}")]
    Connect {
        /// Connection name.
        name: String,
        /// The URL, password hidden.
        url: String,
        /// What the driver said, password hidden.
        error: String,
    },
}

impl ConnError {
    /// Whether a retry may succeed (an unreachable database may come back; a missing or
    /// malformed configuration will not).
    pub fn retryable(&self) -> bool {
        matches!(self, ConnError::Connect { .. })
    }
}

/// A step that cannot get its connection fails, with a retry when one may help.
impl From<ConnError> for crate::outcome::TaskOutcome {
    fn from(e: ConnError) -> Self {
        crate::outcome::TaskOutcome::Failed {
            retryable: e.retryable(),
            error: e.to_string(),
        }
    }
}

/// Whether a database error may pass on a retry (the connection or pool failed), rather than
/// repeat (the statement or the data is wrong).
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        // Lost a race with another writer: SQLite busy (any extended code of 5), Postgres
        // serialization failure or deadlock, MySQL deadlock or lock wait timeout.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(code.as_ref(), "40001" | "40P01" | "1213" | "1205")
                || code.parse::<u32>().is_ok_and(|c| c & 0xff == 5)
        }),
        _ => false,
    }
}

/// A database error in the database's own words, for task errors and rejects: the message,
/// and on Postgres its detail (`Key (department_id)=(99) is not present in table ...`).
/// Never the server's source location, which sqlx's `Display` appends as `at line N` and a
/// reader takes for a line of their file.
pub fn db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => {
            let mut text = d.message().to_owned();
            if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                && let Some(detail) = pg.detail()
            {
                text.push_str(" (");
                text.push_str(detail);
                text.push(')');
            }
            text
        }
        other => other.to_string(),
    }
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`: it waits (the
/// busy timeout) for the write lock up front, where a deferred transaction that read first
/// fails at once when another connection wrote meanwhile ("database is locked").
///
/// # Errors
/// The database's.
pub async fn begin_write<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error> {
    if DB::NAME == <sqlx::Sqlite as sqlx::Database>::NAME {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

/// The password of a URL (`scheme://user:password@host`) as written in it, if any (parsed by
/// the `url` crate).
pub fn url_password(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed
        .password()
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

fn mask_url_password<'a>(text: &'a str, url: &str) -> Cow<'a, str> {
    match url_password(url) {
        Some(p) => Cow::Owned(text.replace(&p, "***")),
        None => Cow::Borrowed(text),
    }
}

/// Secret values (passwords, tokens) to replace with `***` wherever weir writes text a user
/// may see: task logs, task errors.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Arc<Vec<String>>,
}

impl Masker {
    /// Masks these values (empty ones are ignored; percent-encoded forms are masked too).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let mut all: Vec<String> = Vec::new();
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            if let Ok(decoded) = percent_encoding::percent_decode_str(&s).decode_utf8()
                && decoded != s
                && !decoded.is_empty()
            {
                all.push(decoded.into_owned());
            }
            all.push(s);
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        Masker {
            secrets: Arc::new(all),
        }
    }

    /// Masks `secrets` and the password of every connection URL.
    pub fn for_config(secrets: &[String], connections: &BTreeMap<String, String>) -> Masker {
        Masker::new(
            secrets
                .iter()
                .cloned()
                .chain(connections.values().filter_map(|u| url_password(u))),
        )
    }

    /// `text` with every secret replaced by `***`.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_come_out_of_urls() {
        assert_eq!(
            url_password("postgres://etl:s3cret@db/w").as_deref(),
            Some("s3cret")
        );
        assert_eq!(url_password("mysql://root@127.0.0.1/test").as_deref(), None);
        assert_eq!(url_password("sqlite://x.db").as_deref(), None);
        assert_eq!(
            url_password("postgres://u:p%40ss@db/w").as_deref(),
            Some("p%40ss")
        );
    }

    #[test]
    fn secrets_are_masked_whole_and_percent_decoded() {
        let m = Masker::new([
            "p%40ss".to_owned(),
            "tok".to_owned(),
            "token123".to_owned(),
            String::new(),
        ]);
        assert_eq!(m.mask("password p@ss and p%40ss"), "password *** and ***");
        assert_eq!(m.mask("token123 tok"), "*** ***");
        assert_eq!(m.mask("nothing here"), "nothing here");
    }
}
