//! Cron ticks against reference vectors from croniter + pendulum running Airflow's algorithm
//! (model/tests/data/gen_cron_vectors.py): DST in both directions and both hemispheres, month
//! ends, leap days, ranges, steps, names, `7` as Sunday and the day-of-month/day-of-week OR rule.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use weir_model::Schedule;
use weir_model::schedule::parse_schedule;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    expr: String,
    timezone: String,
    after: DateTime<Utc>,
    ticks: Vec<DateTime<Utc>>,
}

#[test]
fn ticks_match_the_reference_vectors() {
    let text = std::fs::read_to_string(crate::repo_path("model/tests/data/cron_vectors.json"))
        .expect("vectors");
    let vectors: Vectors = serde_json::from_str(&text).expect("vectors parse");
    assert!(vectors.cases.len() > 500, "vectors incomplete");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &vectors.cases {
        let tz: Tz = case.timezone.parse().expect("zone");
        let Ok(Schedule::Cron(cron)) = parse_schedule(&case.expr) else {
            panic!("`{}` does not parse", case.expr)
        };
        let mut t = case.after;
        for (i, expected) in case.ticks.iter().enumerate() {
            let got = cron.next_after(tz, t);
            checked += 1;
            if got != Some(*expected) {
                failures.push(format!(
                    "{} in {} after {}: tick {i} is {got:?}, expected {expected}",
                    case.expr, case.timezone, case.after
                ));
                break;
            }
            t = *expected;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        vectors.cases.len(),
        failures.join("\n")
    );
    assert!(checked > 10_000);
}
