//! `kind: validate`: data-quality checks. Each check's result is an output, a
//! `{check, passed, observed, samples}` object under `checks`, next to `checks_passed` and
//! `checks_failed`. A failing check with `severity: warn` is reported and does not fail the
//! task; any other failing check fails it (after every check has run). Up to
//! [`SAMPLES`] failing rows are kept per check.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};
use weir_model::spec::{
    AcceptedValuesCheck, Check, CheckSeverity, CheckSide, ColumnsCheck, CompareCountCheck,
    FreshnessCheck, RangeCheck, RejectLimit, RowCountCheck, SqlCheck, ValidateStep,
};

use super::sqltext::{scalar, text_rows};

mod compare;
use crate::conn::{Connections, DataPool};
use crate::log::LogSink;
use crate::outcome::TaskOutcome;
use compare::compare_checksum;

/// Failing rows kept per check (the SPEC's "up to 20").
pub const SAMPLES: usize = 20;

/// One check's result.
struct Outcome {
    passed: bool,
    observed: Value,
    samples: Vec<Value>,
}

/// Runs every check of a rendered `validate` step.
pub async fn run(step: &ValidateStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    let mut results = Vec::new();
    let (mut passed, mut failed, mut failing_errors) = (0_u64, 0_u64, Vec::new());
    for (i, check) in step.checks.iter().enumerate() {
        let name = check.name();
        let severity = severity(check);
        let outcome = match run_check(check, step.conn.as_deref(), conns).await {
            Ok(o) => o,
            Err(CheckError::Retryable(e)) => {
                return TaskOutcome::Failed {
                    error: format!("check {} ({name}): {e}", i + 1),
                    retryable: true,
                };
            }
            Err(CheckError::Broken(e)) => Outcome {
                passed: false,
                observed: json!({ "error": e }),
                samples: Vec::new(),
            },
        };
        let summary = summary(&outcome);
        log.note(format!(
            "check {} {name}: {} ({summary})",
            i + 1,
            if outcome.passed {
                "passed"
            } else if severity == CheckSeverity::Warn {
                "FAILED (warn)"
            } else {
                "FAILED"
            },
        ));
        if outcome.passed {
            passed += 1;
        } else {
            failed += 1;
            if severity == CheckSeverity::Error {
                failing_errors.push(format!("check {} {name}: {summary}", i + 1));
            }
        }
        results.push(json!({
            "check": name,
            "passed": outcome.passed,
            "severity": if severity == CheckSeverity::Warn { "warn" } else { "error" },
            "observed": outcome.observed,
            "samples": outcome.samples,
        }));
    }
    let mut outputs = serde_json::Map::new();
    outputs.insert("checks".into(), Value::Array(results));
    outputs.insert("checks_passed".into(), passed.into());
    outputs.insert("checks_failed".into(), failed.into());
    if failing_errors.is_empty() {
        TaskOutcome::Succeeded { outputs }
    } else {
        TaskOutcome::FailedWithOutputs {
            error: format!(
                "{} check(s) failed: {}",
                failing_errors.len(),
                failing_errors.join("; ")
            ),
            outputs,
            retryable: false,
        }
    }
}

