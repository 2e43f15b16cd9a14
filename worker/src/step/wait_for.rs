//! `kind: wait_for`: a sensor. Each try is one check; when what it waits for is not there
//! yet, the try ends at once with [`TaskOutcome::NotYet`] and the worker gives the instance
//! back to the scheduler with a next-check time (`interval`), so waiting holds no worker slot.
//! The task's `timeout` bounds the whole wait, from the first check.
//!
//! Checks: `file` (a glob, local or on a store, `s3://bucket/in/*.csv`, matches at least one
//! file; every match, in name order, is the `files` output, a list `foreach` can map over), `sql` on `conn` (the first cell of the first row is
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
        (Some(pattern), None, None) => {
            let listed = match weir_storage::Location::parse(pattern) {
                Ok(at) => conns.stores().list(&at).await,
                Err(e) => Err(e),
            };
            match listed {
                Ok(objects) => {
                    let matched: Vec<String> =
                        objects.iter().map(|o| o.location.to_string()).collect();
                    let found = match matched.as_slice() {
                        [] => Err(format!("no file matches `{pattern}`")),
                        [one] => Ok(format!("file {one}")),
                        [first, ..] => Ok(format!("{} files, the first {first}", matched.len())),
                    };
                    files = Some(matched);
                    found
                }
                // A store that cannot be listed now may be listed at the next check (a network
                // failure); a bad glob or configuration will not.
                Err(e) if e.retryable => Err(e.message),
                Err(e) => {
                    return TaskOutcome::Failed {
                        error: e.message,
                        retryable: false,
                    };
                }
            }
        }
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
