//! Decoding a DAG file: YAML into the typed spec, each task and step decoded on its own so
//! that one broken task never hides another's problems; where each key is, for messages.

use super::*;

pub(super) fn parse_inner(
    text: &str,
    known: Option<&Known>,
    out: &mut Vec<Diagnostic>,
    id_loc: &mut Option<Loc>,
    dag_id: &mut Option<String>,
) -> Option<Dag> {
    let root = match Node::parse(text) {
        Ok((root, problems)) => {
            out.extend(problems);
            root
        }
        Err(d) => {
            out.push(d);
            return None;
        }
    };
    match &root.value {
        Value::Map(_) => {}
        Value::Null => {
            out.push(Diagnostic::error(
                Some(Loc { line: 1, col: 1 }),
                "the file has no content: a DAG needs at least `id` and `tasks`",
            ));
            return None;
        }
        _ => {
            out.push(Diagnostic::error(
                Some(root.loc),
                format!(
                    "a DAG file is a mapping with `id` and `tasks`, found {}",
                    root.type_name()
                ),
            ));
            return None;
        }
    };
    *id_loc = root.get("id").map(|n| n.loc);
    *dag_id = root.get("id").and_then(Node::as_str).map(str::to_owned);
    let sink = Sink::default();
    let tasks_node = root.get("tasks");
    if tasks_node.is_none() {
        sink.push(Diagnostic::error(
            Some(root.loc),
            "missing required key `tasks`",
        ));
    }

    // The header: every key but `tasks`, which is decoded task by task below.
    let spec: Option<DagSpec> = decode(&root, &["tasks"], Unknown::Report, "", &sink);

    let mut tasks = IndexMap::new();
    let mut task_nodes = HashMap::new();
    match tasks_node.map(|n| (n, &n.value)) {
        Some((_, Value::Map(task_entries))) => {
            if task_entries.is_empty() {
                sink.push(Diagnostic::error(
                    tasks_node.map(|n| n.loc),
                    "`tasks` is empty: a DAG needs at least one task",
                ));
            }
            for (key, value) in task_entries {
                let Some(id) = key.as_str() else {
                    sink.push(Diagnostic::error(
                        Some(key.loc),
                        format!("task ids are strings, found {}", key.type_name()),
                    ));
                    continue;
                };
                task_nodes.insert(id.to_owned(), (key, value));
                if let Some(task) = decode_task(id, value, &sink) {
                    tasks.insert(id.to_owned(), task);
                }
            }
        }
        Some((n, _)) => sink.push(Diagnostic::error(
            Some(n.loc),
            format!(
                "`tasks` is a mapping of task id to task, found {}",
                n.type_name()
            ),
        )),
        None => {}
    }
    out.extend(sink.into_inner());

    check_templates(text, &task_nodes, out);
    let mut spec = spec?;
    let all_decoded = tasks.len() == task_nodes.len();
    spec.tasks = tasks;
    let places = Places {
        root: &root,
        tasks: &task_nodes,
    };
    let graph = check_spec(&spec, Some(&places), known, out);
    check_template_references(text, &task_nodes, &spec, &graph, out);
    if !all_decoded || out.iter().any(|d| d.severity == Severity::Error) {
        return None;
    }
    Some(build(spec, graph))
}

