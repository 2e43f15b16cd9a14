//! The JSON Schema editors use accepts every valid DAG and rejects what it can of the invalid
//! ones, checked by a standard draft 2020-12 validator (the `jsonschema` crate), the way an
//! editor's YAML language server checks a file.

use serde_json::Value;

use crate::{repo_path, yaml_files};

fn validator() -> jsonschema::Validator {
    let schema = weir_model::schema::dag_schema();
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

fn as_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn every_example_and_valid_fixture_passes_the_schema() {
    let v = validator();
    let mut files = yaml_files("dags");
    files.extend(yaml_files("model/tests/data/valid"));
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let found = problems(&v, &as_json(&path));
        assert!(found.is_empty(), "{}: {found:#?}", path.display());
    }
}

#[test]
fn the_schema_rejects_typos_and_wrong_shapes() {
    let v = validator();
    // Fixtures whose problem is the file's shape: keys, kinds, types, enumerations.
    for name in [
        "typo_key",
        "unknown_kind",
        "wrong_type",
        "bad_trigger_rule",
        "missing_tasks",
        "bad_step_fields",
    ] {
        let path = repo_path(&format!("model/tests/data/invalid/{name}.yaml"));
        assert!(
            !problems(&v, &as_json(&path)).is_empty(),
            "{name}: the schema let it through"
        );
    }
    // A typo in a task's own field and in a step's field.
    for (yaml, what) in [
        (
            "id: d\ntasks:\n  a: {kind: shell, run: echo, retires: 2}\n",
            "retires",
        ),
        (
            "id: d\ntasks:\n  a: {kind: sql, conn: c, sqll: select 1}\n",
            "sqll",
        ),
        ("id: d\ntasks:\n  a: {kind: shell, runn: echo}\n", "runn"),
    ] {
        let value: Value = serde_saphyr::from_str(yaml).expect("yaml");
        let found = problems(&v, &value);
        assert!(!found.is_empty(), "{what} was accepted");
    }
}
