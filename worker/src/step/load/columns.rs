//! The columns of a load: from `columns`, from a CSV header or the first JSON record, or from
//! the target table, each with its type; and the SQL type each becomes.

use super::*;

/// The columns loaded, in order.
#[derive(Clone)]
pub(super) struct Columns {
    pub(super) names: Vec<String>,
    pub(super) specs: Vec<ColumnSpec>,
}

/// `columns` as written, if given.
pub(super) fn given_columns(step: &LoadStep) -> Option<Columns> {
    step.columns.as_ref().map(|cols| Columns {
        names: cols.keys().cloned().collect(),
        specs: cols.values().cloned().collect(),
    })
}

/// The loaded columns of a file source: `columns` as written, or the first file's own: a CSV
/// header's or the first JSON record's keys (as text), a Parquet file's schema (typed).
pub(super) async fn file_columns(
    step: &LoadStep,
    files: &[SourceFile],
    format: SourceFormat,
    stores: &Stores,
) -> Result<Columns, LoadError> {
    if let Some(given) = given_columns(step) {
        return Ok(given);
    }
    let first = files[0].clone();
    if format == SourceFormat::Parquet {
        return parquet::schema_columns(&first, stores).await;
    }
    let (step, stores, handle) = (
        step.clone(),
        stores.clone(),
        tokio::runtime::Handle::current(),
    );
    let names = tokio::task::spawn_blocking(move || {
        first_names(&step, first.open(&stores, &handle)?, format, &first.label)
    })
    .await
    .map_err(|e| LoadError::fatal(format!("reading the first file's columns: {e}")))??;
    Ok(Columns {
        specs: names
            .iter()
            .map(|_| ColumnSpec {
                ty: ColumnType::Text,
                not_null: false,
                from: None,
                format: None,
            })
            .collect(),
        names,
    })
}

/// The column names a CSV header or the first JSON record gives.
fn first_names(
    step: &LoadStep,
    mut input: Box<dyn std::io::BufRead + Send>,
    format: SourceFormat,
    name: &str,
) -> Result<Vec<String>, LoadError> {
    use std::io::BufRead as _;
    Ok(match format {
        SourceFormat::Csv => {
            if step.source.header == Some(false) {
                return Err(LoadError::fatal(
                    "a csv source without a header needs `columns` (fields are matched by position)",
                ));
            }
            csv_rows::header(step, input, name)?
        }
        SourceFormat::Jsonl => {
            let mut line = String::new();
            loop {
                line.clear();
                let n = input
                    .read_line(&mut line)
                    .map_err(|e| LoadError::fatal(format!("{name}: {e}")))?;
                if n == 0 || !line.trim().is_empty() {
                    break;
                }
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
                _ => {
                    return Err(LoadError::fatal(format!(
                        "{name}: the first line is not a JSON object; give `columns`"
                    )));
                }
            }
        }
        SourceFormat::Json => match JsonArray::new(input).next_element() {
            Ok(Some((_, serde_json::Value::Object(m)))) => m.keys().cloned().collect(),
            Ok(_) => {
                return Err(LoadError::fatal(format!(
                    "{name}: the first element is not a JSON object; give `columns`"
                )));
            }
            Err(e) => return Err(LoadError::fatal(format!("{name}: {e}"))),
        },
        SourceFormat::Parquet => {
            return Err(LoadError::fatal(
                "a Parquet file's columns come from its schema",
            ));
        }
    })
}

/// Columns named like the source's, typed from `types` (text where a name is not there).
pub(super) fn typed_columns(
    source: &[String],
    types: &[(String, ColumnType)],
) -> Result<Columns, LoadError> {
    if source.is_empty() {
        // No rows came: the target's own columns (nothing will be written but, with `replace`
        // or `truncate_insert`, its old rows go).
        if types.is_empty() {
            return Err(LoadError::fatal(
                "the source returned no rows, `columns` is not given and the target does not exist: the table's shape is unknown",
            ));
        }
        return Ok(Columns {
            names: types.iter().map(|(n, _)| n.clone()).collect(),
            specs: types
                .iter()
                .map(|(_, ty)| ColumnSpec {
                    ty: *ty,
                    not_null: false,
                    from: None,
                    format: None,
                })
                .collect(),
        });
    }
    Ok(Columns {
        names: source.to_vec(),
        specs: source
            .iter()
            .map(|n| ColumnSpec {
                ty: types
                    .iter()
                    .find(|(name, _)| name == n)
                    .map_or(ColumnType::Text, |(_, ty)| *ty),
                not_null: false,
                from: None,
                format: None,
            })
            .collect(),
    })
}