/// Decodes one task: `kind` picks the step type, the common fields and the kind's own are
/// decoded separately, and a key that belongs to neither is reported once.
pub(super) fn decode_task(id: &str, node: &Node, sink: &Sink) -> Option<TaskSpec> {
    let context = format!("task `{id}`");
    let Value::Map(_) = &node.value else {
        sink.push(Diagnostic::error(
            Some(node.loc),
            format!(
                "{context}: a task is a mapping with `kind` and its fields, found {}",
                node.type_name()
            ),
        ));
        return None;
    };
    // Common fields first, so a task with a bad `kind` still has them checked.
    let common: Option<TaskCommon> = decode(node, &[], Unknown::Ignore, &context, sink);
    let Some(kind_node) = node.get("kind") else {
        sink.push(Diagnostic::error(
            Some(node.loc),
            format!(
                "{context}: missing required key `kind` (one of {})",
                backticked(&Step::KINDS)
            ),
        ));
        return None;
    };
    let Some(kind) = kind_node.as_str() else {
        sink.push(Diagnostic::error(
            Some(kind_node.loc),
            format!("{context}: `kind` is one of {}", backticked(&Step::KINDS)),
        ));
        return None;
    };
    if !Step::KINDS.contains(&kind) {
        let hint = did_you_mean(kind, Step::KINDS)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        sink.push(Diagnostic::error(
            Some(kind_node.loc),
            format!(
                "{context}: unknown kind `{kind}`{hint}; expected one of {}",
                backticked(&Step::KINDS)
            ),
        ));
        return None;
    }
    let mut others: Vec<&str> = struct_fields::<TaskCommon>().to_vec();
    others.push("kind");
    let step = decode_step(kind, node, &others, &context, sink);
    Some(TaskSpec {
        common: common?,
        step: step?,
    })
}

/// Decodes the kind's own fields. `also_valid` (the common keys and `kind`) were split off
/// before; they only serve as suggestions for a mistyped key.
pub(super) fn decode_step(
    kind: &str,
    node: &Node,
    also_valid: &[&str],
    context: &str,
    sink: &Sink,
) -> Option<Step> {
    fn one<T: DeserializeOwned>(
        node: &Node,
        also_valid: &[&str],
        context: &str,
        sink: &Sink,
        wrap: fn(T) -> Step,
    ) -> Option<Step> {
        decode::<T>(node, also_valid, Unknown::Report, context, sink).map(wrap)
    }
    match kind {
        "noop" => one::<NoopStep>(node, also_valid, context, sink, Step::Noop),
        "shell" => one::<ShellStep>(node, also_valid, context, sink, Step::Shell),
        "sql" => one::<SqlStep>(node, also_valid, context, sink, Step::Sql),
        "migrate" => one::<MigrateStep>(node, also_valid, context, sink, Step::Migrate),
        "load" => one::<LoadStep>(node, also_valid, context, sink, |l| Step::Load(Box::new(l))),
        "validate" => one::<ValidateStep>(node, also_valid, context, sink, Step::Validate),
        "export" => one::<ExportStep>(node, also_valid, context, sink, Step::Export),
        "http" => one::<HttpStep>(node, also_valid, context, sink, Step::Http),
        "wait_for" => one::<WaitForStep>(node, also_valid, context, sink, Step::WaitFor),
        "transfer" => one::<TransferStep>(node, also_valid, context, sink, Step::Transfer),
        "python" => one::<PythonStep>(node, also_valid, context, sink, Step::Python),
        "dbt" => one::<DbtStep>(node, also_valid, context, sink, Step::Dbt),
        _ => None,
    }
}

/// Where things are in the file, for checks that run on the decoded spec.
pub(super) struct Places<'a> {
    pub(super) root: &'a Node,
    pub(super) tasks: &'a HashMap<String, (&'a Node, &'a Node)>,
}

impl Places<'_> {
    pub(super) fn key(&self, key: &str) -> Option<Loc> {
        self.root.get(key).map(|n| n.loc)
    }
    pub(super) fn task(&self, id: &str) -> Option<Loc> {
        self.tasks.get(id).map(|(k, _)| k.loc)
    }
    pub(super) fn task_key(&self, id: &str, key: &str) -> Option<Loc> {
        self.tasks
            .get(id)
            .and_then(|(_, v)| v.get(key))
            .map(|n| n.loc)
            .or_else(|| self.task(id))
    }
    pub(super) fn dependency(&self, id: &str, dep: &str) -> Option<Loc> {
        let node = self.tasks.get(id).and_then(|(_, v)| v.get("depends_on"));
        match node.map(|n| &n.value) {
            Some(Value::Seq(items)) => items
                .iter()
                .find(|n| n.as_str() == Some(dep))
                .map(|n| n.loc),
            _ => node.map(|n| n.loc),
        }
        .or_else(|| self.task(id))
    }
}
