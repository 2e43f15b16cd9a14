//! The plans of the hot-path statements, so a test can check they stay index-driven however
//! much history the tables hold (Airflow's scheduler slows to a crawl at 100k runs).

use chrono::Utc;
use sqlx::Row;

use crate::db::Db;
use crate::run::{ACTIVE_RUNS_SQL, LAST_SCHEDULED_SQL};
use crate::task::{
    CLAIM_WINDOW, DUE_RETRIES_ORDER, DUE_RETRIES_WHERE, EXPIRED_LEASES_ORDER, EXPIRED_LEASES_WHERE,
    NEXT_RETRY_DUE_SQL, claim_pick_sqlite,
};
use crate::{Result, Store};

/// The candidates of a claim (`weir_claim` reads them twice); the planner inlines the function,
/// so its `EXPLAIN` is the plan of the statement inside.
const CLAIM_CANDIDATES_SQL: &str = "SELECT * FROM weir_claim_candidates($1, $2, $3, $4, $5)";

/// The statements both backends run as written, by name.
fn shared_statements() -> Vec<(&'static str, String)> {
    vec![
        ("active runs", ACTIVE_RUNS_SQL.to_owned()),
        ("last scheduled run", LAST_SCHEDULED_SQL.to_owned()),
        (
            "expired leases",
            format!(
                "SELECT id FROM weir_task_instances WHERE {EXPIRED_LEASES_WHERE} ORDER BY {EXPIRED_LEASES_ORDER}"
            ),
        ),
        (
            "due retries",
            format!(
                "SELECT id FROM weir_task_instances WHERE {DUE_RETRIES_WHERE} ORDER BY {DUE_RETRIES_ORDER}"
            ),
        ),
        ("next retry due", NEXT_RETRY_DUE_SQL.to_owned()),
    ]
}

impl Store {
    /// `(statement, plan)` for each statement the scheduler and workers run on every pass or
    /// claim, with representative parameters: Postgres's `EXPLAIN`, SQLite's `EXPLAIN QUERY
    /// PLAN` (one line per step).
    ///
    /// # Errors
    /// Database failures.
    pub async fn explain_hot_path(&self) -> Result<Vec<(&'static str, String)>> {
        match &self.db {
            Db::Postgres(pool) => explain_postgres(pool).await,
            Db::Sqlite(pool) => explain_sqlite(pool).await,
        }
    }
}

async fn explain_postgres(pool: &sqlx::PgPool) -> Result<Vec<(&'static str, String)>> {
    let now = Utc::now();
    let mut plans = shared_statements();
    // The claim's reads (`weir_claim`): before the locks, and under them.
    for name in ["claim", "claim (queues)", "claim (locked)"] {
        plans.push((name, CLAIM_CANDIDATES_SQL.to_owned()));
    }
    let mut out = Vec::new();
    for (name, sql) in plans {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
        let rows = if name.starts_with("claim") {
            let queues = match name {
                "claim (queues)" => vec!["default".to_owned(), "other".to_owned()],
                _ => vec!["default".to_owned()],
            };
            let locked = (name == "claim (locked)").then(|| vec!["d".to_owned()]);
            q.bind(&queues)
                .bind(16_i64)
                .bind(16 * CLAIM_WINDOW)
                .bind(&locked)
                .bind(locked.as_ref().map(|_| Vec::<String>::new()))
                .fetch_all(pool)
                .await?
        } else {
            let q = match name {
                "last scheduled run" => q.bind("weir_explain_probe"),
                "expired leases" | "due retries" => q.bind(now),
                _ => q,
            };
            q.fetch_all(pool).await?
        };
        let text = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect::<Vec<_>>()
            .join("\n");
        out.push((name, text));
    }
    Ok(out)
}

/// SQLite plans with the parameters unbound: its planner picks indexes from the statement
/// alone (a partial index's condition must be written in it, not bound).
async fn explain_sqlite(pool: &sqlx::SqlitePool) -> Result<Vec<(&'static str, String)>> {
    let mut plans = shared_statements();
    plans.push(("claim", claim_pick_sqlite(1)));
    plans.push(("claim (queues)", claim_pick_sqlite(2)));
    let mut out = Vec::new();
    for (name, sql) in plans {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(pool)
            .await?;
        let text = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("detail").ok())
            .collect::<Vec<_>>()
            .join("\n");
        out.push((name, text));
    }
    Ok(out)
}
