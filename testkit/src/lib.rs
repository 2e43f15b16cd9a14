//! weir-testkit: helpers for weir's tests (publish = false).
//!
//! - [`TestDb`]: a real, empty metadata database: a SQLite file in a temporary folder, or a
//!   fresh database on a Postgres server, dropped afterwards. The server: the one at
//!   `WEIR_TEST_POSTGRES_URL` when set; else the local one at
//!   `postgres://postgres@127.0.0.1:5432/postgres` when it answers; else a throwaway cluster
//!   started from the machine's Postgres binaries (`cluster.rs`; `WEIR_TEST_POSTGRES=throwaway`
//!   forces it). Never a mock, never skipped: a machine with none of these fails the test with
//!   what to install.
//! - [`TestDataDb`]: a real, empty database for data steps: SQLite, Postgres (as above) or
//!   MariaDB (`WEIR_TEST_MYSQL_URL`; else `mysql://root@127.0.0.1:3306/` when it answers; else
//!   a throwaway server from the machine's binaries, forced by `WEIR_TEST_MYSQL=throwaway`).
//! - [`per_backend!`]: one test body, one test per backend (SQLite, Postgres, MariaDB).
//! - [`dag`]: parses a DAG from YAML text for tests.
//! - [`engine`]: the real scheduler and worker over a [`TestDb`], driven on a manual clock, and
//!   their loops as `weir standalone` runs them (used by the benchmarks too).
//! - [`smtp`]: a real SMTP server on a loopback port that keeps what it receives.
//! - [`CutProxy`]: a TCP proxy a test can cut, a network partition between a process and a
//!   server.

mod cluster;
pub mod engine;
pub use cluster::RestartablePostgres;
mod proxy;
pub use proxy::CutProxy;
pub mod smtp;
pub mod stores;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir_store::Store;

/// The Postgres server tests use, unless `WEIR_TEST_POSTGRES_URL` names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A real, empty metadata database for one test.
pub struct TestDb {
    /// The store over it, migrated.
    pub store: Store,
    /// Its URL (to start other processes on the same database).
    pub url: String,
    /// Held for its `Drop`: the folder or the database goes with the test.
    _cleanup: Cleanup,
}

/// What goes when a test database is dropped.
enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Server(#[allow(dead_code)] ServerDb),
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// A migrated SQLite database in a temporary folder.
    ///
    /// # Panics
    /// When the database cannot be created (a broken test machine).
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}", dir.path().join("weir.db").display());
        let store = Store::connect(&url)
            .await
            .expect("SQLite metadata database");
        TestDb {
            store,
            url,
            _cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A migrated, freshly created database on the test Postgres server.
    ///
    /// # Panics
    /// When the server is unreachable, with how to start it.
    pub async fn postgres() -> TestDb {
        let admin_url = postgres_admin_url().await;
        let name = format!(
            "weir_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let db = ServerDb::create(Server::Postgres, admin_url, name).await;
        let url = db.url();
        let store = Store::connect(&url)
            .await
            .expect("Postgres metadata database");
        TestDb {
            store,
            url,
            _cleanup: Cleanup::Server(db),
        }
    }
}

/// The server tests create their databases on, decided once per test process.
async fn postgres_admin_url() -> String {
    static URL: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    URL.get_or_init(|| async {
        choose_server(
            &ServerChoice {
                name: "Postgres",
                url_var: "WEIR_TEST_POSTGRES_URL",
                force_var: "WEIR_TEST_POSTGRES",
                default_url: DEFAULT_POSTGRES_URL,
                throwaway: "cluster",
            },
            answers(DEFAULT_POSTGRES_URL),
            cluster::start,
        )
        .await
    })
    .await
    .clone()
}

/// The MariaDB server data tests create their databases on: `WEIR_TEST_MYSQL_URL` when set;
/// else the local one at [`DEFAULT_MYSQL_URL`] when it answers; else a throwaway server from
/// the machine's binaries (`WEIR_TEST_MYSQL=throwaway` forces it).
async fn mysql_admin_url() -> String {
    static URL: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    URL.get_or_init(|| async {
        choose_server(
            &ServerChoice {
                name: "MariaDB",
                url_var: "WEIR_TEST_MYSQL_URL",
                force_var: "WEIR_TEST_MYSQL",
                default_url: DEFAULT_MYSQL_URL,
                throwaway: "server",
            },
            mysql_answers(DEFAULT_MYSQL_URL),
            cluster::start_mariadb,
        )
        .await
    })
    .await
    .clone()
}

/// How to find a test server of one kind.
struct ServerChoice {
    name: &'static str,
    /// Names the server to use, as is (never replaced by another).
    url_var: &'static str,
    /// `=throwaway` forces a throwaway server.
    force_var: &'static str,
    default_url: &'static str,
    /// What the throwaway one is called in the message.
    throwaway: &'static str,
}

/// The URL of `url_var` when set; else the default server when it answers; else a throwaway
/// one from the machine's binaries. Panics, saying why, when none can be had.
async fn choose_server(
    c: &ServerChoice,
    default_answers: impl std::future::Future<Output = bool>,
    start: fn() -> Result<cluster::Cluster, String>,
) -> String {
    if let Ok(url) = std::env::var(c.url_var) {
        return url;
    }
    let forced = std::env::var(c.force_var).is_ok_and(|v| v == "throwaway");
    if !forced && default_answers.await {
        return c.default_url.to_owned();
    }
    match tokio::task::spawn_blocking(start).await {
        Ok(Ok(server)) => {
            let why = if forced {
                format!("{}=throwaway", c.force_var)
            } else {
                format!("no {} at {}", c.name, c.default_url)
            };
            eprintln!(
                "weir-testkit: {why}; using a throwaway {} at {}",
                c.throwaway, server.url
            );
            server.url
        }
        Ok(Err(e)) => panic!(
            "{} is needed for this test: nothing answers at {} and {e}",
            c.name, c.default_url
        ),
        Err(e) => panic!("starting a throwaway {} panicked: {e}", c.name),
    }
}

async fn mysql_answers(url: &str) -> bool {
    use sqlx::Connection;
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sqlx::MySqlConnection::connect(url)).await,
        Ok(Ok(_))
    )
}

