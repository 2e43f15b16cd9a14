//! A notice as words: the default title and body (the task, its try, the error, the run's load
//! counts and a link), or the notifier's own templates over the same facts; and the webhook's
//! JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use weir_model::TaskState;
use weir_store::{Notice, NoticeEvent, TaskInstanceRow};

use crate::config::MessageTemplate;

/// A notice as words: a one-line title and a body of `field: value` lines, the run's load
/// counts and a link; or the notifier's own templates over the same facts.
pub(crate) struct Rendered {
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) url: String,
    /// The run's tasks, for the webhook's JSON.
    tasks: serde_json::Value,
}

impl Rendered {
    pub(crate) fn new(
        n: &Notice,
        base_url: &str,
        tasks: &[TaskInstanceRow],
        template: &MessageTemplate,
    ) -> Rendered {
        let task = n.task_id.as_deref().map(|t| match n.map_index {
            Some(i) => format!("{t}[{i}]"),
            None => t.to_owned(),
        });
        let tries = match (n.try_number, n.max_tries) {
            (Some(t), Some(m)) => format!("try {t} of {m}"),
            _ => "before its first try".to_owned(),
        };
        let title = match (n.event, &task) {
            (NoticeEvent::RunFailed, _) => format!("weir: {} failed ({})", n.dag_id, n.ds),
            (NoticeEvent::RunSucceeded, _) => format!("weir: {} succeeded ({})", n.dag_id, n.ds),
            (NoticeEvent::TaskFailed, Some(t)) => {
                format!("weir: task {t} of {} failed, {tries} ({})", n.dag_id, n.ds)
            }
            (NoticeEvent::TaskRetry, Some(t)) => {
                format!(
                    "weir: task {t} of {} will retry after {tries} ({})",
                    n.dag_id, n.ds
                )
            }
            (NoticeEvent::AssetStale, _) => format!(
                "weir: asset {} is stale (declared by {})",
                n.asset.as_deref().unwrap_or("?"),
                n.dag_id
            ),
            (NoticeEvent::DeadlineMissed, _) => {
                format!("weir: {} missed its deadline ({})", n.dag_id, n.ds)
            }
            (_, None) => format!("weir: {} {} ({})", n.dag_id, n.event.as_str(), n.ds),
        };
        let path = match (&n.task_id, n.try_number) {
            _ if n.asset.is_some() => format!(
                "/assets/{}",
                weir_model::text::url_segment(n.asset.as_deref().unwrap_or_default())
            ),
            (Some(t), Some(try_number)) => format!(
                "/runs/{}/tasks/{}?try={try_number}",
                weir_model::text::url_segment(&n.run_id),
                weir_model::text::url_segment(t)
            ),
            _ => format!("/runs/{}", weir_model::text::url_segment(&n.run_id)),
        };
        let url = format!("{base_url}{path}");
        let loads = load_counts(tasks);
        let mut body = String::new();
        if let Some(asset) = &n.asset {
            let _ = writeln!(body, "Asset: {asset}");
        }
        if let Some(since) = n.late_since {
            let _ = writeln!(
                body,
                "Late since: {}",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        let _ = writeln!(body, "DAG:   {}", n.dag_id);
        if !n.run_id.is_empty() {
            let _ = writeln!(body, "Run:   {}", n.run_id);
            let _ = writeln!(body, "ds:    {}", n.ds);
        }
        if let Some(t) = &task {
            let _ = writeln!(body, "Task:  {t} ({tries})");
        }
        let _ = writeln!(
            body,
            "When:  {}",
            n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(e) = &n.error {
            let _ = writeln!(body, "Error: {}", e.replace('\n', "\n       "));
        }
        if !loads.is_empty() {
            let _ = writeln!(body, "Loads:");
            for l in &loads {
                let _ = writeln!(body, "  {}", l.line);
            }
        }
        let _ = writeln!(body, "Log:   {url}");
        let task_facts = task_facts(tasks);
        let mut rendered = Rendered {
            title,
            body,
            url,
            tasks: task_facts,
        };
        if template.subject.is_some() || template.body.is_some() {
            let context = rendered.context(n, &loads);
            let render = |text: &str| weir_model::template::render_json(text, &context);
            // A template that fails to render must not cost the message: weir's own goes, saying
            // why.
            let mut broken = Vec::new();
            if let Some(subject) = &template.subject {
                match render(subject) {
                    // A subject is one line.
                    Ok(text) => {
                        rendered.title = text
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ");
                    }
                    Err(e) => broken.push(format!("subject: {e}")),
                }
            }
            if let Some(body) = &template.body {
                match render(body) {
                    Ok(text) => rendered.body = text,
                    Err(e) => broken.push(format!("body: {e}")),
                }
            }
            for b in broken {
                tracing::warn!(run_id = %n.run_id, error = %b, "a notifier's template failed; sending the default");
                let _ = writeln!(
                    rendered.body,
                    "(The notifier's {b}; this part is weir's default.)"
                );
            }
        }
        rendered
    }

    /// What a notifier's templates read: the notice's facts, `url`, the run's `tasks` (state,
    /// error, outputs; a mapped task's `outputs` a list), `loads` (each load's counts and
    /// totals), `failed` (the failed tasks) and the default `title` and `body`.
    fn context(&self, n: &Notice, loads: &[LoadLine]) -> serde_json::Value {
        let failed: Vec<serde_json::Value> = self
            .tasks
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(id, t)| {
                let instances = t["instances"].as_array().cloned().unwrap_or_default();
                instances
                    .into_iter()
                    .filter(|i| i["state"] == "failed" || i["state"] == "upstream_failed")
                    .map(move |i| {
                        serde_json::json!({"task_id": id, "map_index": i["map_index"], "state": i["state"], "error": i["error"]})
                    })
            })
            .collect();
        let sum = |key: &str| -> u64 {
            loads
                .iter()
                .map(|l| l.counts.get(key).copied().unwrap_or(0))
                .sum()
        };
        let mut context = self.facts(n);
        context.extend(serde_json::json!({
            "failed": failed,
            "loads": loads.iter().map(|l| serde_json::json!({"task_id": l.task, "counts": l.counts})).collect::<Vec<_>>(),
            "totals": {
                "rows_read": sum("rows_read"),
                "rows_loaded": sum("rows_loaded"),
                "rows_inserted": sum("rows_inserted"),
                "rows_updated": sum("rows_updated"),
                "rows_unchanged": sum("rows_unchanged"),
                "rows_rejected": sum("rows_rejected"),
            },
            "title": self.title,
            "body": self.body,
        }).as_object().cloned().unwrap_or_default());
        serde_json::Value::Object(context)
    }

    /// The event's facts, the link and the run's tasks (the webhook's `weir` object).
    fn facts(&self, n: &Notice) -> serde_json::Map<String, serde_json::Value> {
        let facts = serde_json::json!({
            "event": n.event.as_str(),
            "dag_id": n.dag_id,
            "run_id": n.run_id,
            "ds": n.ds,
            "logical_date": n.logical_date,
            "task_id": n.task_id,
            "map_index": n.map_index,
            "try_number": n.try_number,
            "max_tries": n.max_tries,
            "error": n.error,
            "at": n.at,
            "url": self.url,
            "tasks": self.tasks,
        });
        facts.as_object().cloned().unwrap_or_default()
    }

    /// The webhook's JSON: Slack's `text`, and the facts under `weir`.
    pub(crate) fn webhook_body(&self, n: &Notice) -> serde_json::Value {
        serde_json::json!({
            "text": format!("{}\n{}", self.title, self.body.trim_end()),
            "weir": self.facts(n),
        })
    }
}

/// A load's counts, and the line the default body gives it.
struct LoadLine {
    task: String,
    counts: BTreeMap<String, u64>,
    line: String,
}

/// The counts of every task of the run that loaded rows (outputs with `rows_loaded`).
fn load_counts(tasks: &[TaskInstanceRow]) -> Vec<LoadLine> {
    let mut out = Vec::new();
    for t in tasks {
        let Some(outputs) = t.outputs.as_ref().and_then(|o| o.as_object()) else {
            continue;
        };
        if !outputs.contains_key("rows_loaded") {
            continue;
        }
        let counts: BTreeMap<String, u64> = outputs
            .iter()
            .filter(|(k, _)| k.starts_with("rows_"))
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
        let name = if t.map_index >= 0 {
            format!("{}[{}]", t.task_id, t.map_index)
        } else {
            t.task_id.clone()
        };
        let n = |k: &str| counts.get(k).copied().unwrap_or(0);
        let line = format!(
            "{name}: {} inserted, {} updated, {} unchanged, {} rejected (of {} read)",
            n("rows_inserted"),
            n("rows_updated"),
            n("rows_unchanged"),
            n("rows_rejected"),
            n("rows_read")
        );
        out.push(LoadLine {
            task: name,
            counts,
            line,
        });
    }
    out
}

/// The run's tasks by id: `state`, `error`, `try_number` and `outputs` of an unmapped task; a
/// mapped task's `outputs` is the list of its instances' (in map-index order) and its `state`
/// the worst of theirs. Every task also lists its `instances`.
fn task_facts(tasks: &[TaskInstanceRow]) -> serde_json::Value {
    let mut by_id: BTreeMap<&str, Vec<&TaskInstanceRow>> = BTreeMap::new();
    for t in tasks {
        by_id.entry(t.task_id.as_str()).or_default().push(t);
    }
    let mut out = serde_json::Map::new();
    for (id, mut list) in by_id {
        list.sort_by_key(|t| t.map_index);
        let instance = |t: &TaskInstanceRow| {
            serde_json::json!({
                "map_index": t.map_index,
                "state": t.state.as_str(),
                "error": t.error,
                "try_number": t.try_number,
                "outputs": t.outputs.clone().unwrap_or_else(|| serde_json::json!({})),
            })
        };
        let instances: Vec<serde_json::Value> = list.iter().map(|t| instance(t)).collect();
        let entry = match list.as_slice() {
            [one] if one.map_index < 0 => {
                let mut e = instance(one);
                e["instances"] = serde_json::Value::Array(instances);
                e
            }
            _ => {
                let worst = list
                    .iter()
                    .map(|t| t.state)
                    .find(|s| *s != TaskState::Success)
                    .unwrap_or(TaskState::Success);
                serde_json::json!({
                    "state": worst.as_str(),
                    "outputs": instances.iter().map(|i| i["outputs"].clone()).collect::<Vec<_>>(),
                    "instances": instances,
                })
            }
        };
        out.insert(id.to_owned(), entry);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: NoticeEvent) -> Notice {
        Notice {
            event,
            dag_id: "hr".into(),
            run_id: "hr__2024-01-02T00:00:00Z".into(),
            logical_date: "2024-01-02T00:00:00Z".parse().unwrap(),
            ds: "2024-01-02".into(),
            task_id: Some("load".into()),
            map_index: None,
            try_number: Some(2),
            max_tries: Some(3),
            error: Some("exit code 1\nsecond line".into()),
            at: "2024-01-02T06:00:00Z".parse().unwrap(),
            asset: None,
            late_since: None,
        }
    }

    #[test]
    fn a_retry_names_the_task_try_error_and_log_link() {
        let r = Rendered::new(
            &notice(NoticeEvent::TaskRetry),
            "http://weir.example:8080",
            &[],
            &MessageTemplate::default(),
        );
        assert_eq!(
            r.title,
            "weir: task load of hr will retry after try 2 of 3 (2024-01-02)"
        );
        assert!(
            r.body.contains("Error: exit code 1\n       second line\n"),
            "{}",
            r.body
        );
        assert_eq!(
            r.url,
            "http://weir.example:8080/runs/hr__2024-01-02T00%3A00%3A00Z/tasks/load?try=2"
        );
        let body = r.webhook_body(&notice(NoticeEvent::TaskRetry));
        assert_eq!(body["weir"]["event"], "task_retry");
        assert!(body["text"].as_str().unwrap().starts_with(&r.title));
    }

    #[test]
    fn a_task_that_failed_before_running_says_so() {
        let mut n = notice(NoticeEvent::TaskFailed);
        n.try_number = None;
        n.map_index = Some(4);
        let r = Rendered::new(&n, "http://w", &[], &MessageTemplate::default());
        assert_eq!(
            r.title,
            "weir: task load[4] of hr failed, before its first try (2024-01-02)"
        );
        assert_eq!(r.url, "http://w/runs/hr__2024-01-02T00%3A00%3A00Z");
    }
}
