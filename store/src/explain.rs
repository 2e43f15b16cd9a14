//! The plans of the hot-path statements, so a test can check they stay index-driven however
//! much history the tables hold (Airflow's scheduler slows to a crawl at 100k runs).

use chrono::Utc;
use sqlx::Row;

use crate::db::Db;
use crate::run::{ACTIVE_RUNS_SQL, LAST_SCHEDULED_SQL};
use crate::task::{CLAIM_WINDOW, DUE_RETRIES_WHERE, EXPIRED_LEASES_WHERE, NEXT_RETRY_DUE_SQL};
use crate::{Result, Store};

/// The candidates of a claim (`weir_claim` reads them twice); the planner inlines the function,
/// so its `EXPLAIN` is the plan of the statement inside.
const CLAIM_CANDIDATES_SQL: &str = "SELECT * FROM weir_claim_candidates($1, $2, $3, $4, $5)";

impl Store {
    /// Postgres only (empty on SQLite): `(statement, EXPLAIN output)` for each statement the
    /// scheduler and workers run on every pass or claim, with representative parameters.
    ///
    /// # Errors
    /// Database failures.
    pub async fn explain_hot_path(&self) -> Result<Vec<(&'static str, String)>> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(Vec::new());
        };
        let now = Utc::now();
        let mut out = Vec::new();
        let plans: Vec<(&'static str, String)> = vec![
            ("active runs", ACTIVE_RUNS_SQL.to_owned()),
            ("last scheduled run", LAST_SCHEDULED_SQL.to_owned()),
            // The claim's reads (`weir_claim`): before the locks, and under them.
            ("claim", CLAIM_CANDIDATES_SQL.to_owned()),
            ("claim (queues)", CLAIM_CANDIDATES_SQL.to_owned()),
            ("claim (locked)", CLAIM_CANDIDATES_SQL.to_owned()),
            (
                "expired leases",
                format!(
                    "SELECT id FROM weir_task_instances WHERE {EXPIRED_LEASES_WHERE} ORDER BY id"
                ),
            ),
            (
                "due retries",
                format!(
                    "SELECT id FROM weir_task_instances WHERE {DUE_RETRIES_WHERE} ORDER BY due_at, id"
                ),
            ),
            ("next retry due", NEXT_RETRY_DUE_SQL.to_owned()),
        ];
        for (name, sql) in plans {
            let rows = if name.starts_with("claim") {
                let queues = match name {
                    "claim (queues)" => vec!["default".to_owned(), "other".to_owned()],
                    _ => vec!["default".to_owned()],
                };
                let locked = (name == "claim (locked)").then(|| vec!["d".to_owned()]);
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .bind(&queues)
                    .bind(16_i64)
                    .bind(16 * CLAIM_WINDOW)
                    .bind(&locked)
                    .bind(locked.as_ref().map(|_| Vec::<String>::new()))
                    .fetch_all(pool)
                    .await?
            } else {
                let q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
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
}
