//! The comparisons of `compare_checksum`: two sides (tables, queries or file sets, possibly on
//! two databases) streamed as (key, hash) pairs and matched row by row.

use serde_json::{Value, json};
use weir_model::spec::{CheckSide, CompareChecksumCheck};

use super::{CheckError, Outcome, SAMPLES, parse_db_timestamp, pool_for};
use crate::conn::{Connections, DataPool};
use crate::step::db::SqlDb;

/// A value as both sides of a comparison print it alike: timestamps in RFC 3339 UTC, numbers
/// without trailing fractional zeros, booleans as 1/0 (Postgres prints `t`, MySQL `1`), NULL
/// apart from any text.
pub(super) fn normalize(value: Option<&str>) -> String {
    let Some(t) = value else {
        return "\u{0}NULL".to_owned();
    };
    let looks_numeric = {
        let digits = t.strip_prefix('-').unwrap_or(t);
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
            && digits.chars().filter(|c| *c == '.').count() <= 1
            && digits.chars().any(|c| c.is_ascii_digit())
    };
    if looks_numeric {
        let mut n = t.to_owned();
        if n.contains('.') {
            n = n.trim_end_matches('0').trim_end_matches('.').to_owned();
        }
        let unsigned = n.strip_prefix('-').unwrap_or(&n);
        let unsigned = unsigned.trim_start_matches('0');
        let unsigned = if unsigned.is_empty() || unsigned.starts_with('.') {
            format!("0{unsigned}")
        } else {
            unsigned.to_owned()
        };
        return if n.starts_with('-') && unsigned != "0" {
            format!("-{unsigned}")
        } else {
            unsigned
        };
    }
    match t {
        "t" | "true" | "TRUE" => return "1".to_owned(),
        "f" | "false" | "FALSE" => return "0".to_owned(),
        _ => {}
    }
    if t.len() >= 10
        && t.as_bytes()[4] == b'-'
        && let Some(at) = parse_db_timestamp(t)
    {
        return at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    }
    t.to_owned()
}

/// A row's key (its normalized key columns) and the hash of its other columns.
type Keyed = (String, [u8; 16]);

/// Rows a side hands to the comparison at a time.
const KEYED_CHUNK: usize = 1000;

/// Streams one side's rows, ordered by the key, as (key, hash) chunks to `out`, on a task of its
/// own: both sides are read and hashed at once, and the comparison matches rows as they come.
async fn side_stream(
    side: CheckSide,
    key: Vec<String>,
    columns: Vec<String>,
    pool: DataPool,
    out: tokio::sync::mpsc::Sender<Vec<Keyed>>,
) -> Result<u64, CheckError> {
    let d = pool.dialect();
    let from = match (&side.table, &side.query) {
        (Some(t), None) => d.ident(t)?,
        (None, Some(q)) => format!("({q}) q"),
        _ => {
            return Err(CheckError::Broken(
                "each side needs `table` or `query`".into(),
            ));
        }
    };
    let quoted_key = key
        .iter()
        .map(|k| d.ident(k))
        .collect::<Result<Vec<_>, _>>()?;
    let select = if columns.is_empty() {
        "*".to_owned()
    } else {
        key.iter()
            .chain(columns.iter())
            .map(|c| d.ident(c))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ")
    };
    // In key order on both sides, so that matching rows arrive close together and the rows
    // waiting for their other side stay few.
    let sql = format!(
        "SELECT {select} FROM {from} ORDER BY {}",
        quoted_key.join(", ")
    );
    crate::with_data_pool!(&pool, |p| stream_keyed(p, &sql, &key, &columns, &out).await)
}

/// Where a side's columns are in its rows.
struct Layout {
    /// The key columns' places, in key order.
    key_at: Vec<usize>,
    /// The other compared columns, by name (hashed in name order), with their places.
    others: Vec<(String, usize)>,
}