/// Whether a Postgres server accepts a connection at `url` within a few seconds.
async fn answers(url: &str) -> bool {
    use sqlx::Connection;
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url)).await,
        Ok(Ok(_))
    )
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A server a test database lives on.
#[derive(Debug, Clone, Copy)]
enum Server {
    Postgres,
    MariaDb,
}

/// A database created on a server for one test; dropped (`DROP DATABASE`) with this value.
struct ServerDb {
    server: Server,
    admin_url: String,
    name: String,
}

impl ServerDb {
    /// Creates database `name` through `admin_url`.
    ///
    /// # Panics
    /// When the server is unreachable, with what to start or install.
    async fn create(server: Server, admin_url: String, name: String) -> ServerDb {
        let create = sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"));
        match server {
            Server::Postgres => {
                let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "Postgres is needed for this test and is unreachable at {admin_url}: {e}\n{}",
                        cluster::INSTALL_HINT
                    )
                });
                sqlx::query(create)
                    .execute(&admin)
                    .await
                    .expect("CREATE DATABASE");
                admin.close().await;
            }
            Server::MariaDb => {
                let admin = sqlx::MySqlPool::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "MariaDB is needed for this test and is unreachable at {admin_url}: {e}\n{}",
                        cluster::MARIADB_INSTALL_HINT
                    )
                });
                sqlx::query(create)
                    .execute(&admin)
                    .await
                    .expect("CREATE DATABASE");
                admin.close().await;
            }
        }
        ServerDb {
            server,
            admin_url,
            name,
        }
    }

    /// Its URL.
    fn url(&self) -> String {
        replace_database(&self.admin_url, &self.name)
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let (server, admin_url, name) = (self.server, self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                match server {
                    Server::Postgres => {
                        if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                        }
                    }
                    Server::MariaDb => {
                        if let Ok(admin) = sqlx::MySqlPool::connect(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name}");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

/// The MariaDB/MySQL server data-step tests use, unless `WEIR_TEST_MYSQL_URL` names another.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/";

/// Which database a data step talks to in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataBackend {
    /// A SQLite file.
    Sqlite,
    /// A database on the test Postgres server.
    Postgres,
    /// A database on the test MariaDB server.
    MariaDb,
}

/// A real, empty database for data steps (a connection's target), dropped afterwards.
pub struct TestDataDb {
    /// Its backend.
    pub backend: DataBackend,
    /// Its URL, as a `[connections]` entry takes it.
    pub url: String,
    /// Held for its `Drop`: the folder or the database goes with the test.
    _cleanup: Cleanup,
}

impl TestDataDb {
    /// A fresh database of `backend`.
    ///
    /// # Panics
    /// When the server is unreachable, with what to start or install.
    pub async fn new(backend: DataBackend) -> TestDataDb {
        let name = format!(
            "weir_data_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        match backend {
            DataBackend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}", dir.path().join("data.db").display());
                TestDataDb {
                    backend,
                    url,
                    _cleanup: Cleanup::Sqlite(dir),
                }
            }
            DataBackend::Postgres | DataBackend::MariaDb => {
                let (server, admin_url) = if backend == DataBackend::Postgres {
                    (Server::Postgres, postgres_admin_url().await)
                } else {
                    (Server::MariaDb, mysql_admin_url().await)
                };
                let db = ServerDb::create(server, admin_url, name).await;
                TestDataDb {
                    backend,
                    url: db.url(),
                    _cleanup: Cleanup::Server(db),
                }
            }
        }
    }
}

