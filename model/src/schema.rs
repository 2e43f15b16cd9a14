//! The JSON Schema of the DAG format, generated from the spec types so it cannot drift.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::spec::{DagSpec, TaskCommon};

/// The JSON Schema (draft 2020-12) of a DAG file, for editors (yaml-language-server).
pub fn dag_schema() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<DagSpec>();
    let mut value = schema.to_value();
    // `tasks` has a serde default only because it is decoded task by task; a file needs it.
    if let Some(required) = value.get_mut("required").and_then(Value::as_array_mut)
        && !required.iter().any(|r| r == "tasks")
    {
        required.push(Value::String("tasks".into()));
    }
    close_tasks(&mut value);
    value
}

/// schemars renders `TaskSpec` as the common fields plus a `oneOf` over kinds, each variant a
/// `$ref` to its step's fields, which lets any key through. A DAG file rejects unknown keys,
/// so each variant gets its step's properties inlined (not behind a `$ref`: under draft
/// 2020-12 `additionalProperties` sees only properties of its own schema object, so a
/// `$ref`'d `run` or `sql` would count as additional), the common properties, and
/// `additionalProperties: false`: editors then accept every valid task and flag typos the way
/// weir does.
fn close_tasks(root: &mut Value) {
    let common = crate::yaml::struct_fields::<TaskCommon>();
    let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(task) = defs.get("TaskSpec").cloned() else {
        return;
    };
    let common_props: Map<String, Value> = task
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(k, _)| common.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let Some(variants) = task.get("oneOf").and_then(Value::as_array) else {
        return;
    };
    let closed: Vec<Value> = variants
        .iter()
        .map(|variant| {
            let mut variant = variant.clone();
            if let Some(obj) = variant.as_object_mut() {
                inline_step(obj, defs);
                let props = obj
                    .entry("properties")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(props) = props.as_object_mut() {
                    for (k, v) in &common_props {
                        props.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            variant
        })
        .collect();
    let description = task.get("description").cloned().unwrap_or(Value::Null);
    let mut new_task = Map::new();
    new_task.insert("description".into(), description);
    new_task.insert("type".into(), Value::String("object".into()));
    new_task.insert(
        "required".into(),
        Value::Array(vec![Value::String("kind".into())]),
    );
    new_task.insert("oneOf".into(), Value::Array(closed));
    defs.insert("TaskSpec".into(), Value::Object(new_task));
}

/// Replaces a variant's `$ref` to its step by the step's properties and required keys.
fn inline_step(variant: &mut Map<String, Value>, defs: &Map<String, Value>) {
    let Some(target) = variant
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .and_then(Value::as_object)
    else {
        return;
    };
    // Only a plain object schema inlines; anything richer keeps its `$ref`.
    if target.keys().any(|k| {
        !matches!(
            k.as_str(),
            "description" | "type" | "properties" | "required"
        )
    }) {
        return;
    }
    variant.remove("$ref");
    if let Some(props) = target.get("properties").and_then(Value::as_object) {
        let own = variant
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(own) = own.as_object_mut() {
            for (k, v) in props {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if let Some(required) = target.get("required").and_then(Value::as_array) {
        let own = variant
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(own) = own.as_array_mut() {
            for r in required {
                if !own.contains(r) {
                    own.push(r.clone());
                }
            }
        }
    }
}

/// Schema of fields that take one string or a list of them.
pub(crate) fn one_or_many_strings(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "string" },
            { "type": "array", "items": { "type": "string" } }
        ]
    })
}