async fn stream_keyed<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    key: &[String],
    columns: &[String],
    out: &tokio::sync::mpsc::Sender<Vec<Keyed>>,
) -> Result<u64, CheckError>
where
    DB: SqlDb,
{
    use futures_util::TryStreamExt;
    use sqlx::{Column as _, Row as _};
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch(DB::on(&mut *conn));
    let mut layout: Option<Layout> = None;
    let mut chunk = Vec::with_capacity(KEYED_CHUNK);
    let mut count = 0_u64;
    while let Some(row) = rows.try_next().await? {
        let layout = match &layout {
            Some(l) => l,
            None => {
                let names: Vec<String> =
                    row.columns().iter().map(|c| c.name().to_owned()).collect();
                layout.insert(self::layout(&names, key, columns)?)
            }
        };
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            values.push(DB::get_str(&row, i)?);
        }
        chunk.push(keyed(layout, |i| values.get(i).copied().flatten()));
        count += 1;
        if chunk.len() == KEYED_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(KEYED_CHUNK));
            if out.send(full).await.is_err() {
                return Ok(count);
            }
        }
    }
    if !chunk.is_empty() {
        let _ = out.send(chunk).await;
    }
    Ok(count)
}

/// Starts streaming one side's keyed hashes: a table or query on its connection, or files.
async fn start_side(
    side: &CheckSide,
    c: &CompareChecksumCheck,
    conns: &Connections,
    out: tokio::sync::mpsc::Sender<Vec<Keyed>>,
) -> Result<tokio::task::JoinHandle<Result<u64, CheckError>>, CheckError> {
    let (key, columns) = (c.key.clone(), c.columns.clone());
    if let Some(file) = &side.file {
        let rows = crate::step::load::file_rows::open(file, side.format, conns.stores())
            .await
            .map_err(CheckError::Retryable)?;
        return Ok(tokio::spawn(file_keyed(rows, key, columns, out)));
    }
    let pool = pool_for(conns, side.conn.as_deref(), None).await?;
    Ok(tokio::spawn(side_stream(
        side.clone(),
        key,
        columns,
        pool,
        out,
    )))
}

/// A file side's rows as (key, hash) chunks, hashed as a database side's are (the files' rows
/// come in file order: the comparison matches them whatever the order).
async fn file_keyed(
    mut rows: crate::step::load::file_rows::FileRows,
    key: Vec<String>,
    columns: Vec<String>,
    out: tokio::sync::mpsc::Sender<Vec<Keyed>>,
) -> Result<u64, CheckError> {
    let layout = layout(&rows.names, &key, &columns)?;
    let mut count = 0_u64;
    while let Some(batch) = rows.batches.recv().await {
        let Some(batch) = batch.map_err(CheckError::Broken)? else {
            break;
        };
        count += batch.len() as u64;
        let keyed: Vec<Keyed> = batch
            .iter()
            .map(|row| keyed(&layout, |i| row.get(i).and_then(|v| v.as_deref())))
            .collect();
        if out.send(keyed).await.is_err() {
            break;
        }
    }
    Ok(count)
}