/// A check's result in words: what it observed, and the failing keys (or a few failing rows).
fn summary(outcome: &Outcome) -> String {
    /// Keys named in a message at most.
    const SHOWN: usize = 5;
    let mut text = match &outcome.observed {
        Value::Object(m) => match m.get("error") {
            Some(e) => format!(
                "error: {}",
                e.as_str().map_or_else(|| e.to_string(), str::to_owned)
            ),
            None => m
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        },
        other => format!("observed {other}"),
    };
    if outcome.passed || outcome.samples.is_empty() {
        return text;
    }
    let keys: Vec<String> = outcome
        .samples
        .iter()
        .filter_map(|s| {
            let key = s.get("key")?;
            let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
            Some(match s.get("problem").and_then(Value::as_str) {
                Some(p) => format!("{key} ({p})"),
                None => key,
            })
        })
        .collect();
    if keys.is_empty() {
        let rows: Vec<String> = outcome
            .samples
            .iter()
            .take(2)
            .map(Value::to_string)
            .collect();
        text.push_str(&format!("; failing rows: {}", rows.join(", ")));
    } else {
        text.push_str(&format!(
            "; keys: {}",
            keys.iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if keys.len() > SHOWN {
            text.push_str(&format!(" and {} more in the outputs", keys.len() - SHOWN));
        }
    }
    text
}

fn severity(check: &Check) -> CheckSeverity {
    match check {
        Check::RowCount(c) => c.severity,
        Check::CompareCount(c) => c.severity,
        Check::NotNull(c) | Check::Unique(c) => c.severity,
        Check::AcceptedValues(c) => c.severity,
        Check::Range(c) => c.severity,
        Check::Freshness(c) => c.severity,
        Check::Sql(c) => c.severity,
        Check::CompareChecksum(c) => c.severity,
    }
}

/// Why a check could not run: the database is unreachable (retry the task), or the check
/// itself is wrong (a bad name, a failing query: recorded as a failed check).
enum CheckError {
    Retryable(String),
    Broken(String),
}

impl From<sqlx::Error> for CheckError {
    fn from(e: sqlx::Error) -> CheckError {
        if crate::conn::is_transient(&e) {
            CheckError::Retryable(crate::conn::db_error(&e))
        } else {
            CheckError::Broken(crate::conn::db_error(&e))
        }
    }
}

impl From<String> for CheckError {
    fn from(e: String) -> CheckError {
        CheckError::Broken(e)
    }
}

impl From<weir_model::SqlError> for CheckError {
    fn from(e: weir_model::SqlError) -> CheckError {
        CheckError::Broken(e.0)
    }
}

async fn pool_for(
    conns: &Connections,
    own: Option<&str>,
    default: Option<&str>,
) -> Result<DataPool, CheckError> {
    let name = own.or(default).ok_or_else(|| {
        CheckError::Broken("no connection: set `conn` on the check or on the task".into())
    })?;
    conns.pool(name).await.map_err(|e| {
        if e.retryable() {
            CheckError::Retryable(e.to_string())
        } else {
            CheckError::Broken(e.to_string())
        }
    })
}

async fn run_check(
    check: &Check,
    default: Option<&str>,
    conns: &Connections,
) -> Result<Outcome, CheckError> {
    match check {
        Check::RowCount(c) => match (&c.file, &c.table) {
            (Some(file), _) => {
                let n = file_count(file, c.format, conns).await?;
                Ok(Outcome {
                    passed: c.min.is_none_or(|m| n >= m) && c.max.is_none_or(|m| n <= m),
                    observed: n.into(),
                    samples: Vec::new(),
                })
            }
            (None, Some(table)) => {
                row_count(
                    c,
                    table,
                    &pool_for(conns, c.conn.as_deref(), default).await?,
                )
                .await
            }
            (None, None) => Err(CheckError::Broken(
                "`row_count` needs `table` or `file`".into(),
            )),
        },
        Check::NotNull(c) => not_null(c, &pool_for(conns, c.conn.as_deref(), default).await?).await,
        Check::Unique(c) => unique(c, &pool_for(conns, c.conn.as_deref(), default).await?).await,
        Check::AcceptedValues(c) => {
            accepted_values(c, &pool_for(conns, c.conn.as_deref(), default).await?).await
        }
        Check::Range(c) => range(c, &pool_for(conns, c.conn.as_deref(), default).await?).await,
        Check::Freshness(c) => {
            freshness(c, &pool_for(conns, c.conn.as_deref(), default).await?).await
        }
        Check::Sql(c) => sql(c, &pool_for(conns, c.conn.as_deref(), default).await?).await,
        Check::CompareCount(c) => compare_count(c, conns).await,
        Check::CompareChecksum(c) => compare_checksum(c, conns).await,
    }
}

fn count(text: Option<String>) -> Result<u64, CheckError> {
    let text = text.unwrap_or_default();
    text.trim()
        .parse()
        .map_err(|_| CheckError::Broken(format!("a count came back as `{text}`")))
}

/// Up to [`SAMPLES`] rows of `sql` (the failing rows of a check), when there are any.
async fn failing_samples(pool: &DataPool, any: bool, sql: &str) -> Result<Vec<Value>, CheckError> {
    if !any {
        return Ok(Vec::new());
    }
    Ok(text_rows(pool, &format!("{sql} LIMIT {SAMPLES}"), SAMPLES)
        .await?
        .into_iter()
        .map(Value::Object)
        .collect())
}

async fn row_count(c: &RowCountCheck, table: &str, pool: &DataPool) -> Result<Outcome, CheckError> {
    let table = pool.dialect().ident(table)?;
    let n = count(scalar(pool, &format!("SELECT COUNT(*) FROM {table}")).await?)?;
    Ok(Outcome {
        passed: c.min.is_none_or(|m| n >= m) && c.max.is_none_or(|m| n <= m),
        observed: n.into(),
        samples: Vec::new(),
    })
}

async fn not_null(c: &ColumnsCheck, pool: &DataPool) -> Result<Outcome, CheckError> {
    let d = pool.dialect();
    let table = d.ident(&c.table)?;
    let mut observed = serde_json::Map::new();
    let mut any_null = Vec::new();
    for column in &c.columns {
        let col = d.ident(column)?;
        let n = count(
            scalar(
                pool,
                &format!("SELECT COUNT(*) FROM {table} WHERE {col} IS NULL"),
            )
            .await?,
        )?;
        observed.insert(column.clone(), n.into());
        if n > 0 {
            any_null.push(format!("{col} IS NULL"));
        }
    }
    let samples = failing_samples(
        pool,
        !any_null.is_empty(),
        &format!("SELECT * FROM {table} WHERE {}", any_null.join(" OR ")),
    )
    .await?;
    Ok(Outcome {
        passed: any_null.is_empty(),
        observed: Value::Object(observed),
        samples,
    })
}

async fn unique(c: &ColumnsCheck, pool: &DataPool) -> Result<Outcome, CheckError> {
    let d = pool.dialect();
    let table = d.ident(&c.table)?;
    let cols = c
        .columns
        .iter()
        .map(|col| d.ident(col))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let groups = format!(
        "SELECT {cols}, COUNT(*) AS copies FROM {table} GROUP BY {cols} HAVING COUNT(*) > 1"
    );
    let duplicated = count(scalar(pool, &format!("SELECT COUNT(*) FROM ({groups}) d")).await?)?;
    let samples = failing_samples(pool, duplicated > 0, &groups).await?;
    Ok(Outcome {
        passed: duplicated == 0,
        observed: json!({ "duplicated_keys": duplicated }),
        samples,
    })
}

async fn accepted_values(c: &AcceptedValuesCheck, pool: &DataPool) -> Result<Outcome, CheckError> {
    let d = pool.dialect();
    let table = d.ident(&c.table)?;
    let col = d.ident(&c.column)?;
    if c.values.is_empty() {
        return Err(CheckError::Broken("`values` is empty".into()));
    }
    let values = c
        .values
        .iter()
        .map(|v| d.literal(v))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let filter = format!("FROM {table} WHERE {col} IS NOT NULL AND {col} NOT IN ({values})");
    let n = count(scalar(pool, &format!("SELECT COUNT(*) {filter}")).await?)?;
    let samples = failing_samples(
        pool,
        n > 0,
        &format!("SELECT {col} AS value, COUNT(*) AS occurrences {filter} GROUP BY {col}"),
    )
    .await?;
    Ok(Outcome {
        passed: n == 0,
        observed: json!({ "rows_with_other_values": n }),
        samples,
    })
}

async fn range(c: &RangeCheck, pool: &DataPool) -> Result<Outcome, CheckError> {
    let d = pool.dialect();
    let table = d.ident(&c.table)?;
    let col = d.ident(&c.column)?;
    let mut outside = Vec::new();
    if let Some(min) = &c.min {
        outside.push(format!("{col} < {}", d.literal(min)?));
    }
    if let Some(max) = &c.max {
        outside.push(format!("{col} > {}", d.literal(max)?));
    }
    if outside.is_empty() {
        return Err(CheckError::Broken("give `min`, `max` or both".into()));
    }
    let filter = format!("FROM {table} WHERE {}", outside.join(" OR "));
    let n = count(scalar(pool, &format!("SELECT COUNT(*) {filter}")).await?)?;
    let samples = failing_samples(pool, n > 0, &format!("SELECT * {filter}")).await?;
    Ok(Outcome {
        passed: n == 0,
        observed: json!({ "rows_outside": n }),
        samples,
    })
}

/// A timestamp as databases print them: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f][+zz[:zz]]` (UTC when
/// no offset), or a date (its midnight, UTC).
pub fn parse_db_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Some(n.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

async fn freshness(c: &FreshnessCheck, pool: &DataPool) -> Result<Outcome, CheckError> {
    let d = pool.dialect();
    let table = d.ident(&c.table)?;
    let col = d.ident(&c.column)?;
    let newest = scalar(pool, &format!("SELECT MAX({col}) FROM {table}")).await?;
    let Some(text) = newest else {
        return Ok(Outcome {
            passed: false,
            observed: json!({ "newest": null }),
            samples: Vec::new(),
        });
    };
    let at = parse_db_timestamp(&text)
        .ok_or_else(|| CheckError::Broken(format!("`{text}` is not a timestamp")))?;
    let age = Utc::now() - at;
    let max_age = chrono::Duration::from_std(c.max_age.0).unwrap_or(chrono::Duration::MAX);
    Ok(Outcome {
        passed: age <= max_age,
        observed: json!({ "newest": text, "age_seconds": age.num_seconds() }),
        samples: Vec::new(),
    })
}

async fn sql(c: &SqlCheck, pool: &DataPool) -> Result<Outcome, CheckError> {
    let rows = text_rows(pool, &c.query, SAMPLES).await?;
    Ok(Outcome {
        passed: rows.is_empty(),
        observed: json!({ "rows": rows.len(), "more_than_shown": rows.len() == SAMPLES }),
        samples: rows.into_iter().map(Value::Object).collect(),
    })
}

/// The data rows of the files `pattern` names, read as a load reads them.
async fn file_count(
    pattern: &str,
    format: Option<weir_model::spec::SourceFormat>,
    conns: &Connections,
) -> Result<u64, CheckError> {
    let mut rows = super::load::file_rows::open(pattern, format, conns.stores())
        .await
        .map_err(CheckError::Retryable)?;
    let mut n = 0_u64;
    while let Some(batch) = rows.batches.recv().await {
        match batch.map_err(CheckError::Broken)? {
            Some(b) => n += b.len() as u64,
            None => break,
        }
    }
    Ok(n)
}

async fn side_count(side: &CheckSide, conns: &Connections) -> Result<u64, CheckError> {
    if let Some(file) = &side.file {
        return file_count(file, side.format, conns).await;
    }
    let pool = pool_for(conns, side.conn.as_deref(), None).await?;
    let sql = match (&side.table, &side.query) {
        (Some(t), None) => format!("SELECT COUNT(*) FROM {}", pool.dialect().ident(t)?),
        (None, Some(q)) => format!("SELECT COUNT(*) FROM ({q}) q"),
        _ => {
            return Err(CheckError::Broken(
                "each side needs `table` or `query`".into(),
            ));
        }
    };
    count(scalar(&pool, &sql).await?)
}

async fn compare_count(c: &CompareCountCheck, conns: &Connections) -> Result<Outcome, CheckError> {
    // Both sides count at once.
    let (source, target) = tokio::join!(side_count(&c.source, conns), side_count(&c.target, conns));
    let (source, target) = (source?, target?);
    let diff = source.abs_diff(target);
    let allowed = match &c.tolerance {
        None => 0,
        Some(RejectLimit::Count(n)) => *n,
        Some(RejectLimit::Percent(share)) => {
            // Of the source's count, rounded down: "1%" of 150 rows allows 1.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "row counts fit f64 exactly below 2^53; the result is floored and non-negative"
            )]
            let allowed = (source as f64 * share / 100.0).floor() as u64;
            allowed
        }
    };
    Ok(Outcome {
        passed: diff <= allowed,
        observed: json!({ "source": source, "target": target, "difference": diff, "allowed": allowed }),
        samples: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::compare::normalize;
    use super::parse_db_timestamp;

    #[test]
    fn values_normalize_alike_across_databases() {
        assert_eq!(normalize(Some("12.50")), normalize(Some("12.5")));
        assert_eq!(normalize(Some("12.0")), "12");
        assert_eq!(normalize(Some("-0.00")), "0");
        assert_eq!(normalize(Some("007")), "7");
        assert_eq!(normalize(Some("t")), normalize(Some("1")));
        assert_eq!(
            normalize(Some("2021-11-07 01:30:00+00")),
            normalize(Some("2021-11-07T01:30:00Z"))
        );
        assert_ne!(normalize(None), normalize(Some("")));
        assert_ne!(normalize(Some("12.5")), normalize(Some("12.51")));
    }

    #[test]
    fn database_timestamps_parse() {
        for (text, want) in [
            ("2024-03-01 12:00:00+00", "2024-03-01T12:00:00Z"),
            ("2024-03-01 12:00:00.5+02:00", "2024-03-01T10:00:00.500Z"),
            ("2024-03-01 12:00:00", "2024-03-01T12:00:00Z"),
            ("2024-03-01T12:00:00Z", "2024-03-01T12:00:00Z"),
            ("2024-03-01", "2024-03-01T00:00:00Z"),
        ] {
            let got = parse_db_timestamp(text)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            assert_eq!(got.as_deref(), Some(want), "{text}");
        }
        assert_eq!(parse_db_timestamp("yesterday"), None);
    }
}
