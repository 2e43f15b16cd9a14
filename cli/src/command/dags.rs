//! `weir dags validate | list | show | schema`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use weir_model::{Dag, Severity};

use super::{EXIT_OK, EXIT_USAGE};
use crate::args::ShowFormat;
use crate::config::Config;
use weir_scheduler::folder::{find_dag, load_dag_files};

/// Prints every problem of every file as `FILE:LINE:COL: message`; exit 2 when any file has
/// an error.
pub(crate) fn validate(config: &Config, paths: &[PathBuf]) -> Result<u8> {
    let paths = if paths.is_empty() {
        vec![config.dags_folder.clone()]
    } else {
        paths.to_vec()
    };
    let files = load_dag_files(&paths, Some(&config.known()))?;
    let mut out = std::io::stdout().lock();
    let (mut errors, mut warnings, mut invalid) = (0, 0, 0);
    for file in &files {
        let name = file.display();
        for d in &file.parsed.diagnostics {
            writeln!(out, "{}", d.display(&name))?;
            match d.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
        }
        if file.parsed.dag.is_none() {
            invalid += 1;
        }
    }
    out.flush()?;
    eprintln!(
        "{} file(s) checked: {} valid, {invalid} invalid ({errors} error(s), {warnings} warning(s))",
        files.len(),
        files.len() - invalid
    );
    Ok(if invalid > 0 { EXIT_USAGE } else { EXIT_OK })
}

/// One row of `weir dags list --json` (SPEC §5).
#[derive(Serialize)]
struct DagRow {
    dag_id: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    paused: Option<bool>,
    file: String,
    import_error: Option<String>,
    /// Since when no file defines the DAG (RFC 3339); it gets no new runs.
    removed_at: Option<String>,
}

/// The DAGs the store knows (the folder synced into it first, when it is here), and the files
/// that did not import. A DAG whose file is broken keeps its last good version and shows the
/// file's error.
async fn rows(config: &Config) -> Result<Vec<DagRow>> {
    let store = crate::engine::open_store(config).await?;
    crate::engine::sync_dags(&store, config).await?;
    let errors = store.import_errors().await?;
    let mut rows: Vec<DagRow> = store
        .list_dags()
        .await?
        .into_iter()
        .map(|d| DagRow {
            import_error: errors
                .iter()
                .find(|e| e.file == d.file)
                .map(|e| e.message.clone()),
            dag_id: Some(d.dag_id),
            schedule: d.schedule,
            timezone: Some(d.timezone),
            paused: Some(d.paused),
            removed_at: d
                .removed_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            file: d.file,
        })
        .collect();
    let dag_files: std::collections::HashSet<String> =
        rows.iter().map(|r| r.file.clone()).collect();
    for e in errors.iter().filter(|e| !dag_files.contains(&e.file)) {
        rows.push(DagRow {
            dag_id: e.dag_id.clone(),
            schedule: None,
            timezone: None,
            paused: None,
            removed_at: None,
            file: e.file.clone(),
            import_error: Some(e.message.clone()),
        });
    }
    store.close().await;
    Ok(rows)
}

/// A DAG's state in a list: `removed` (no file defines it), `paused` or `active`.
pub(crate) fn dag_state(paused: bool, removed: bool) -> &'static str {
    match (removed, paused) {
        (true, _) => "removed",
        (false, true) => "paused",
        (false, false) => "active",
    }
}

/// What a list says after a DAG's file: a removed DAG's date, a broken file's fallback.
pub(crate) fn dag_note(import_error: bool, removed_at: Option<&str>) -> String {
    match removed_at {
        Some(at) => format!("  (file gone since {at}: no new runs, history kept)"),
        None if import_error => "  (file has errors: last good version kept)".to_owned(),
        None => String::new(),
    }
}

/// Lists the DAGs and the files that failed to import.
pub(crate) async fn list(config: &Config, json: bool) -> Result<u8> {
    let rows = rows(config).await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(EXIT_OK);
    }
    let width = rows
        .iter()
        .filter_map(|r| r.dag_id.as_ref())
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:<width$}  {:<16}  {:<20}  {:<7}  FILE",
        "DAG ID", "SCHEDULE", "TIMEZONE", "STATE"
    )?;
    for r in rows.iter().filter(|r| r.timezone.is_some()) {
        writeln!(
            out,
            "{:<width$}  {:<16}  {:<20}  {:<7}  {}{}",
            r.dag_id.as_deref().unwrap_or(""),
            r.schedule.as_deref().unwrap_or("(manual)"),
            r.timezone.as_deref().unwrap_or(""),
            dag_state(r.paused == Some(true), r.removed_at.is_some()),
            r.file,
            dag_note(r.import_error.is_some(), r.removed_at.as_deref()),
        )?;
    }
    let broken: Vec<&DagRow> = rows.iter().filter(|r| r.import_error.is_some()).collect();
    if !broken.is_empty() {
        writeln!(out, "\nImport errors ({} file(s)):", broken.len())?;
        for r in broken {
            writeln!(out, "{}", r.import_error.as_deref().unwrap_or(""))?;
        }
    }
    Ok(EXIT_OK)
}

