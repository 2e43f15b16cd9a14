//! Every example DAG in dags/ is valid.

use weir_model::parse_dag;

use crate::yaml_files;

#[test]
fn every_example_dag_parses_without_errors() {
    let files = yaml_files("dags");
    assert!(files.len() >= 3, "the examples are missing");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read example");
        let parsed = parse_dag(&text, None);
        assert!(
            parsed.dag.is_some(),
            "{}: {:#?}",
            path.display(),
            parsed.diagnostics
        );
        assert!(
            parsed.diagnostics.is_empty(),
            "{}: {:#?}",
            path.display(),
            parsed.diagnostics
        );
    }
}
