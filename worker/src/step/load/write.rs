//! Writing a batch of rows: [`WriteRows`] carries each database's way (and the sqlx bounds
//! once); MySQL and SQLite take multi-row `INSERT`s.

use super::*;

/// How a database takes a batch of typed rows: Postgres through `COPY`, the others through
/// multi-row `INSERT`s with bound values.
pub(super) trait WriteRows: SqlDb {
    /// Whether [`WriteRows::copy_lines`] works (Postgres).
    const COPY: bool = false;

    /// The rows a statement changed.
    fn affected(result: &Self::QueryResult) -> u64;

    /// Writes rows already in `COPY` CSV form (one line each), as they come from `chunks`,
    /// with one `COPY` that ends when `chunks` closes.
    fn copy_chunks(
        _conn: &mut Self::Connection,
        _into: &str,
        _columns: &str,
        _chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send {
        async { Err(sqlx::Error::Protocol("COPY is Postgres only".into())) }
    }

    fn write_rows(
        conn: &mut Self::Connection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send;
}

impl WriteRows for sqlx::MySql {
    fn affected(result: &sqlx::mysql::MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn write_rows(
        conn: &mut sqlx::MySqlConnection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        insert_values::<sqlx::MySql>(conn, into, columns, rows, casts).await
    }
}

impl WriteRows for sqlx::Sqlite {
    fn affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn write_rows(
        conn: &mut sqlx::SqliteConnection,
        into: &str,
        columns: &str,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        insert_values::<sqlx::Sqlite>(conn, into, columns, rows, casts).await
    }
}

/// Multi-row `INSERT`s with bound values.
pub(super) async fn insert_values<DB>(
    conn: &mut DB::Connection,
    into: &str,
    columns: &str,
    rows: &[&Vec<Value>],
    casts: &[Option<&str>],
) -> Result<(), sqlx::Error>
where
    DB: SqlDb,
{
    // Binds per statement stay under SQLite's 32,766 and MySQL's 65,535.
    let per_statement = (30_000 / casts.len().max(1)).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut q =
            sqlx::QueryBuilder::<DB>::new(format!("INSERT INTO {into} ({columns}) VALUES "));
        for (r, row) in chunk.iter().enumerate() {
            if r > 0 {
                q.push(", ");
            }
            q.push("(");
            for (i, value) in row.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                let cast = casts.get(i).copied().flatten();
                if cast.is_some() {
                    q.push("CAST(");
                }
                DB::push_value(&mut q, value.clone());
                if let Some(c) = cast {
                    q.push(format!(" AS {c})"));
                }
            }
            q.push(")");
        }
        q.build().execute(DB::on(&mut *conn)).await?;
    }
    Ok(())
}
