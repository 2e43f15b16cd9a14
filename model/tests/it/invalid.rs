//! Every broken fixture yields its expected `LINE:COL: message` problems, each with a place.

use weir_model::{Severity, parse_dag};

use crate::yaml_files;

/// `# expect: L:C: text` lines at the top of a fixture.
fn expectations(text: &str) -> Vec<(u32, u32, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts
                .next()
                .and_then(|s| s.trim().parse().ok())
                .expect("expect line");
            let col = parts
                .next()
                .and_then(|s| s.trim().parse().ok())
                .expect("expect col");
            (line, col, parts.next().unwrap_or("").trim().to_owned())
        })
        .collect()
}

#[test]
fn every_invalid_fixture_reports_its_problems_at_their_places() {
    let files = yaml_files("model/tests/data/invalid");
    assert!(
        files.len() >= 20,
        "expected the whole fixture set, found {}",
        files.len()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let expected = expectations(&text);
        assert!(
            !expected.is_empty(),
            "{}: fixture has no `# expect:` line",
            path.display()
        );
        let parsed = parse_dag(&text, None);
        assert!(
            parsed.dag.is_none() && parsed.has_errors(),
            "{}: should be invalid",
            path.display()
        );
        let got: Vec<String> = parsed
            .diagnostics
            .iter()
            .map(|d| match d.loc {
                Some(l) => format!("{}:{}: {}", l.line, l.col, d.message),
                None => format!("?:?: {}", d.message),
            })
            .collect();
        for (line, col, message) in &expected {
            let prefix = format!("{line}:{col}: ");
            assert!(
                got.iter()
                    .any(|g| g.starts_with(&prefix) && g.contains(message.as_str())),
                "{}: expected `{prefix}{message}`, got:\n{}",
                path.display(),
                got.join("\n")
            );
        }
        for d in parsed
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
        {
            assert!(
                d.loc.is_some(),
                "{}: problem without a place: {}",
                path.display(),
                d.message
            );
        }
    }
}

#[test]
fn problems_in_one_task_do_not_hide_those_of_another() {
    let text = "id: two\ntasks:\n  a:\n    kind: shell\n    run: echo\n    retries: x\n    timeout: y\n  b:\n    kind: shell\n    rn: echo\n";
    let parsed = parse_dag(text, None);
    let messages: Vec<&str> = parsed
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("`retries`")));
    assert!(messages.iter().any(|m| m.contains("`timeout`")));
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unknown key `rn` (did you mean `run`?)"))
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("task `b`: missing required key `run`"))
    );
}

#[test]
fn a_cycle_of_two_and_a_separate_cycle_are_both_named() {
    let text = "id: c\ntasks:\n  a: {kind: noop, depends_on: [b]}\n  b: {kind: noop, depends_on: [a]}\n  c: {kind: noop, depends_on: [e]}\n  d: {kind: noop, depends_on: [c]}\n  e: {kind: noop, depends_on: [d]}\n";
    let parsed = parse_dag(text, None);
    let messages: Vec<&str> = parsed
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        messages.contains(&"dependency cycle: a -> b -> a"),
        "{messages:#?}"
    );
    assert!(
        messages.contains(&"dependency cycle: c -> d -> e -> c"),
        "{messages:#?}"
    );
}

#[test]
fn references_the_configuration_lacks_are_warnings_not_errors() {
    let text = "id: w\npool_test: 1\n";
    assert!(parse_dag(text, None).has_errors());
    let text =
        "id: w\ndefaults: {pool: nope}\ntasks:\n  q: {kind: sql, conn: missing, sql: select 1}\n";
    let known = weir_model::Known::default();
    let parsed = parse_dag(text, Some(&known));
    assert!(parsed.dag.is_some(), "{:#?}", parsed.diagnostics);
    let warnings: Vec<&str> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("connection `missing`")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("defaults: pool `nope`")),
        "{warnings:#?}"
    );
}
