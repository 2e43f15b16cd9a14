//! `kind: wait_for`: a sensor. Each try is one check; when what it waits for is not there
//! yet, the try ends at once with [`TaskOutcome::NotYet`] and the worker gives the instance
//! back to the scheduler with a next-check time (`interval`), so waiting holds no worker slot.
//! The task's `timeout` bounds the whole wait, from the first check.
//!
//! Checks: `file` (a glob matches at least one file), `sql` on `conn` (the first cell of the
//! first row is truthy: not NULL, empty, `0`, `f` or `false`), `http` (a GET answers 2xx).

use weir_model::spec::WaitForStep;

use super::sqltext::text_rows;
use crate::conn::Connections;
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs one check of a rendered `wait_for` step.
pub async fn check(step: &WaitForStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    let found = match (&step.file, &step.sql, &step.http) {
        (Some(pattern), None, None) => match glob::glob(pattern) {
            Ok(paths) => {
                let first = paths.filter_map(Result::ok).find(|p| p.is_file());
                first
                    .map(|p| format!("file {}", p.display()))
                    .ok_or_else(|| format!("no file matches `{pattern}`"))
            }
            Err(e) => {
                return TaskOutcome::Failed {
                    error: format!("`{pattern}` is not a valid glob: {e}"),
                    retryable: false,
                };
            }
        },
        (None, Some(query), None) => {
            let Some(conn) = &step.conn else {
                return TaskOutcome::Failed {
                    error: "`sql` needs `conn`".into(),
                    retryable: false,
                };
            };
            let pool = match conns.pool(conn).await {
                Ok(p) => p,
                Err(e) => return e.into(),
            };
            match text_rows(&pool, query, 1).await {
                Ok(rows) => {
                    let cell = rows
                        .first()
                        .and_then(|r| r.values().next())
                        .and_then(|v| v.as_str().map(str::to_owned));
                    match cell.as_deref().map(str::trim) {
                        None | Some("" | "0" | "f" | "false" | "FALSE") => Err(format!(
                            "the query's first cell is {}",
                            cell.as_deref()
                                .map_or("NULL (or no row)".to_owned(), |c| format!("`{c}`"))
                        )),
                        Some(v) => Ok(format!("the query returned `{v}`")),
                    }
                }
                Err(e) => {
                    return TaskOutcome::Failed {
                        error: format!("the sensor's query failed: {}", crate::conn::db_error(&e)),
                        retryable: true,
                    };
                }
            }
        }
        (None, None, Some(url)) => {
            let client = match super::http::client() {
                Ok(c) => c,
                Err(e) => {
                    return TaskOutcome::Failed {
                        error: e,
                        retryable: false,
                    };
                }
            };
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(format!("{url} answered {}", r.status())),
                Ok(r) => Err(format!("{url} answered {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
        _ => {
            return TaskOutcome::Failed {
                error: "wait_for needs exactly one of `file`, `sql` or `http`".into(),
                retryable: false,
            };
        }
    };
    match found {
        Ok(what) => {
            log.note(format!("found: {what}"));
            let mut outputs = serde_json::Map::new();
            outputs.insert("found".into(), what.into());
            TaskOutcome::Succeeded { outputs }
        }
        Err(why) => {
            log.note(format!(
                "not yet: {why}; next check in {}s",
                step.interval.0.as_secs()
            ));
            TaskOutcome::NotYet {
                reason: why,
                check_again_in: step.interval.0,
            }
        }
    }
}
