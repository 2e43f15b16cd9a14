//! `kind: export`: a table or a query streamed to a CSV (with a header) or JSON-lines file.
//!
//! Rows are streamed from the database to the file (memory holds one row). The file is written
//! next to its final name and renamed into place at the end, so a failed or killed export never
//! leaves a partial file where a reader expects a complete one. Values are written as the
//! database prints them; NULL is an empty field in CSV and `null` in JSON lines (CSV cannot tell
//! NULL from an empty string: use JSON lines for an exact round trip of such tables).

use crate::step::db::SqlDb;
use std::io::Write;
use std::path::PathBuf;

use weir_model::spec::{ExportFormat, ExportStep};

use super::sqltext::{column_names, row_values};
use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs a rendered `export` step.
pub async fn run(step: &ExportStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    let pool = match conns.pool(&step.conn).await {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let sql = match (&step.table, &step.query) {
        (Some(t), None) => match pool.dialect().ident(t) {
            Ok(t) => format!("SELECT * FROM {t}"),
            Err(e) => return failed(e.0, false),
        },
        (None, Some(q)) => q.clone(),
        _ => return failed("export needs `table` or `query`".into(), false),
    };
    let to = PathBuf::from(&step.to);
    let partial = super::partial_path(&to);
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return failed(format!("creating {}: {e}", parent.display()), true);
    }
    let file = match std::fs::File::create(&partial) {
        Ok(f) => f,
        Err(e) => return failed(format!("creating {}: {e}", partial.display()), true),
    };
    let mut out = Output::new(step.format, std::io::BufWriter::new(file));
    let streamed = match &pool {
        DataPool::Postgres(p) => stream(p, &sql, &mut out).await,
        DataPool::MySql(p) => stream(p, &sql, &mut out).await,
        DataPool::Sqlite(p) => stream(p, &sql, &mut out).await,
    };
    let finished = streamed.and_then(|()| out.finish());
    match finished {
        Ok((rows, bytes)) => {
            if let Err(e) = std::fs::rename(&partial, &to) {
                let _ = std::fs::remove_file(&partial);
                return failed(format!("moving the export to {}: {e}", to.display()), true);
            }
            log.note(format!(
                "exported {rows} row(s), {bytes} bytes to {}",
                to.display()
            ));
            let mut outputs = serde_json::Map::new();
            outputs.insert("rows".into(), rows.into());
            outputs.insert("bytes".into(), bytes.into());
            outputs.insert("path".into(), to.display().to_string().into());
            TaskOutcome::Succeeded { outputs }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            failed(e, false)
        }
    }
}

fn failed(error: String, retryable: bool) -> TaskOutcome {
    TaskOutcome::Failed { error, retryable }
}

/// The file being written, and what went into it.
struct Output {
    format: ExportFormat,
    csv: Option<csv::Writer<std::io::BufWriter<std::fs::File>>>,
    jsonl: Option<std::io::BufWriter<std::fs::File>>,
    rows: u64,
    header_written: bool,
}

impl Output {
    fn new(format: ExportFormat, w: std::io::BufWriter<std::fs::File>) -> Output {
        match format {
            ExportFormat::Csv => Output {
                format,
                csv: Some(
                    csv::WriterBuilder::new()
                        .terminator(csv::Terminator::Any(b'\n'))
                        .from_writer(w),
                ),
                jsonl: None,
                rows: 0,
                header_written: false,
            },
            ExportFormat::Jsonl => Output {
                format,
                csv: None,
                jsonl: Some(w),
                rows: 0,
                header_written: false,
            },
        }
    }

    fn row(&mut self, names: &[String], values: Vec<Option<String>>) -> Result<(), String> {
        match self.format {
            ExportFormat::Csv => {
                let w = self.csv.as_mut().ok_or("writer gone")?;
                if !self.header_written {
                    w.write_record(names).map_err(|e| e.to_string())?;
                    self.header_written = true;
                }
                w.write_record(values.iter().map(|v| v.as_deref().unwrap_or("")))
                    .map_err(|e| e.to_string())?;
            }
            ExportFormat::Jsonl => {
                let w = self.jsonl.as_mut().ok_or("writer gone")?;
                let object: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .cloned()
                    .zip(
                        values
                            .into_iter()
                            .map(|v| v.map_or(serde_json::Value::Null, serde_json::Value::String)),
                    )
                    .collect();
                serde_json::to_writer(&mut *w, &object).map_err(|e| e.to_string())?;
                w.write_all(b"\n").map_err(|e| e.to_string())?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Flushes and syncs the file; returns (rows, bytes).
    fn finish(self) -> Result<(u64, u64), String> {
        let file = match (self.csv, self.jsonl) {
            (Some(w), _) => w
                .into_inner()
                .map_err(|e| e.to_string())?
                .into_inner()
                .map_err(|e| e.to_string())?,
            (None, Some(w)) => w.into_inner().map_err(|e| e.to_string())?,
            (None, None) => return Err("writer gone".into()),
        };
        file.sync_all().map_err(|e| e.to_string())?;
        let bytes = file.metadata().map_err(|e| e.to_string())?.len();
        Ok((self.rows, bytes))
    }
}

async fn stream<DB>(pool: &sqlx::Pool<DB>, sql: &str, out: &mut Output) -> Result<(), String>
where
    DB: SqlDb,
{
    use futures_util::TryStreamExt;
    let db = |e: sqlx::Error| crate::conn::db_error(&e);
    let mut conn = pool.acquire().await.map_err(db)?;
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(DB::on(&mut *conn));
    let mut names: Option<Vec<String>> = None;
    while let Some(row) = rows.try_next().await.map_err(db)? {
        let names = names.get_or_insert_with(|| column_names(&row));
        let values = row_values::<DB>(&row).map_err(db)?;
        out.row(names, values)?;
    }
    Ok(())
}
