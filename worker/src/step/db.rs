//! What the worker's SQL code needs of a database, said once. Code that runs on Postgres,
//! MySQL and SQLite alike is generic over `DB: SqlDb` and reaches sqlx through these functions;
//! the sqlx bounds that make them work are written in one place, the blanket impl below, and
//! hold for every database weir connects to.
//!
//! (Rust does not carry a trait's where-clauses to its users, so a plain trait alias would not
//! do: each generic function would have to repeat them.)

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::load::Value;

/// A database the worker's SQL code runs on: a connection becomes an executor, the values the
/// code binds encode, the columns it reads decode. Implemented for every sqlx database that
/// has them (Postgres, MySQL, SQLite).
pub(crate) trait SqlDb: sqlx::Database<Arguments: IntoArguments<Self>> {
    /// A connection (a pooled one, or a transaction, dereferenced) as the executor of a query.
    fn on(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
    /// A pool as the executor of a query.
    fn pool(pool: &sqlx::Pool<Self>) -> impl Executor<'_, Database = Self>;

    /// Text to bind.
    fn text(v: String) -> impl for<'q> Encode<'q, Self> + Type<Self>;
    /// Borrowed text to bind.
    fn str(v: &str) -> impl Encode<'_, Self> + Type<Self>;
    /// A 64-bit integer to bind.
    fn int(v: i64) -> impl for<'q> Encode<'q, Self> + Type<Self>;
    /// A 32-bit integer to bind.
    fn int32(v: i32) -> impl for<'q> Encode<'q, Self> + Type<Self>;
    /// A point in time to bind.
    fn time(v: DateTime<Utc>) -> impl for<'q> Encode<'q, Self> + Type<Self>;
    /// Binds a load's typed value (`None`: NULL) as the next parameter of `q`.
    fn push_value(q: &mut sqlx::QueryBuilder<Self>, v: Value);

    /// Column `i` of `row` as text (`None`: NULL), whatever its type: the simple-query path
    /// returns text on Postgres and MySQL, and SQLite converts any value to text (unchecked).
    fn get_text(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error>;
    /// Column `i` of `row` as borrowed text (`None`: NULL), whatever its type (unchecked).
    fn get_str(row: &Self::Row, i: usize) -> Result<Option<&str>, sqlx::Error>;
    /// Column `i` of `row` as a 64-bit integer.
    fn get_int(row: &Self::Row, i: usize) -> Result<i64, sqlx::Error>;
    /// Column `i` of `row` as a 32-bit integer.
    fn get_int32(row: &Self::Row, i: usize) -> Result<i32, sqlx::Error>;
}

impl<DB> SqlDb for DB
where
    DB: sqlx::Database<Arguments: IntoArguments<DB>>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'p> &'p sqlx::Pool<DB>: Executor<'p, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<bool>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<NaiveDate>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<NaiveDateTime>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> Option<&'r str>: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn on(conn: &mut DB::Connection) -> impl Executor<'_, Database = DB> {
        conn
    }

    fn pool(pool: &sqlx::Pool<DB>) -> impl Executor<'_, Database = DB> {
        pool
    }

    fn text(v: String) -> impl for<'q> Encode<'q, DB> + Type<DB> {
        v
    }

    fn str(v: &str) -> impl Encode<'_, DB> + Type<DB> {
        v
    }

    fn int(v: i64) -> impl for<'q> Encode<'q, DB> + Type<DB> {
        v
    }

    fn int32(v: i32) -> impl for<'q> Encode<'q, DB> + Type<DB> {
        v
    }

    fn time(v: DateTime<Utc>) -> impl for<'q> Encode<'q, DB> + Type<DB> {
        v
    }

    fn push_value(q: &mut sqlx::QueryBuilder<DB>, v: Value) {
        match v {
            Value::Int(v) => q.push_bind(v),
            Value::BigInt(v) => q.push_bind(v),
            Value::Float(v) => q.push_bind(v),
            Value::Text(v) => q.push_bind(v),
            Value::Bool(v) => q.push_bind(v),
            Value::Date(v) => q.push_bind(v),
            Value::Timestamp(v) => q.push_bind(v),
            Value::TimestampTz(v) => q.push_bind(v),
        };
    }

    fn get_text(row: &DB::Row, i: usize) -> Result<Option<String>, sqlx::Error> {
        sqlx::Row::try_get_unchecked(row, i)
    }

    fn get_str(row: &DB::Row, i: usize) -> Result<Option<&str>, sqlx::Error> {
        sqlx::Row::try_get_unchecked(row, i)
    }

    fn get_int(row: &DB::Row, i: usize) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(row, i)
    }

    fn get_int32(row: &DB::Row, i: usize) -> Result<i32, sqlx::Error> {
        sqlx::Row::try_get(row, i)
    }
}