/// `weir dags pause|unpause DAG`.
pub(crate) async fn set_paused(config: &Config, dag_id: &str, paused: bool) -> Result<u8> {
    let store = crate::engine::open_store(config).await?;
    crate::engine::sync_dags(&store, config).await?;
    let actor = crate::audit::actor();
    let now = crate::engine::clock().now();
    let changed = weir_ops::operator::set_paused(
        &store,
        weir_ops::operator::Actor(&actor),
        dag_id,
        paused,
        now,
    )
    .await?;
    let word = if paused { "paused" } else { "unpaused" };
    println!(
        "{dag_id} {}{word}",
        if changed { "" } else { "was already " }
    );
    store.close().await;
    Ok(EXIT_OK)
}

/// Shows one DAG as a levels view, Graphviz dot or JSON.
pub(crate) fn show(config: &Config, dag_id: &str, format: ShowFormat) -> Result<u8> {
    let files = load_dag_files(
        std::slice::from_ref(&config.dags_folder),
        Some(&config.known()),
    )?;
    let (file, dag) = find_dag(&files, dag_id)?;
    let text = match format {
        ShowFormat::Text => show_text(dag, &file.display()),
        ShowFormat::Dot => show_dot(dag),
        ShowFormat::Json => serde_json::to_string_pretty(&serde_json::json!({
            "dag_id": dag.id(),
            "file": file.display(),
            "levels": dag.levels(),
            "spec": dag.spec,
        }))?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(EXIT_OK)
}

fn show_text(dag: &Dag, file: &str) -> String {
    let mut s = String::new();
    let title = dag
        .spec
        .description
        .as_deref()
        .map(|d| format!(" — {d}"))
        .unwrap_or_default();
    s.push_str(&format!("{}{title}\n", dag.id()));
    s.push_str(&format!("  file:      {file}\n"));
    let schedule = dag.schedule().map_or_else(
        || "none (manual and backfill only)".to_owned(),
        |sch| sch.to_string(),
    );
    s.push_str(&format!(
        "  schedule:  {schedule}  ({})\n",
        dag.timezone.name()
    ));
    if let Some(start) = &dag.spec.start_date {
        let end = dag
            .spec
            .end_date
            .map(|e| format!(" to {e}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  dates:     from {start}{end}, catchup {}\n",
            if dag.spec.catchup { "on" } else { "off" }
        ));
    }
    if !dag.spec.tags.is_empty() {
        s.push_str(&format!("  tags:      {}\n", dag.spec.tags.join(", ")));
    }
    s.push_str(&format!("  tasks:     {}\n\n", dag.tasks.len()));
    let width = dag.tasks.keys().map(String::len).max().unwrap_or(4);
    for (level, ids) in dag.levels().iter().enumerate() {
        s.push_str(&format!("level {level}\n"));
        for id in ids {
            let task = &dag.tasks[*id];
            let mut line = format!("  {id:<width$}  {:<8}", task.step.kind());
            if !task.depends_on.is_empty() {
                line.push_str(&format!("  <- {}", task.depends_on.join(", ")));
            }
            if task.trigger_rule != weir_model::TriggerRule::AllSuccess {
                line.push_str(&format!("  [{}]", task.trigger_rule.as_str()));
            }
            if task.foreach.is_some() {
                line.push_str("  [foreach]");
            }
            if task.when.is_some() {
                line.push_str("  [when]");
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
    }
    s.trim_end().to_owned()
}

fn show_dot(dag: &Dag) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let quote = |s: &str| format!("\"{}\"", escape(s));
    let mut s = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        quote(dag.id())
    );
    for (id, task) in &dag.tasks {
        s.push_str(&format!(
            "  {} [label=\"{}\\n({})\"];\n",
            quote(id),
            escape(id),
            task.step.kind()
        ));
    }
    for (id, task) in &dag.tasks {
        for dep in &task.depends_on {
            s.push_str(&format!("  {} -> {};\n", quote(dep), quote(id)));
        }
    }
    s.push('}');
    s
}

/// Prints the JSON Schema of the DAG format.
pub(crate) fn schema() -> Result<u8> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&weir_model::schema::dag_schema())?
    )?;
    Ok(EXIT_OK)
}
