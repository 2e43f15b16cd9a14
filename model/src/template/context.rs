//! What a task's templates can read ([`RenderContext`]): the run's dates in the DAG's zone,
//! params, the try, the item, upstream outputs and allowed environment variables.

/// What a task's templates can read (SPEC §2), for one try.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RenderContext {
    /// DAG id.
    pub dag_id: String,
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// The try about to run (from 1).
    pub try_number: i32,
    /// `YYYY-MM-DD` of the logical date in the DAG's time zone: the day the user means.
    pub ds: String,
    /// `YYYYMMDD` of the same day.
    pub ds_nodash: String,
    /// The logical date in the DAG's time zone, RFC 3339 with its offset.
    pub ts: String,
    /// Same as `ts`.
    pub logical_date: String,
    /// `YYYY-MM-DD` of the logical date in UTC.
    pub ds_utc: String,
    /// The logical date in UTC, RFC 3339 (`Z`).
    pub ts_utc: String,
    /// The data interval's start in the DAG's time zone, RFC 3339 with its offset.
    pub data_interval_start: String,
    /// The data interval's end, likewise.
    pub data_interval_end: String,
    /// The DAG's IANA time zone.
    pub timezone: String,
    /// The run's params.
    pub params: serde_json::Value,
    /// This instance's `foreach` item (null otherwise).
    pub item: serde_json::Value,
    /// `tasks.<id>.outputs.<key>` of upstream tasks in the run.
    pub tasks: serde_json::Map<String, serde_json::Value>,
    /// Allowed environment variables.
    pub env: serde_json::Map<String, serde_json::Value>,
    /// What made a run from assets or files: `{kind, events, assets}` or `{kind, files}`
    /// (null for other runs).
    pub trigger: serde_json::Value,
}

impl RenderContext {
    /// The context of a run at `logical_date` with its interval, of a DAG in time zone `tz`:
    /// dates are the DAG's (a daily DAG's `ds` is the day it runs for, wherever the zone is);
    /// `ds_utc` and `ts_utc` keep the UTC forms.
    pub fn for_run(
        dag_id: &str,
        run_id: &str,
        logical_date: chrono::DateTime<chrono::Utc>,
        interval: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
        tz: chrono_tz::Tz,
        params: serde_json::Value,
    ) -> RenderContext {
        let local = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&tz);
        let rfc = |t: chrono::DateTime<chrono::Utc>| {
            // `Z` for UTC itself, the offset otherwise.
            local(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        let day = local(logical_date);
        RenderContext {
            dag_id: dag_id.to_owned(),
            run_id: run_id.to_owned(),
            ds: day.format("%Y-%m-%d").to_string(),
            ds_nodash: day.format("%Y%m%d").to_string(),
            ts: rfc(logical_date),
            logical_date: rfc(logical_date),
            ds_utc: logical_date.format("%Y-%m-%d").to_string(),
            ts_utc: logical_date.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            data_interval_start: rfc(interval.0),
            data_interval_end: rfc(interval.1),
            timezone: tz.name().to_owned(),
            params,
            ..RenderContext::default()
        }
    }

    /// Records the outputs of a run's succeeded instances, given as `(task_id, map_index,
    /// outputs)`: a mapped task's outputs become a list in map-index order.
    pub fn add_succeeded_outputs<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a str, i32, Option<&'a serde_json::Value>)>,
    ) {
        let mut mapped: std::collections::BTreeMap<&str, Vec<(i32, serde_json::Value)>> =
            std::collections::BTreeMap::new();
        for (task_id, map_index, outputs) in rows {
            let outputs = outputs.cloned().unwrap_or_else(|| serde_json::json!({}));
            if map_index >= 0 {
                mapped
                    .entry(task_id)
                    .or_default()
                    .push((map_index, outputs));
            } else {
                self.add_outputs(task_id, outputs);
            }
        }
        for (task_id, mut list) in mapped {
            list.sort_by_key(|(i, _)| *i);
            self.add_outputs(
                task_id,
                serde_json::Value::Array(list.into_iter().map(|(_, v)| v).collect()),
            );
        }
    }

    /// Sets `env.<NAME>` to the allowed environment variables and their values.
    pub fn set_env(&mut self, allowed: &std::collections::BTreeMap<String, String>) {
        self.env = allowed
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
    }

    /// What a template can read besides the dates, for error messages: the params' names and
    /// the upstream outputs' keys.
    pub(super) fn available(&self) -> String {
        let names = |v: &serde_json::Value| match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            }
            _ => "nothing".to_owned(),
        };
        let outputs: Vec<String> = self
            .tasks
            .iter()
            .map(|(id, t)| match &t["outputs"] {
                serde_json::Value::Array(list) => {
                    format!("tasks.{id}.outputs (a list of {})", list.len())
                }
                other => format!("tasks.{id}.outputs: {}", names(other)),
            })
            .collect();
        format!(
            "`params` has: {}; upstream outputs: {}",
            names(&self.params),
            if outputs.is_empty() {
                "none".to_owned()
            } else {
                outputs.join("; ")
            }
        )
    }

    /// Records an upstream task's outputs (`tasks.<id>.outputs`).
    pub fn add_outputs(&mut self, task_id: &str, outputs: serde_json::Value) {
        let mut entry = serde_json::Map::new();
        entry.insert("outputs".to_owned(), outputs);
        self.tasks
            .insert(task_id.to_owned(), serde_json::Value::Object(entry));
    }
}
