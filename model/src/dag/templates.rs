//! Templates of every task: parsed, and what they read checked against the DAG (declared
//! params, upstream outputs), each problem placed at its line and column in the file.

use super::*;

/// Parses every string of every task as a template; reports the place of a syntax error in the
/// file where it can be worked out (single-line scalars and block scalars), else the string's.
pub(super) fn check_templates(
    source: &str,
    tasks: &HashMap<String, (&Node, &Node)>,
    out: &mut Vec<Diagnostic>,
) {
    let lines: Vec<&str> = source.lines().collect();
    let mut checker = TemplateChecker::default();
    let mut ids: Vec<&String> = tasks.keys().collect();
    ids.sort();
    for id in ids {
        let (_, node) = tasks[id];
        for_each_template(node, &mut |n, text| {
            if let Err(e) = checker.check(text) {
                let loc = template_error_place(&lines, n.loc, text, e.line, e.col);
                out.push(Diagnostic::error(
                    Some(loc),
                    format!("task `{id}`: template does not parse: {}", e.message),
                ));
            }
        });
    }
}

/// Calls `f` on every string of a task that weir renders: all but its kind's verbatim fields
/// ([`Step::verbatim_fields_of`]: a Python script is Python, not a template).
fn for_each_template<'a>(task: &'a Node, f: &mut impl FnMut(&'a Node, &'a str)) {
    let verbatim = task
        .get("kind")
        .and_then(Node::as_str)
        .map_or(&[][..], Step::verbatim_fields_of);
    match &task.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if !k.as_str().is_some_and(|k| verbatim.contains(&k)) {
                    v.for_each_str(f);
                }
            }
        }
        _ => task.for_each_str(f),
    }
}

/// What templates read must exist when they render: `params.<name>` a declared param,
/// `tasks.<id>` a task upstream of the one rendering (only those have run, and only their
/// outputs are in its context).
pub(super) fn check_template_references(
    source: &str,
    tasks: &HashMap<String, (&Node, &Node)>,
    spec: &DagSpec,
    graph: &TaskGraph,
    out: &mut Vec<Diagnostic>,
) {
    let lines: Vec<&str> = source.lines().collect();
    let mut checker = TemplateChecker::default();
    let params: Vec<&str> = spec.params.keys().map(String::as_str).collect();
    let task_ids: Vec<&str> = spec.tasks.keys().map(String::as_str).collect();
    let mut ids: Vec<&String> = tasks.keys().collect();
    ids.sort();
    for id in ids {
        let (_, node) = tasks[id];
        let upstream = reach(
            &graph.0,
            graph.1.get(id.as_str()).copied(),
            petgraph::Direction::Incoming,
        );
        for_each_template(node, &mut |n, text| {
            if !crate::template::is_template(text) || checker.check(text).is_err() {
                return;
            }
            for r in crate::template::references(text) {
                let message = match r.root {
                    "params" if !spec.params.contains_key(&r.name) => {
                        let hint = did_you_mean(&r.name, params.iter().copied())
                            .map(|s| format!(" (did you mean `params.{s}`?)"))
                            .unwrap_or_default();
                        let declared = if params.is_empty() {
                            "the DAG declares no `params`".to_owned()
                        } else {
                            format!("it declares {}", backticked(&params))
                        };
                        format!(
                            "task `{id}`: `params.{}` is not a param of this DAG{hint}: {declared}",
                            r.name
                        )
                    }
                    "tasks" if !spec.tasks.contains_key(&r.name) => {
                        let hint = did_you_mean(&r.name, task_ids.iter().copied())
                            .map(|s| format!(" (did you mean `tasks.{s}`?)"))
                            .unwrap_or_default();
                        format!(
                            "task `{id}`: `tasks.{}` is not a task of this DAG{hint}",
                            r.name
                        )
                    }
                    "tasks" if r.name == *id => format!(
                        "task `{id}`: `tasks.{id}` is the task itself: templates read the outputs of tasks upstream"
                    ),
                    "tasks" if !upstream.contains(&r.name) => format!(
                        "task `{id}`: reads `tasks.{0}`, but `{0}` is not upstream of `{id}` (its outputs would not exist yet): \
                         add `{0}` to `depends_on`, directly or through another task",
                        r.name
                    ),
                    _ => continue,
                };
                let loc = template_error_place(&lines, n.loc, text, r.line, r.col);
                out.push(Diagnostic::error(Some(loc), message));
            }
        });
    }
}

pub(super) fn template_error_place(
    lines: &[&str],
    at: Loc,
    text: &str,
    line: usize,
    col: usize,
) -> Loc {
    let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let index = (at.line as usize).saturating_sub(1);
    let previous = index
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .map_or("", |l| l.trim_end());
    let block_header =
        previous.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
    if block_header.ends_with('|') || block_header.ends_with('>') {
        // Block scalar: serde-saphyr places it at its first content line; every template line
        // is one file line, at the same indentation. An error past the end points at the end.
        let template_lines: Vec<&str> = text.lines().collect();
        let count = template_lines.len().max(1);
        if line > count {
            let last = template_lines.last().map_or(0, |l| l.len());
            return Loc {
                line: to_u32(index + count),
                col: to_u32(at.col as usize + last),
            };
        }
        return Loc {
            line: to_u32(index + line),
            col: to_u32(at.col as usize + col.saturating_sub(1)),
        };
    }
    let Some(source_line) = lines.get(index) else {
        return at;
    };
    if text.contains('\n') {
        return at;
    }
    let start = (at.col as usize).saturating_sub(1).min(source_line.len());
    let quoted = source_line[start..].starts_with(['"', '\'']);
    let col = at.col as usize + usize::from(quoted) + col.saturating_sub(1).min(text.len());
    Loc {
        line: at.line,
        col: to_u32(col),
    }
}
