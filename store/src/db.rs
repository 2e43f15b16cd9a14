//! Connecting to the metadata database, migrating it, and dispatching on the backend.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Notify;

use crate::{Result, StoreError};

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, one process.
    Sqlite,
    /// Shared by many processes and hosts.
    Postgres,
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the backend's pool; the body is written once and compiled
/// for each backend, so every query must be valid on both (or branch on [`Backend`]).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Like [`with_pool`], for the reads the pages make of history (a DAG's runs, its grid, a
/// task's log): on SQLite they run on read-only connections of their own, beside the one that
/// writes (WAL lets readers see the last commit while a write goes on), so a page does not
/// queue behind the engine's statements nor eight pages behind each other. Only for a read
/// that stands alone: it does not see a transaction this process has not committed.
macro_rules! with_read_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match (&$store.db, &$store.sqlite_reads) {
            ($crate::db::Db::Postgres($pool), _) => $body,
            (_, Some($pool)) => $body,
            ($crate::db::Db::Sqlite($pool), None) => $body,
        }
    };
}
pub(crate) use with_read_pool;

/// Begins a write transaction. SQLite's default deferred transaction fails at once with
/// `database is locked` when it upgrades to a write while another connection writes; an
/// immediate one waits for the lock (busy timeout) instead.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Wake-up hints between the scheduler and the workers of this process.
#[derive(Debug)]
pub(crate) struct Wakeups {
    pub(crate) scheduler: Notify,
    pub(crate) workers: Notify,
    /// Payload of this store's `NOTIFY`s: its own listener skips them, since the in-process
    /// wake-up has already happened (that would be a second, useless scheduler pass).
    origin: String,
}

impl Wakeups {
    /// Acts on a wake-up byte from another process ([`crate::wake`]).
    pub(crate) fn wake(&self, what: u8) {
        match what {
            crate::wake::SCHEDULER => self.scheduler.notify_one(),
            crate::wake::WORKERS => {
                self.workers.notify_waiters();
                self.workers.notify_one();
            }
            _ => {}
        }
    }
}

