//! SQL for data steps: the dialect of a pool (names and literals are quoted by
//! [`weir_model::sql::Dialect`]), and rows read back as text.

use crate::step::db::SqlDb;
use sqlx::{Column, Row};

use crate::conn::DataPool;

pub use weir_model::sql::Dialect;

impl DataPool {
    /// The dialect of this pool.
    pub fn dialect(&self) -> Dialect {
        match self {
            DataPool::Postgres(_) => Dialect::Postgres,
            DataPool::MySql(_) => Dialect::MySql,
            DataPool::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// A row as column name → text (`null` for NULL).
pub type TextRow = serde_json::Map<String, serde_json::Value>;

/// Up to `limit` rows of `sql`, each column as its text (the simple-query path returns text on
/// Postgres and MySQL; SQLite converts any value to text).
///
/// # Errors
/// The query fails.
pub async fn text_rows(
    pool: &DataPool,
    sql: &str,
    limit: usize,
) -> Result<Vec<TextRow>, sqlx::Error> {
    match pool {
        DataPool::Postgres(p) => fetch(p, sql, limit).await,
        DataPool::MySql(p) => fetch(p, sql, limit).await,
        DataPool::Sqlite(p) => fetch(p, sql, limit).await,
    }
}

async fn fetch<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    limit: usize,
) -> Result<Vec<TextRow>, sqlx::Error>
where
    DB: SqlDb,
{
    use futures_util::TryStreamExt;
    let mut conn = pool.acquire().await?;
    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(DB::on(&mut *conn));
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = stream.try_next().await? else {
            break;
        };
        out.push(row_map::<DB>(&row)?);
    }
    Ok(out)
}

/// A row's values as text, in column order (`None` for NULL). Text of any type: the
/// simple-query path returns text on Postgres and MySQL, and SQLite converts any value to text.
///
/// # Errors
/// A value that cannot be read.
pub(crate) fn row_values<DB: SqlDb>(row: &DB::Row) -> Result<Vec<Option<String>>, sqlx::Error> {
    (0..row.len()).map(|i| DB::get_text(row, i)).collect()
}

/// A row's column names, in order.
pub fn column_names<R: Row>(row: &R) -> Vec<String> {
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// A row as column name → text (`null` for NULL).
///
/// # Errors
/// A value that cannot be read.
pub(crate) fn row_map<DB: SqlDb>(row: &DB::Row) -> Result<TextRow, sqlx::Error> {
    Ok(column_names(row)
        .into_iter()
        .zip(row_values::<DB>(row)?)
        .map(|(name, value)| {
            (
                name,
                value.map_or(serde_json::Value::Null, serde_json::Value::String),
            )
        })
        .collect())
}

/// The first column of the first row of `sql`, as text.
///
/// # Errors
/// The query fails.
pub async fn scalar(pool: &DataPool, sql: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(text_rows(pool, sql, 1)
        .await?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .and_then(|(_, v)| v.as_str().map(str::to_owned)))
}
