//! weir-testkit: helpers for weir's tests (publish = false).
//!
//! - [`TestDb`]: a real, empty metadata database: a SQLite file in a temporary folder, or a
//!   fresh database on the Postgres server at `WEIR_TEST_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards. Never a mock; when
//!   Postgres is unreachable, the test fails and says how to start it.
//! - [`both_backends!`]: one test body, run on SQLite and on Postgres.
//! - [`dag`]: parses a DAG from YAML text for tests.

use std::sync::atomic::{AtomicU64, Ordering};

use weir_store::Store;

/// The Postgres server tests use, unless `WEIR_TEST_POSTGRES_URL` names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A real, empty metadata database for one test.
pub struct TestDb {
    /// The store over it, migrated.
    pub store: Store,
    /// Its URL (to start other processes on the same database).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
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
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A migrated, freshly created database on the test Postgres server.
    ///
    /// # Panics
    /// When the server is unreachable, with how to start it.
    pub async fn postgres() -> TestDb {
        let admin_url = std::env::var("WEIR_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!(
            "weir_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "Postgres is needed for this test and is unreachable at {admin_url}: {e}\n\
                 Start the machine's server (`pg_ctlcluster --skip-systemctl-redirect 15 main start`), install one \
                 (`apt-get install postgresql`), or point WEIR_TEST_POSTGRES_URL at a server where the user may CREATE DATABASE."
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("CREATE DATABASE");
        admin.close().await;
        let url = replace_database(&admin_url, &name);
        let store = Store::connect(&url)
            .await
            .expect("Postgres metadata database");
        TestDb {
            store,
            url,
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }
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

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&admin)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Runs one async test body against SQLite and against Postgres: expands to a module with two
/// `#[tokio::test]`s, `sqlite` and `postgres`, each given a fresh [`TestDb`].
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, |$db:ident| $body:block) => {
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
    use super::replace_database;

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
