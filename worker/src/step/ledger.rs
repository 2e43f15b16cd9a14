//! Exactly-once effects of writing steps: the commit ledger kept in the target database.
//!
//! A worker can stop between the moment a step's transaction commits in the target and the
//! moment weir's database records the try's outcome (a crash, a kill, a lost metadata
//! connection). The next try would then write everything again: an `append` load twice. So a
//! writing step adds a row to `weir_commits` *in its own transaction*: the row exists exactly
//! when the writes do. Before writing, a try looks for a row left by an earlier try of the same
//! series; when there is one, the writes are already there, and the try records that try's
//! outputs instead of writing again.
//!
//! A series is the tries since the instance was last cleared: a clear asks for the work to be
//! done again, so markers at or below the try number it was cleared at are not adopted.

use crate::step::db::SqlDb;
use sha2::{Digest as _, Sha256};

use super::sqltext::Dialect;
use crate::conn::DataPool;

/// The ledger table's name in each target.
pub const TABLE: &str = "weir_commits";

/// How long markers are kept (they matter only until the try's outcome is recorded).
const KEEP_DAYS: i64 = 30;

type Outputs = serde_json::Map<String, serde_json::Value>;

/// The commit ledger could not be read: why, and whether another try may do better.
#[derive(Debug)]
pub struct LedgerError {
    /// What failed, naming the ledger table.
    pub message: String,
    /// A lost connection or a lock conflict.
    pub retryable: bool,
}

/// The outputs an earlier try of `attempt`'s series committed on `pool` (creating the ledger
/// table when missing), with its try number.
///
/// # Errors
/// The ledger cannot be made or read.
pub async fn committed_before(
    pool: &DataPool,
    attempt: &Attempt,
) -> Result<Option<(i32, Outputs)>, LedgerError> {
    let dialect = pool.dialect();
    crate::with_data_pool!(pool, |p| committed_on(p, dialect, attempt).await).map_err(|e| {
        LedgerError {
            message: format!(
                "reading the commit ledger ({TABLE}): {}",
                crate::conn::db_error(&e)
            ),
            retryable: crate::conn::is_transient(&e),
        }
    })
}

async fn committed_on<DB>(
    pool: &sqlx::Pool<DB>,
    dialect: Dialect,
    attempt: &Attempt,
) -> Result<Option<(i32, Outputs)>, sqlx::Error>
where
    DB: SqlDb,
{
    let mut conn = pool.acquire().await?;
    Attempt::ensure_table::<DB>(dialect, &mut conn).await?;
    attempt.committed::<DB>(&mut conn).await
}

/// The try that runs a writing step, as the ledger knows it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// DAG id.
    pub dag_id: String,
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// Map index (-1 unless mapped).
    pub map_index: i32,
    /// The instance's row id in weir's database (a mapped task expanded again has new rows).
    pub ti_id: i64,
    /// This try.
    pub try_number: i32,
    /// The try number at the instance's last clear: earlier commits are not adopted.
    pub cleared_try: i32,
}

impl Attempt {
    /// The instance's key: a hash of DAG, run, task, map index and row id (a fixed-length key
    /// every database can index).
    fn instance(&self) -> String {
        let digest = Sha256::digest(format!(
            "{}\n{}\n{}\n{}\n{}",
            self.dag_id, self.run_id, self.task_id, self.map_index, self.ti_id
        ));
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Creates the ledger table when it is missing. On MySQL this commits (DDL): call it
    /// before the step's transaction.
    ///
    /// # Errors
    /// The database's.
    pub(crate) async fn ensure_table<DB>(
        dialect: Dialect,
        conn: &mut DB::Connection,
    ) -> Result<(), sqlx::Error>
    where
        DB: SqlDb,
    {
        let (key, text, at) = match dialect {
            Dialect::Postgres => ("TEXT", "TEXT", "TIMESTAMPTZ"),
            Dialect::MySql => ("CHAR(64)", "VARCHAR(255)", "DATETIME(6)"),
            Dialect::Sqlite => ("TEXT", "TEXT", "TEXT"),
        };
        let long = if dialect == Dialect::MySql {
            "MEDIUMTEXT"
        } else {
            "TEXT"
        };
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (instance {key} NOT NULL, try_number INTEGER NOT NULL, \
             dag_id {text} NOT NULL, run_id {text} NOT NULL, task_id {text} NOT NULL, map_index INTEGER NOT NULL, \
             outputs {long} NOT NULL, committed_at {at} NOT NULL, PRIMARY KEY (instance, try_number))"
        );
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(DB::on(conn))
            .await
        {
            Ok(_) => Ok(()),
            // Two first loads into one Postgres database at once: the other one created it.
            Err(sqlx::Error::Database(d))
                if d.code().is_some_and(|c| c == "23505" || c == "42P07") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The outputs an earlier try of this series committed, with its number, if one did.
    ///
    /// # Errors
    /// The database's.
    pub(crate) async fn committed<DB>(
        &self,
        conn: &mut DB::Connection,
    ) -> Result<Option<(i32, Outputs)>, sqlx::Error>
    where
        DB: SqlDb,
    {
        let mut q = sqlx::QueryBuilder::<DB>::new(format!(
            "SELECT try_number, outputs FROM {TABLE} WHERE instance = "
        ));
        q.push_bind(DB::text(self.instance()))
            .push(" AND try_number > ")
            .push_bind(DB::int32(self.cleared_try))
            .push(" AND try_number < ")
            .push_bind(DB::int32(self.try_number))
            .push(" ORDER BY try_number DESC");
        let Some(row) = q.build().fetch_optional(DB::on(conn)).await? else {
            return Ok(None);
        };
        let try_number = DB::get_int32(&row, 0)?;
        let outputs = DB::get_text(&row, 1)?.unwrap_or_default();
        let outputs = match serde_json::from_str(&outputs) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Outputs::new(),
        };
        Ok(Some((try_number, outputs)))
    }

    /// Records, in the step's own transaction, that this try committed with `outputs`; drops
    /// markers older than `KEEP_DAYS` (30).
    ///
    /// # Errors
    /// The database's.
    pub(crate) async fn record<DB>(
        &self,
        conn: &mut DB::Connection,
        outputs: &Outputs,
    ) -> Result<(), sqlx::Error>
    where
        DB: SqlDb,
    {
        let now = chrono::Utc::now();
        let mut prune =
            sqlx::QueryBuilder::<DB>::new(format!("DELETE FROM {TABLE} WHERE committed_at < "));
        prune.push_bind(DB::time(now - chrono::Duration::days(KEEP_DAYS)));
        prune.build().execute(DB::on(&mut *conn)).await?;
        let mut q = sqlx::QueryBuilder::<DB>::new(format!(
            "INSERT INTO {TABLE} (instance, try_number, dag_id, run_id, task_id, map_index, outputs, committed_at) VALUES ("
        ));
        let mut values = q.separated(", ");
        values
            .push_bind(DB::text(self.instance()))
            .push_bind(DB::int32(self.try_number))
            .push_bind(DB::text(self.dag_id.clone()))
            .push_bind(DB::text(self.run_id.clone()))
            .push_bind(DB::text(self.task_id.clone()))
            .push_bind(DB::int32(self.map_index))
            .push_bind(DB::text(
                serde_json::Value::Object(outputs.clone()).to_string(),
            ))
            .push_bind(DB::time(now));
        q.push(")");
        q.build().execute(DB::on(conn)).await?;
        Ok(())
    }
}
