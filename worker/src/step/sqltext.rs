//! Building SQL for data steps from names and values written in a DAG: identifiers are checked
//! and quoted, never pasted raw; literal values are quoted; rows are read back as text.

use sqlx::{Column, Row};

use crate::conn::DataPool;

/// The SQL dialect of a data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a pool.
    pub fn of(pool: &DataPool) -> Dialect {
        match pool {
            DataPool::Postgres(_) => Dialect::Postgres,
            DataPool::MySql(_) => Dialect::MySql,
            DataPool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// `name` or `schema.name`, each part checked (letters, digits, `_`, `$`; not starting with
    /// a digit) and quoted for this dialect.
    ///
    /// # Errors
    /// A name that is not a plain identifier (it would need quoting the DAG author did not
    /// write, or it is an injection attempt).
    pub fn ident(self, name: &str) -> Result<String, String> {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(format!(
                "`{name}` is not a table or column name (at most schema.name)"
            ));
        }
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let mut chars = part.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            if !ok {
                return Err(format!(
                    "`{name}` is not a plain name (letters, digits, `_`; not starting with a digit)"
                ));
            }
            out.push(match self {
                Dialect::MySql => format!("`{part}`"),
                Dialect::Postgres | Dialect::Sqlite => format!("\"{part}\""),
            });
        }
        Ok(out.join("."))
    }

    /// A JSON value as a SQL literal: numbers as written, strings quoted (quotes doubled; on
    /// MySQL backslashes too, which it reads as escapes), booleans as `TRUE`/`FALSE`.
    ///
    /// # Errors
    /// Arrays, objects and null, which are not comparable values.
    pub fn literal(self, value: &serde_json::Value) -> Result<String, String> {
        match value {
            serde_json::Value::Number(n) => Ok(n.to_string()),
            serde_json::Value::String(s) => {
                let mut escaped = s.replace('\'', "''");
                if self == Dialect::MySql {
                    escaped = escaped.replace('\\', "\\\\");
                }
                Ok(format!("'{escaped}'"))
            }
            serde_json::Value::Bool(b) => Ok(if *b { "TRUE" } else { "FALSE" }.to_owned()),
            other => Err(format!("{other} is not a number, a string or a boolean")),
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
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> Option<String>: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use futures_util::TryStreamExt;
    let mut conn = pool.acquire().await?;
    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(&mut *conn);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = stream.try_next().await? else {
            break;
        };
        out.push(row_map(&row)?);
    }
    Ok(out)
}

/// A row's values as text, in column order (`None` for NULL). Text of any type: the
/// simple-query path returns text on Postgres and MySQL, and SQLite converts any value to text.
///
/// # Errors
/// A value that cannot be read.
pub fn row_values<R>(row: &R) -> Result<Vec<Option<String>>, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    (0..row.len()).map(|i| row.try_get_unchecked(i)).collect()
}

/// A row's column names, in order.
pub fn column_names<R: Row>(row: &R) -> Vec<String> {
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// A row as column name → text (`null` for NULL).
///
/// # Errors
/// A value that cannot be read.
pub fn row_map<R>(row: &R) -> Result<TextRow, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    Ok(column_names(row)
        .into_iter()
        .zip(row_values(row)?)
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

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(
            Dialect::Postgres.ident("hr.hires").as_deref(),
            Ok("\"hr\".\"hires\"")
        );
        assert_eq!(Dialect::MySql.ident("hires").as_deref(), Ok("`hires`"));
        for bad in ["a b", "1abc", "x;drop table y", "a.b.c", "", "t\"", "a."] {
            assert!(Dialect::Sqlite.ident(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literals_are_quoted_per_dialect() {
        let v = serde_json::json!("O'Brien \\ x");
        assert_eq!(
            Dialect::Postgres.literal(&v).as_deref(),
            Ok("'O''Brien \\ x'")
        );
        assert_eq!(
            Dialect::MySql.literal(&v).as_deref(),
            Ok("'O''Brien \\\\ x'")
        );
        assert_eq!(
            Dialect::Sqlite.literal(&serde_json::json!(2.5)).as_deref(),
            Ok("2.5")
        );
        assert!(Dialect::Sqlite.literal(&serde_json::json!(null)).is_err());
    }
}
