//! `kind: wait_for`: a sensor. Each try is one check; when what it waits for is not there
//! yet, the try ends at once with [`TaskOutcome::NotYet`] and the worker gives the instance
//! back to the scheduler with a next-check time (`interval`), so waiting holds no worker slot.
//! The task's `timeout` bounds the whole wait, from the first check.
//!
//! Checks: `file` (a glob matches at least one file; every match, in name order, is the `files`
//! output, a list `foreach` can map over), `sql` on `conn` (the first cell of the first row is
//! truthy: not NULL, empty, `0`, `f` or `false`), `http` (a GET answers 2xx).

use weir_model::spec::WaitForStep;

use super::sqltext::text_rows;
use crate::conn::Connections;
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs one check of a rendered `wait_for` step.
pub async fn check(step: &WaitForStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    let mut files = None;
    let found = match (&step.file, &step.sql, &step.http) {
        (Some(pattern), None, None) => match glob::glob(pattern) {
            Ok(paths) => {
                let mut matched: Vec<String> = paths
                    .filter_map(Result::ok)
                    .filter(|p| p.is_file())
                    .map(|p| p.display().to_string())
                    .collect();
                matched.sort();
                let found = match matched.as_slice() {
                    [] => Err(format!("no file matches `{pattern}`")),
                    [one] => Ok(format!("file {one}")),
                    [first, ..] => Ok(format!("{} files, the first {first}", matched.len())),
                };
                files = Some(matched);
                found
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
            let shown = super::http::url_label(url);
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(format!("{shown} answered {}", r.status())),
                Ok(r) => Err(format!("{shown} answered {}", r.status())),
                Err(e) => Err(format!("{shown}: {}", e.without_url())),
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
            if let Some(files) = files {
                outputs.insert("files".into(), files.into());
            }
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
