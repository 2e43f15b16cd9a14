//! `kind: sql`: the (rendered) statements on a data connection, in one transaction.
//!
//! Each entry of `sql` may hold several statements (a file usually does); entries run in
//! order through the driver's simple-query path, all inside one transaction, so a failure
//! leaves the database as it was. With `fetch: first_row`, the first row the last entry returns
//! becomes the outputs: column name → its text (`null` for NULL), as shell outputs are text.

use weir_model::spec::{Fetch, SqlStep};

use super::sqltext::row_map;
use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs a rendered `sql` step (its `file` already read into `sql`).
pub async fn run(step: &SqlStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    let pool = match conns.pool(&step.conn).await {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    log.note(format!(
        "running {} statement block(s) on `{}` in one transaction",
        step.sql.len(),
        step.conn
    ));
    let started = std::time::Instant::now();
    let result = match &pool {
        DataPool::Postgres(p) => execute(p, step).await,
        DataPool::MySql(p) => execute(p, step).await,
        DataPool::Sqlite(p) => execute(p, step).await,
    };
    match result {
        Ok(outputs) => {
            log.note(format!(
                "committed in {:.3}s ({} output(s))",
                started.elapsed().as_secs_f64(),
                outputs.len()
            ));
            TaskOutcome::Succeeded { outputs }
        }
        Err((index, e)) => {
            let error = format!(
                "statement block {} of {} failed, transaction rolled back: {}",
                index + 1,
                step.sql.len(),
                crate::conn::db_error(&e)
            );
            log.note(&error);
            TaskOutcome::Failed {
                // A statement that failed fails again; a lost connection may not.
                retryable: crate::conn::is_transient(&e),
                error,
            }
        }
    }
}

type Outputs = serde_json::Map<String, serde_json::Value>;

/// The statements in one transaction; on failure, which block failed.
async fn execute<DB>(pool: &sqlx::Pool<DB>, step: &SqlStep) -> Result<Outputs, (usize, sqlx::Error)>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> Option<String>: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut tx = crate::conn::begin_write(pool).await.map_err(|e| (0, e))?;
    let mut outputs = Outputs::new();
    let last = step.sql.len().saturating_sub(1);
    for (i, block) in step.sql.iter().enumerate() {
        let query = sqlx::raw_sql(sqlx::AssertSqlSafe(block.clone()));
        if i == last && step.fetch == Fetch::FirstRow {
            let rows = query.fetch_all(&mut *tx).await.map_err(|e| (i, e))?;
            if let Some(row) = rows.first() {
                outputs = row_map(row).map_err(|e| (i, e))?;
            }
        } else {
            query.execute(&mut *tx).await.map_err(|e| (i, e))?;
        }
    }
    tx.commit().await.map_err(|e| (last, e))?;
    Ok(outputs)
}