/// One async test body, one `#[tokio::test]` per backend: the one way weir's tests run the
/// same body on every database (atuin's per-backend conformance tests are the model). It
/// expands to a module named after the test with a test function per backend, so each backend
/// passes or fails on its own and a failure names its backend.
///
/// - `per_backend!(name, |db: TestDb| { ... })`: weir's own database, on SQLite and on
///   Postgres (`sqlite`, `postgres`), each given a fresh [`TestDb`];
/// - `per_backend!(name, |backend: DataBackend| { ... })`: a data step's database, on SQLite,
///   Postgres and MariaDB (`sqlite`, `postgres`, `mariadb`), each given its [`DataBackend`];
/// - `per_backend!(name, [postgres: Postgres, mariadb: MariaDb], |backend: DataBackend| ...)`:
///   the data backends listed.
#[macro_export]
macro_rules! per_backend {
    ($(#[$meta:meta])* $name:ident, |$db:ident: TestDb| $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::TestDb::sqlite().await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $db = $crate::TestDb::postgres().await;
                $body
            }
        }
    };
    ($(#[$meta:meta])* $name:ident, |$backend:ident: DataBackend| $body:block) => {
        $crate::per_backend!(
            $(#[$meta])* $name,
            [sqlite: Sqlite, postgres: Postgres, mariadb: MariaDb],
            |$backend: DataBackend| $body
        );
    };
    ($(#[$meta:meta])* $name:ident, [$($test:ident: $variant:ident),+ $(,)?], |$backend:ident: DataBackend| $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let $backend = $crate::DataBackend::$variant;
                    $body
                }
            )+
        }
    };
}

/// Parses a DAG for a test.
///
/// # Panics
/// When the text is not a valid DAG (the test is wrong).
pub fn dag(yaml: &str) -> weir_model::Dag {
    let parsed = weir_model::parse_dag(yaml, None);
    parsed
        .dag
        .unwrap_or_else(|| panic!("test DAG is invalid: {:#?}", parsed.diagnostics))
}

#[cfg(test)]
mod tests {
    use super::{cluster, replace_database};

    /// Stops a throwaway server and waits (30 s at most) for its folder to be gone.
    fn stop_and_expect_removed(c: &cluster::Cluster) {
        cluster::stop(c);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while c.dir.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} stayed after the server stopped",
                c.dir.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// A throwaway cluster from the machine's binaries serves connections on its own port and
    /// leaves nothing behind once stopped.
    #[test]
    fn a_throwaway_cluster_serves_and_is_removed_when_stopped() {
        let c = cluster::start().expect("throwaway cluster");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let port: String = rt.block_on(async {
            let pool = sqlx::PgPool::connect(&c.url).await.expect("connect");
            sqlx::query("CREATE DATABASE weir_throwaway_check")
                .execute(&pool)
                .await
                .expect("create database");
            let port = sqlx::query_scalar("SHOW port")
                .fetch_one(&pool)
                .await
                .expect("port");
            pool.close().await;
            port
        });
        assert!(c.url.contains(&format!(":{port}/")), "{} vs {port}", c.url);
        assert!(c.dir.join("data/PG_VERSION").is_file());
        stop_and_expect_removed(&c);
    }

    /// Likewise a throwaway MariaDB: root without a password on its own port, gone once stopped.
    #[test]
    fn a_throwaway_mariadb_serves_and_is_removed_when_stopped() {
        let c = cluster::start_mariadb().expect("throwaway MariaDB");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let port: u16 = rt.block_on(async {
            let pool = sqlx::MySqlPool::connect(&c.url).await.expect("connect");
            sqlx::query("CREATE DATABASE weir_throwaway_check")
                .execute(&pool)
                .await
                .expect("create database");
            let port = sqlx::query_scalar("SELECT @@port")
                .fetch_one(&pool)
                .await
                .expect("port");
            pool.close().await;
            port
        });
        assert!(c.url.contains(&format!(":{port}/")), "{} vs {port}", c.url);
        assert!(c.dir.join("data/mysql").is_dir());
        stop_and_expect_removed(&c);
    }

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
