//! Any text into the DAG parser: it must answer with a DAG or diagnostics, never panic; a valid
//! DAG must survive the JSON round trip that storing a DAG version makes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = weir_model::parse_dag(text, Some(&weir_model::Known::default()));
    for d in &parsed.diagnostics {
        let _ = d.display("fuzz.yaml").to_string();
    }
    if let Some(dag) = parsed.dag {
        let json = serde_json::to_string(&dag.spec).expect("a valid spec serializes");
        let back: weir_model::DagSpec = serde_json::from_str(&json).expect("and reads back");
        weir_model::Dag::from_spec(back).expect("and validates again");
        let _ = dag.levels();
    }
});
