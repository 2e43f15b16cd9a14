//! dbt's artifacts read after a run: `run_results.json` (each node's status, timing, rows and
//! message) joined with `manifest.json` (what each node is, the relation it writes, its
//! parents, its compiled SQL, a test's severity), into the task's outputs and its error.
//!
//! Only the fields weir reads are declared, each defaulted, so artifacts of other dbt versions
//! read the same.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Debug, Deserialize)]
struct RunResults {
    #[serde(default)]
    results: Vec<NodeResult>,
}

#[derive(Debug, Deserialize)]
struct NodeResult {
    unique_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    execution_time: f64,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    failures: Option<i64>,
    #[serde(default)]
    adapter_response: Value,
}

#[derive(Debug, Default, Deserialize)]
struct Manifest {
    #[serde(default)]
    nodes: HashMap<String, Node>,
    #[serde(default)]
    sources: HashMap<String, Source>,
}

#[derive(Debug, Default, Deserialize)]
struct Node {
    #[serde(default)]
    resource_type: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    depends_on: DependsOn,
    #[serde(default)]
    compiled_path: Option<String>,
    #[serde(default)]
    original_file_path: Option<String>,
    #[serde(default)]
    config: NodeConfig,
}

#[derive(Debug, Default, Deserialize)]
struct DependsOn {
    #[serde(default)]
    nodes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct NodeConfig {
    #[serde(default)]
    severity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Source {
    #[serde(default)]
    schema: String,
    #[serde(default)]
    identifier: Option<String>,
    #[serde(default)]
    name: String,
}

/// What a run's artifacts say.
#[derive(Debug)]
pub struct Summary {
    /// The task's outputs: `results`, `checks`, `checks_passed`, `checks_failed`, `built`,
    /// `errors`, `skipped`, `written` and `read`.
    pub outputs: Map<String, Value>,
    /// Why the task failed: every model, seed or snapshot in error (with its compiled SQL's
    /// path) and every test failing with severity error; `None` when nothing did.
    pub error: Option<String>,
    /// Whether a node other than a test failed (a database error may pass; failed tests
    /// fail the same way again).
    pub retryable: bool,
}

/// Node kinds that write a relation.
const WRITERS: [&str; 3] = ["model", "seed", "snapshot"];

/// Reads `run_results.json` and `manifest.json` (their texts).
///
/// # Errors
/// An artifact that is not what dbt writes.
pub fn summarize(run_results: &str, manifest: &str) -> Result<Summary, String> {
    let results: RunResults =
        serde_json::from_str(run_results).map_err(|e| format!("run_results.json: {e}"))?;
    let manifest: Manifest =
        serde_json::from_str(manifest).map_err(|e| format!("manifest.json: {e}"))?;
    let none = Node::default();
    let relation_of = |id: &str| -> Option<String> {
        if let Some(s) = manifest.sources.get(id) {
            return Some(format!(
                "{}.{}",
                s.schema,
                s.identifier.as_deref().unwrap_or(&s.name)
            ));
        }
        let n = manifest.nodes.get(id)?;
        WRITERS.contains(&n.resource_type.as_str()).then(|| {
            format!(
                "{}.{}",
                n.schema.as_deref().unwrap_or_default(),
                n.alias.as_deref().unwrap_or(&n.name)
            )
        })
    };
    let (mut rows, mut checks, mut written) = (Vec::new(), Vec::new(), Vec::new());
    let mut read = BTreeSet::new();
    let (mut built, mut errors, mut skipped, mut passed, mut failed) = (0, 0, 0, 0, 0);
    let (mut failures, mut retryable) = (Vec::new(), false);
    for r in &results.results {
        let node = manifest.nodes.get(&r.unique_id).unwrap_or(&none);
        let kind = if node.resource_type.is_empty() {
            r.unique_id.split('.').next().unwrap_or_default()
        } else {
            node.resource_type.as_str()
        };
        let name = if node.name.is_empty() {
            r.unique_id.as_str()
        } else {
            node.name.as_str()
        };
        let message = r.message.as_deref().map(first_line);
        let rows_affected = r
            .adapter_response
            .get("rows_affected")
            .and_then(Value::as_i64)
            .filter(|n| *n >= 0);
        let mut row = json!({
            "node": name, "type": kind, "status": r.status,
            "seconds": (r.execution_time * 1000.0).round() / 1000.0,
        });
        // A test's "rows" are the one row of its count query: not data written.
        if let Some(n) = rows_affected.filter(|_| node.resource_type != "test") {
            row["rows_affected"] = n.into();
        }
        if let Some(m) = &message {
            row["message"] = m.clone().into();
        }
        let parents: Vec<String> = node
            .depends_on
            .nodes
            .iter()
            .filter_map(|p| relation_of(p))
            .collect();
        if kind == "test" {
            let severity = match node.config.severity.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("warn") => "warn",
                _ => "error",
            };
            let ok = matches!(r.status.as_str(), "pass" | "success");
            if ok {
                passed += 1;
            } else if r.status != "skipped" {
                failed += 1;
                // A test of severity error that fails (or errors) fails the task; `warn` is
                // reported only.
                if matches!(r.status.as_str(), "fail" | "error") && severity == "error" {
                    failures.push(format!(
                        "test `{name}` {}: {}",
                        if r.status == "fail" {
                            "failed"
                        } else {
                            "errored"
                        },
                        message.as_deref().unwrap_or("no message")
                    ));
                }
            } else {
                skipped += 1;
            }
            checks.push(json!({
                "check": name, "passed": ok, "severity": severity,
                "observed": { "status": r.status, "failures": r.failures, "message": message },
                "samples": [],
            }));
        } else {
            if let Some(relation) = relation_of(&r.unique_id) {
                row["relation"] = relation.clone().into();
                if r.status == "success" && WRITERS.contains(&kind) {
                    written.push(json!({ "relation": relation, "rows": rows_affected, "upstream": parents, "node": r.unique_id }));
                }
            }
            match r.status.as_str() {
                "success" => built += 1,
                "skipped" => skipped += 1,
                "error" => {
                    errors += 1;
                    retryable = true;
                    let sql = node
                        .compiled_path
                        .as_deref()
                        .map(|p| format!(" (compiled SQL: {p})"))
                        .unwrap_or_default();
                    failures.push(format!(
                        "{kind} `{name}` failed: {}{sql}",
                        message.as_deref().unwrap_or("no message")
                    ));
                }
                _ => {}
            }
            if r.status == "success" {
                read.extend(
                    node.depends_on
                        .nodes
                        .iter()
                        .filter(|p| manifest.sources.contains_key(*p))
                        .filter_map(|p| relation_of(p)),
                );
            }
        }
        if let Some(path) = &node.original_file_path {
            row["path"] = path.clone().into();
        }
        rows.push(row);
    }
    let mut outputs = Map::new();
    outputs.insert("results".into(), Value::Array(rows));
    outputs.insert("built".into(), built.into());
    outputs.insert("errors".into(), errors.into());
    outputs.insert("skipped".into(), skipped.into());
    outputs.insert("checks".into(), Value::Array(checks));
    outputs.insert("checks_passed".into(), passed.into());
    outputs.insert("checks_failed".into(), failed.into());
    outputs.insert("written".into(), Value::Array(written));
    outputs.insert(
        "read".into(),
        Value::Array(read.into_iter().map(Value::from).collect()),
    );
    Ok(Summary {
        outputs,
        error: (!failures.is_empty()).then(|| failures.join("; ")),
        retryable,
    })
}

/// The first line of dbt's message, where it says what happened (`Database Error in model x`
/// continues with the database's words on the next line: both are kept, joined).
fn first_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("compiled code at"))
        .take(2)
        .collect();
    lines.join(": ")
}