impl Default for Wakeups {
    fn default() -> Wakeups {
        Wakeups {
            scheduler: Notify::new(),
            workers: Notify::new(),
            origin: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// A pooled Postgres connection idle this long is checked before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// SQLite: the most read-only connections [`with_read_pool`] opens (on first use; closed
/// when idle). Pages are mostly CPU, and the machines weir runs on have a few cores.
const SQLITE_READERS: u32 = 4;

/// Postgres notification channels.
pub(crate) const SCHEDULER_CHANNEL: &str = "weir_scheduler";
const WORKER_CHANNEL: &str = "weir_workers";

/// The state store. Cheap to clone; clones share the pool and the wake-ups.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// SQLite: read-only connections for [`with_read_pool`]'s reads.
    pub(crate) sqlite_reads: Option<SqlitePool>,
    url: Arc<str>,
    wakeups: Arc<Wakeups>,
    /// SQLite: the other processes on the same file, woken through local sockets.
    peers: Option<Arc<crate::wake::LocalPeers>>,
    /// The application name of this pool's Postgres sessions, unique to the pool: a scheduler
    /// taking the lead from a cut-off one ends that one's sessions by it.
    pub(crate) session_name: Arc<str>,
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://...`), creating a SQLite file and its
    /// folder when missing, and applies the migrations.
    ///
    /// # Errors
    /// An unsupported URL, an unreachable database, or a failed migration.
    pub async fn connect(url: &str) -> Result<Store> {
        let lock = sqlite_setup_lock(url).await?;
        let store = Store::connect_without_migrating(url).await?;
        store.migrate_unlocked().await?;
        drop(lock);
        Ok(store)
    }

    /// Connects without touching the schema (for `weir db migrate` to report on).
    ///
    /// # Errors
    /// An unsupported URL or an unreachable database.
    pub async fn connect_without_migrating(url: &str) -> Result<Store> {
        let session_name = session_name(url);
        let mut sqlite_reads = None;
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                // sqlx pings every connection it hands out by default: a round trip per
                // statement. Only a connection idle for a while may have died unnoticed.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for < PING_IF_IDLE_FOR {
                            return Ok(true);
                        }
                        use sqlx::Connection;
                        Ok(conn.ping().await.is_ok())
                    })
                })
                // A worker that cannot reach the database for this long fails its step loudly.
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(pg_options(url)?.application_name(&session_name))
                .await?;
            Db::Postgres(pool)
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = std::path::Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Config(format!("creating {}: {e}", parent.display()))
                })?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // Another process (the CLI next to `standalone`) may hold the write lock briefly.
                .busy_timeout(Duration::from_secs(30));
            // One connection: SQLite has one writer, and connections of one process contending
            // for the write lock wait in SQLite's busy handler, which sleeps (1, 2, 5, 10 ms…)
            // instead of queueing; measured 15-20% slower on the fan-out benchmark. Nothing
            // may hold a connection while it acquires another.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            sqlite_reads = Some(
                SqlitePoolOptions::new()
                    .max_connections(SQLITE_READERS)
                    .connect_lazy_with(options.read_only(true).create_if_missing(false)),
            );
            Db::Sqlite(pool)
        } else {
            return Err(StoreError::Config(format!(
                "database_url `{}` is neither sqlite://PATH nor postgres://...",
                redact(url)
            )));
        };
        let wakeups = Arc::new(Wakeups::default());
        let peers = sqlite_file(url)
            .map(|file| Arc::new(crate::wake::LocalPeers::for_sqlite(&file, &wakeups.origin)));
        Ok(Store {
            db,
            sqlite_reads,
            url: Arc::from(url),
            wakeups,
            peers,
            session_name: Arc::from(session_name),
        })
    }

    /// Applies the embedded migrations of this backend.
    ///
    /// # Errors
    /// A migration that fails, or a database that has migrations this binary does not know.
    pub async fn migrate(&self) -> Result<()> {
        let lock = sqlite_setup_lock(&self.url).await?;
        self.migrate_unlocked().await?;
        drop(lock);
        Ok(())
    }

    async fn migrate_unlocked(&self) -> Result<()> {
        match &self.db {
            Db::Postgres(pool) => {
                // Two processes starting at once must not both migrate: serialize on a lock.
                let mut conn = pool.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock(7377001)")
                    .execute(&mut *conn)
                    .await?;
                let result = sqlx::migrate!("../migrations/postgres")
                    .run(&mut *conn)
                    .await;
                sqlx::query("SELECT pg_advisory_unlock(7377001)")
                    .execute(&mut *conn)
                    .await?;
                result?;
            }
            Db::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// How many migrations the database has applied; `None` when it holds no weir schema (an
    /// empty database, or another application's).
    ///
    /// # Errors
    /// Database failures.
    pub async fn applied_migrations(&self) -> Result<Option<i64>> {
        let exists: bool = match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')",
            )
            .fetch_one(pool)
            .await?,
            Db::Sqlite(pool) => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
            )
            .fetch_one(pool)
            .await?,
        };
        if !exists {
            return Ok(None);
        }
        let n: i64 = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"
        )
        .fetch_one(pool)
        .await?);
        Ok(Some(n))
    }

    /// The same database through a pool of its own, sharing this store's in-process wake-ups:
    /// for the web server of `standalone`, so that viewers never take the engine's connections.
    ///
    /// # Errors
    /// An unreachable database.
    pub async fn with_own_pool(&self) -> Result<Store> {
        let other = Store::connect_without_migrating(&self.url).await?;
        Ok(Store {
            db: other.db,
            sqlite_reads: other.sqlite_reads,
            url: Arc::clone(&self.url),
            wakeups: Arc::clone(&self.wakeups),
            peers: self.peers.clone(),
            session_name: other.session_name,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The URL with its password hidden, for messages.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Tells schedulers that something changed (a task finished, a run was created).
    pub async fn wake_scheduler(&self) {
        self.wake_scheduler_but_notify();
        self.pg_notify(SCHEDULER_CHANNEL).await;
    }

    /// Wakes this process's scheduler, and those of other processes on the same SQLite file;
    /// on Postgres the caller sent the `NOTIFY` (with its statement).
    pub(crate) fn wake_scheduler_but_notify(&self) {
        self.wakeups.scheduler.notify_one();
        if let Some(peers) = &self.peers {
            peers.send(crate::wake::SCHEDULER);
        }
    }

    /// The payload this store's `NOTIFY`s carry.
    pub(crate) fn notify_origin(&self) -> &str {
        &self.wakeups.origin
    }

    /// Tells workers that task instances were queued.
    pub async fn wake_workers(&self) {
        self.wakeups.wake(crate::wake::WORKERS);
        if let Some(peers) = &self.peers {
            peers.send(crate::wake::WORKERS);
        }
        self.pg_notify(WORKER_CHANNEL).await;
    }

    async fn pg_notify(&self, channel: &str) {
        if let Db::Postgres(pool) = &self.db {
            // A lost notification only delays work until the next timer tick.
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(self.notify_origin())
                .execute(pool)
                .await
            {
                tracing::debug!(error = %e, "pg_notify failed");
            }
        }
    }

    /// Waits until a scheduler wake-up arrives.
    pub async fn scheduler_woken(&self) {
        self.wakeups.scheduler.notified().await;
    }

    /// Waits until a worker wake-up arrives.
    pub async fn workers_woken(&self) {
        self.wakeups.workers.notified().await;
    }

    /// Forwards other processes' wake-ups to this process's until the returned task is
    /// aborted: Postgres's `NOTIFY`s (reconnecting after errors), or on SQLite the datagrams of
    /// the processes on the same file (local sockets beside the file; one listener per store).
    pub fn listen(&self) -> Option<tokio::task::JoinHandle<()>> {
        let Db::Postgres(pool) = &self.db else {
            return self
                .peers
                .as_ref()
                .and_then(|p| p.listen(Arc::clone(&self.wakeups)));
        };
        let pool = pool.clone();
        let wakeups = Arc::clone(&self.wakeups);
        Some(tokio::spawn(async move {
            loop {
                match listen_once(&pool, &wakeups).await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "LISTEN connection lost; reconnecting"),
                }
                // Everyone re-reads the database after a gap in notifications.
                wakeups.scheduler.notify_one();
                wakeups.workers.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }

    /// Closes the pools.
    pub async fn close(&self) {
        if let Some(reads) = &self.sqlite_reads {
            reads.close().await;
        }
        with_pool!(self, |pool| pool.close().await);
    }
}

async fn listen_once(pool: &PgPool, wakeups: &Wakeups) -> Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([SCHEDULER_CHANNEL, WORKER_CHANNEL])
        .await?;
    loop {
        let n = listener.recv().await?;
        if n.payload() == wakeups.origin {
            continue;
        }
        match n.channel() {
            SCHEDULER_CHANNEL => wakeups.scheduler.notify_one(),
            _ => {
                wakeups.workers.notify_waiters();
                wakeups.workers.notify_one();
            }
        }
    }
}

/// With a SQLite file, an exclusive lock on a file beside it, held while a process opens the
/// database and migrates it: `standalone` and a CLI command starting together on a new file
/// would otherwise both switch it to WAL and both migrate (SQLite answers "database is locked"
/// or "table already exists"). Postgres serializes migrations with an advisory lock instead.
async fn sqlite_setup_lock(url: &str) -> Result<Option<std::fs::File>> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    let path = path.split('?').next().unwrap_or(path).to_owned();
    if path.is_empty() || path.starts_with(':') {
        return Ok(None);
    }
    let failed = |e: String| StoreError::Config(format!("locking {path} for setup: {e}"));
    let lock_path = format!("{path}.setup-lock");
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = std::path::Path::new(&lock_path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map(Some)
    .map_err(|e| failed(e.to_string()))
}

/// The file of a `sqlite://PATH` URL (`None` for other URLs and in-memory databases).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && !path.starts_with(':')).then(|| std::path::PathBuf::from(path))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` (parsed by the `url`
/// crate). A URL that does not parse keeps only what follows its last `@`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

/// A Postgres URL's options, naming the process to the server (`application_name`
/// `weir[PID]`, unless the URL sets one): `pg_stat_activity` tells which weir process holds
/// which connection.
fn pg_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    use std::str::FromStr as _;
    Ok(sqlx::postgres::PgConnectOptions::from_str(url)?)
}

/// A pool's application name: the URL's `application_name` (or `weir[PID]`) and a random
/// suffix, within Postgres's 63 bytes.
fn session_name(url: &str) -> String {
    let base = pg_options(url)
        .ok()
        .and_then(|o| o.get_application_name().map(str::to_owned))
        .unwrap_or_else(|| format!("weir[{}]", std::process::id()));
    let base: String = base.chars().take(40).collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{base} {}", &suffix[..8])
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact("postgres://etl:s3cret@db:5432/w"),
            "postgres://etl:***@db:5432/w"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite://.weir/weir.db"), "sqlite://.weir/weir.db");
    }
}