/// Where the key and the compared columns are among `names`.
fn layout(names: &[String], key: &[String], columns: &[String]) -> Result<Layout, CheckError> {
    let key_at =
        key.iter()
            .map(|k| {
                names.iter().position(|n| n == k).ok_or_else(|| {
                    CheckError::Broken(format!("key column `{k}` is not in the rows"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
    let mut others: Vec<(String, usize)> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| !key.contains(n) && (columns.is_empty() || columns.contains(n)))
        .map(|(i, n)| (n.clone(), i))
        .collect();
    others.sort();
    Ok(Layout { key_at, others })
}

/// A row's normalized key and the hash of its other compared columns (by name).
fn keyed<'a>(layout: &Layout, value: impl Fn(usize) -> Option<&'a str>) -> Keyed {
    use sha2::{Digest, Sha256};
    let mut key_text = String::new();
    for (n, i) in layout.key_at.iter().enumerate() {
        if n > 0 {
            key_text.push('\u{1f}');
        }
        key_text.push_str(&normalize(value(*i)));
    }
    let mut hasher = Sha256::new();
    for (name, i) in &layout.others {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(normalize(value(*i)).as_bytes());
        hasher.update(b"\x1f");
    }
    let digest = hasher.finalize();
    let mut hash = [0_u8; 16];
    hash.copy_from_slice(&digest[..16]);
    (key_text, hash)
}

/// Row-level comparison of two tables (or queries, or file sets), possibly on two databases: keys missing
/// from the target, extra in the target, and rows whose other columns differ. Values are
/// compared as normalized text (see `normalize`). Both sides are read at once, each in key
/// order; a row waits in memory only until its other side comes (with keys ordered alike on
/// both sides, a few; at worst, one side's keys and 16-byte hashes).
pub(super) async fn compare_checksum(
    c: &CompareChecksumCheck,
    conns: &Connections,
) -> Result<Outcome, CheckError> {
    if c.key.is_empty() {
        return Err(CheckError::Broken("`key` is empty".into()));
    }
    let (source_tx, mut source_rx) = tokio::sync::mpsc::channel(4);
    let (target_tx, mut target_rx) = tokio::sync::mpsc::channel(4);
    let source = start_side(&c.source, c, conns, source_tx).await?;
    let target = start_side(&c.target, c, conns, target_tx).await?;
    // Rows seen on one side only so far: key → (from the source?, hash).
    let mut waiting: std::collections::HashMap<String, (bool, [u8; 16])> =
        std::collections::HashMap::new();
    let mut changed = Vec::new();
    let mut changed_count = 0_u64;
    let (mut source_open, mut target_open) = (true, true);
    while source_open || target_open {
        let (from_source, chunk) = tokio::select! {
            chunk = source_rx.recv(), if source_open => (true, chunk),
            chunk = target_rx.recv(), if target_open => (false, chunk),
        };
        let Some(chunk) = chunk else {
            if from_source {
                source_open = false;
            } else {
                target_open = false;
            }
            continue;
        };
        for (key, hash) in chunk {
            match waiting.remove(&key) {
                Some((side, other)) if side != from_source => {
                    if other != hash {
                        changed_count += 1;
                        if changed.len() < SAMPLES {
                            changed.push(key);
                        }
                    }
                }
                // A key twice on one side: the later row counts (as a map would keep it).
                _ => {
                    waiting.insert(key, (from_source, hash));
                }
            }
        }
        tokio::task::consume_budget().await;
    }
    let side = |r: Result<Result<u64, CheckError>, tokio::task::JoinError>| {
        r.map_err(|e| CheckError::Broken(format!("a side of the comparison stopped: {e}")))?
    };
    let (source_rows, target_rows) = (side(source.await)?, side(target.await)?);
    let (mut missing, mut extra): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let (mut missing_count, mut extra_count) = (0_u64, 0_u64);
    for (key, (from_source, _)) in waiting {
        if from_source {
            missing_count += 1;
            missing.push(key);
        } else {
            extra_count += 1;
            extra.push(key);
        }
    }
    for list in [&mut missing, &mut changed, &mut extra] {
        list.sort();
    }
    let samples: Vec<Value> = missing
        .iter()
        .map(|k| json!({"key": k, "problem": "missing in target"}))
        .chain(
            extra
                .iter()
                .map(|k| json!({"key": k, "problem": "extra in target"})),
        )
        .chain(
            changed
                .iter()
                .map(|k| json!({"key": k, "problem": "changed"})),
        )
        .take(SAMPLES)
        .collect();
    Ok(Outcome {
        passed: missing_count == 0 && extra_count == 0 && changed_count == 0,
        observed: json!({
            "source_rows": source_rows,
            "target_rows": target_rows,
            "missing": missing_count,
            "extra": extra_count,
            "changed": changed_count,
        }),
        samples,
    })
}