/// A table's column types as load types (empty when the table does not exist).
pub(super) async fn table_types(
    pool: &DataPool,
    table: &str,
) -> Result<Vec<(String, ColumnType)>, LoadError> {
    let d = pool.dialect();
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, table),
    };
    let literal = |v: &str| {
        d.literal(&serde_json::Value::String(v.to_owned()))
            .map_err(LoadError::fatal)
    };
    let sql = match d {
        Dialect::Postgres => format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = {} AND table_schema = {} ORDER BY ordinal_position",
            literal(name)?,
            schema.map_or(Ok("current_schema()".to_owned()), literal)?
        ),
        Dialect::MySql => format!(
            "SELECT column_name AS column_name, data_type AS data_type FROM information_schema.columns WHERE table_name = {} AND table_schema = {} ORDER BY ordinal_position",
            literal(name)?,
            schema.map_or(Ok("DATABASE()".to_owned()), literal)?
        ),
        Dialect::Sqlite => format!(
            "SELECT name AS column_name, type AS data_type FROM pragma_table_info({}) ORDER BY cid",
            literal(name)?
        ),
    };
    let found = crate::step::sqltext::text_rows(pool, &sql, 10_000).await?;
    Ok(found
        .iter()
        .filter_map(|r| {
            let get = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            Some((
                get("column_name")?,
                column_type(&get("data_type")?.to_ascii_lowercase()),
            ))
        })
        .collect())
}

/// A database's name of a column type, as a load column type.
pub(super) fn column_type(t: &str) -> ColumnType {
    match t {
        "integer" | "int" | "int4" | "smallint" | "tinyint" | "mediumint" => ColumnType::Int,
        "bigint" | "int8" => ColumnType::Bigint,
        "real" | "double precision" | "double" | "float" | "float8" => ColumnType::Float,
        _ if t.starts_with("numeric") || t.starts_with("decimal") => ColumnType::Numeric,
        "boolean" | "bool" => ColumnType::Bool,
        "date" => ColumnType::Date,
        "timestamp with time zone" | "timestamptz" => ColumnType::Timestamptz,
        "timestamp without time zone" | "timestamp" | "datetime" => ColumnType::Timestamp,
        "json" | "jsonb" => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

pub(super) fn sql_type(dialect: Dialect, ty: ColumnType) -> &'static str {
    match (dialect, ty) {
        (Dialect::Postgres, ColumnType::Int) => "INTEGER",
        (Dialect::Postgres, ColumnType::Bigint) => "BIGINT",
        (Dialect::Postgres, ColumnType::Float) => "DOUBLE PRECISION",
        (Dialect::Postgres, ColumnType::Numeric) => "NUMERIC",
        (Dialect::Postgres, ColumnType::Text) => "TEXT",
        (Dialect::Postgres, ColumnType::Bool) => "BOOLEAN",
        (Dialect::Postgres, ColumnType::Date) => "DATE",
        (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMP",
        (Dialect::Postgres, ColumnType::Timestamptz) => "TIMESTAMPTZ",
        (Dialect::Postgres, ColumnType::Json) => "JSONB",
        (Dialect::MySql, ColumnType::Int) => "INT",
        (Dialect::MySql, ColumnType::Bigint) => "BIGINT",
        (Dialect::MySql, ColumnType::Float) => "DOUBLE",
        (Dialect::MySql, ColumnType::Numeric) => "DECIMAL(38, 10)",
        (Dialect::MySql, ColumnType::Text) => "TEXT",
        (Dialect::MySql, ColumnType::Bool) => "BOOLEAN",
        (Dialect::MySql, ColumnType::Date) => "DATE",
        (Dialect::MySql, ColumnType::Timestamp | ColumnType::Timestamptz) => "DATETIME(6)",
        (Dialect::MySql, ColumnType::Json) => "JSON",
        (Dialect::Sqlite, ColumnType::Int | ColumnType::Bigint | ColumnType::Bool) => "INTEGER",
        (Dialect::Sqlite, ColumnType::Float) => "REAL",
        (Dialect::Sqlite, ColumnType::Numeric) => "NUMERIC",
        (Dialect::Sqlite, _) => "TEXT",
    }
}
