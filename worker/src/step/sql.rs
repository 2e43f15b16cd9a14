//! `kind: sql`: the (rendered) statements on a data connection, in one transaction.
//!
//! Each entry of `sql` may hold several statements (a file usually does); entries run in
//! order through the driver's simple-query path, all inside one transaction, so a failure
//! leaves the database as it was. With `fetch: first_row`, the first row the last entry returns
//! becomes the outputs: column name → its text (`null` for NULL), as shell outputs are text.

use crate::step::db::SqlDb;
use weir_model::spec::{Fetch, SqlStep};

use super::ledger::{Attempt, committed_before};
use super::sqltext::row_map;
use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs a rendered `sql` step (its `file` already read into `sql`). With `attempt` (a step
/// declared `idempotent: false`) the commit is recorded in the target's ledger, and a commit an
/// earlier try left is adopted instead of running the statements again.
pub async fn run(
    step: &SqlStep,
    attempt: Option<&Attempt>,
    conns: &Connections,
    log: &LogSink,
) -> TaskOutcome {
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
    if let Some(attempt) = attempt {
        match committed_before(&pool, attempt).await {
            Ok(None) => {}
            Ok(Some((earlier, outputs))) => {
                log.note(format!(
                    "try {earlier} committed these statements but its outcome was never recorded: recording it instead of running them again"
                ));
                return TaskOutcome::Succeeded { outputs };
            }
            Err(e) => {
                return TaskOutcome::Failed {
                    error: e.message,
                    retryable: e.retryable,
                };
            }
        }
    }
    let result = match &pool {
        DataPool::Postgres(p) => execute(p, step, attempt).await,
        DataPool::MySql(p) => execute(p, step, attempt).await,
        DataPool::Sqlite(p) => execute(p, step, attempt).await,
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
async fn execute<DB>(
    pool: &sqlx::Pool<DB>,
    step: &SqlStep,
    attempt: Option<&Attempt>,
) -> Result<Outputs, (usize, sqlx::Error)>
where
    DB: SqlDb,
{
    let mut tx = crate::conn::begin_write(pool).await.map_err(|e| (0, e))?;
    let mut outputs = Outputs::new();
    let last = step.sql.len().saturating_sub(1);
    for (i, block) in step.sql.iter().enumerate() {
        let query = sqlx::raw_sql(sqlx::AssertSqlSafe(block.clone()));
        if i == last && step.fetch == Fetch::FirstRow {
            let rows = query
                .fetch_all(DB::on(&mut *tx))
                .await
                .map_err(|e| (i, e))?;
            if let Some(row) = rows.first() {
                outputs = row_map::<DB>(row).map_err(|e| (i, e))?;
            }
        } else {
            query.execute(DB::on(&mut *tx)).await.map_err(|e| (i, e))?;
        }
    }
    if let Some(attempt) = attempt {
        attempt
            .record::<DB>(&mut tx, &outputs)
            .await
            .map_err(|e| (last, e))?;
    }
    tx.commit().await.map_err(|e| (last, e))?;
    Ok(outputs)
}
