//! The validated model: defaults, round trips, backfill planning, retry delays.

use chrono::{DateTime, NaiveDate, Utc};
use weir_model::{Dag, DagSpec, TriggerRule, parse_dag};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

fn dag(text: &str) -> Dag {
    let parsed = parse_dag(text, None);
    parsed
        .dag
        .unwrap_or_else(|| panic!("{:#?}", parsed.diagnostics))
}

#[test]
fn defaults_apply_unless_a_task_sets_its_own() {
    let d = dag(
        "id: d\ndefaults: {retries: 3, retry_delay: 10s, queue: etl, trigger_rule: all_done}\ntasks:\n  a: {kind: noop}\n  b: {kind: noop, retries: 0, queue: fast, trigger_rule: one_success, depends_on: a}\n",
    );
    let (a, b) = (&d.tasks["a"], &d.tasks["b"]);
    assert_eq!(
        (a.retry.retries, a.queue.as_str(), a.trigger_rule),
        (3, "etl", TriggerRule::AllDone)
    );
    assert_eq!(
        (b.retry.retries, b.queue.as_str(), b.trigger_rule),
        (0, "fast", TriggerRule::OneSuccess)
    );
    assert_eq!(a.retry.delay.0.as_secs(), 10);
    assert_eq!(b.depends_on, vec!["a".to_owned()]);
}

#[test]
fn retry_delays_grow_by_the_backoff_and_stop_at_the_cap() {
    let d = dag(
        "id: r\ntasks:\n  a: {kind: noop, retries: 5, retry_delay: 10s, retry_backoff: 2, max_retry_delay: 1m}\n",
    );
    let policy = &d.tasks["a"].retry;
    let delays: Vec<u64> = (2..=6).map(|t| policy.delay_before(t).as_secs()).collect();
    assert_eq!(delays, vec![10, 20, 40, 60, 60]);
}

#[test]
fn a_stored_spec_round_trips_through_json() {
    for path in crate::yaml_files("dags") {
        let d = dag(&std::fs::read_to_string(&path).expect("read"));
        let json = serde_json::to_string(&d.spec).expect("serialize");
        let back: DagSpec = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{}: {e}\n{json}", path.display()));
        assert_eq!(
            serde_json::to_string(&back).expect("serialize again"),
            json,
            "{}",
            path.display()
        );
        let rebuilt = Dag::from_spec(back).unwrap_or_else(|e| panic!("{}: {e:#?}", path.display()));
        assert_eq!(rebuilt.tasks.len(), d.tasks.len());
    }
}

#[test]
fn levels_put_each_task_after_all_its_upstreams() {
    let d = dag(
        "id: l\ntasks:\n  c: {kind: noop, depends_on: [a, b]}\n  b: {kind: noop, depends_on: [a]}\n  a: {kind: noop}\n  z: {kind: noop}\n",
    );
    assert_eq!(d.levels(), vec![vec!["a", "z"], vec!["b"], vec!["c"]]);
}

const DAILY_NY: &str = "id: daily\nschedule: \"0 6 * * *\"\ntimezone: America/New_York\nstart_date: 2024-03-01\nend_date: 2024-03-20\ntasks:\n  a: {kind: noop}\n";

#[test]
fn backfill_days_are_inclusive_and_read_in_the_dag_zone() {
    let plan = dag(DAILY_NY)
        .plan_backfill(day("2024-03-09"), day("2024-03-11"))
        .expect("plan");
    let starts: Vec<DateTime<Utc>> = plan.iter().map(|i| i.start).collect();
    // 06:00 EST is 11:00Z; DST starts on the 10th, so 06:00 EDT is 10:00Z from then on.
    assert_eq!(
        starts,
        vec![
            utc("2024-03-09T11:00:00Z"),
            utc("2024-03-10T10:00:00Z"),
            utc("2024-03-11T10:00:00Z")
        ]
    );
    assert_eq!(
        plan[0].end,
        utc("2024-03-10T10:00:00Z"),
        "the interval across the DST change is 23 hours long"
    );
}

#[test]
fn backfill_stays_within_start_and_end_dates() {
    let d = dag(DAILY_NY);
    let plan = d
        .plan_backfill(day("2024-02-01"), day("2024-04-30"))
        .expect("plan");
    assert_eq!(plan.len(), 20, "March 1st to 20th");
    assert_eq!(
        plan.first().map(|i| i.start),
        Some(utc("2024-03-01T11:00:00Z"))
    );
    assert_eq!(
        plan.last().map(|i| i.start),
        Some(utc("2024-03-20T10:00:00Z"))
    );
}

#[test]
fn backfill_intervals_are_contiguous_and_inside_the_range_for_many_schedules() {
    let schedules = [
        "0 * * * *",
        "*/20 * * * *",
        "30 2 * * *",
        "0 1 * * *",
        "0 0 * * 1-5",
        "0 12 1,15 * 5",
        "@monthly",
    ];
    let zones = [
        "UTC",
        "America/New_York",
        "Europe/Zurich",
        "Australia/Sydney",
    ];
    for schedule in schedules {
        for zone in zones {
            let d = dag(&format!(
                "id: p\nschedule: \"{schedule}\"\ntimezone: {zone}\nstart_date: 2020-01-01\ntasks:\n  a: {{kind: noop}}\n"
            ));
            for (from, to) in [
                ("2024-03-01", "2024-04-15"),
                ("2024-10-01", "2024-11-10"),
                ("2024-02-27", "2024-03-02"),
            ] {
                let plan = d.plan_backfill(day(from), day(to)).expect("plan");
                let lo = weir_model::schedule::start_of_day(d.timezone, day(from));
                let hi = weir_model::schedule::start_of_day(
                    d.timezone,
                    day(to).succ_opt().expect("next day"),
                );
                for pair in plan.windows(2) {
                    assert_eq!(
                        pair[0].end, pair[1].start,
                        "{schedule} {zone}: gap or overlap"
                    );
                    assert!(
                        pair[0].start < pair[0].end,
                        "{schedule} {zone}: empty interval"
                    );
                }
                for i in &plan {
                    assert!(
                        i.start >= lo && i.start < hi,
                        "{schedule} {zone}: {} outside {from}..={to}",
                        i.start
                    );
                }
            }
        }
    }
}

#[test]
fn hourly_runs_every_real_hour_across_fall_back() {
    let d = dag(
        "id: h\nschedule: \"@hourly\"\ntimezone: America/New_York\nstart_date: 2024-01-01\ntasks:\n  a: {kind: noop}\n",
    );
    let plan = d
        .plan_backfill(day("2024-11-03"), day("2024-11-03"))
        .expect("plan");
    assert_eq!(plan.len(), 25, "the fall-back day has 25 hours");
    let spring = d
        .plan_backfill(day("2024-03-10"), day("2024-03-10"))
        .expect("plan");
    assert_eq!(spring.len(), 23, "the spring-forward day has 23 hours");
}

#[test]
fn backfill_of_an_unscheduled_dag_is_refused() {
    let err = dag("id: m\ntasks:\n  a: {kind: noop}\n")
        .plan_backfill(day("2024-01-01"), day("2024-01-02"))
        .expect_err("no schedule");
    assert!(err.contains("no schedule"), "{err}");
}

#[test]
fn the_json_schema_names_every_kind_and_closes_each() {
    let schema = weir_model::schema::dag_schema();
    let variants = schema["$defs"]["TaskSpec"]["oneOf"]
        .as_array()
        .expect("oneOf");
    let kinds: Vec<&str> = variants
        .iter()
        .filter_map(|v| v["properties"]["kind"]["const"].as_str())
        .collect();
    assert_eq!(kinds, weir_model::Step::KINDS.to_vec());
    for v in variants {
        assert_eq!(v["additionalProperties"], serde_json::Value::Bool(false));
        assert!(
            v["properties"]["depends_on"].is_object(),
            "common fields in every kind"
        );
    }
}

/// The cron library searches no further than 4999: a later start would silently never run.
#[test]
fn a_start_date_past_the_last_scheduled_year_is_refused() {
    let parsed = weir_model::parse_dag(
        "id: d\nschedule: \"@daily\"\nstart_date: 6000-01-01\ntasks:\n  a: {kind: noop}\n",
        None,
    );
    assert!(parsed.dag.is_none());
    assert!(
        parsed.diagnostics.iter().any(|d| d
            .message
            .contains("`start_date` 6000-01-01 is after 4999, the last year weir schedules in")),
        "{:?}",
        parsed.diagnostics
    );
}

#[test]
fn an_ancient_start_date_with_catchup_is_warned_about() {
    let parsed = weir_model::parse_dag(
        "id: d\nschedule: \"@hourly\"\nstart_date: 0001-01-01\ncatchup: true\ntasks:\n  a: {kind: noop}\n",
        None,
    );
    assert!(
        parsed.dag.is_some(),
        "warnings only: {:?}",
        parsed.diagnostics
    );
    let text: Vec<String> = parsed
        .diagnostics
        .iter()
        .map(|d| format!("{:?} {}", d.loc.map(|l| (l.line, l.col)), d.message))
        .collect();
    assert!(
        text.iter()
            .any(|t| t.contains("before 1970: is the year a typo?")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("spans more than 1000 intervals") && t.contains("max_catchup_runs")),
        "{text:?}"
    );
}

/// A value in a shell script reaches it as a variable: inside single quotes that variable
/// stays text, so validation warns there, and only there.
#[test]
fn a_template_inside_single_quotes_of_a_shell_script_is_warned_about() {
    let warned = |run: &str| {
        let yaml = format!(
            "id: d\nparams:\n  x: a\ntasks:\n  t:\n    kind: shell\n    run: {}\n",
            serde_json::to_string(run).expect("json")
        );
        let parsed = weir_model::parse_dag(&yaml, None);
        assert!(parsed.dag.is_some(), "{:?}", parsed.diagnostics);
        parsed.diagnostics.iter().any(|d| {
            d.message
                .contains("inside single quotes in `run` stays text")
        })
    };
    assert!(warned("echo '{{ params.x }}'"));
    assert!(warned("psql -c 'select * from t where d = {{ params.x }}'"));
    assert!(!warned("echo \"{{ params.x }}\""));
    assert!(!warned("echo {{ params.x }}"));
    assert!(!warned("echo \"it's {{ params.x }}\""));
    assert!(!warned("# don't worry\necho {{ params.x }}"));
    assert!(!warned("echo 'plain' \"{{ params.x }}\""));
}

/// `| safe` on a value a triggering operator or an upstream task chooses pastes it into a
/// script or a statement as code: validation warns, in shell and in SQL, and not for values
/// the DAG's author writes (issue #14).
#[test]
fn a_chosen_value_marked_safe_is_warned_about() {
    let warned = |task: &str| {
        let yaml = format!(
            "id: d\nparams:\n  x: a\n  items: []\ntasks:\n  up: {{kind: noop}}\n  t:\n    depends_on: [up]\n{task}"
        );
        let parsed = weir_model::parse_dag(&yaml, None);
        assert!(parsed.dag.is_some(), "{:?}", parsed.diagnostics);
        parsed
            .diagnostics
            .iter()
            .any(|d| d.message.contains("drop `| safe` to pass it as data"))
    };
    let shell = |run: &str| {
        format!(
            "    kind: shell\n    run: {}\n",
            serde_json::to_string(run).expect("json")
        )
    };
    let sql = |q: &str| {
        format!(
            "    kind: sql\n    conn: wh\n    sql: {}\n",
            serde_json::to_string(q).expect("json")
        )
    };
    assert!(warned(&shell("echo {{ params.x | safe }}")));
    assert!(warned(&shell("echo {{ tasks.up.outputs.y|safe }}")));
    assert!(warned(&sql("select * from {{ params.x | upper | safe }}")));
    assert!(warned(
        "    kind: sql\n    conn: wh\n    foreach: \"{{ params.items | tojson }}\"\n    sql: \"select {{ item | safe }}\"\n"
    ));
    assert!(!warned(&shell("echo {{ params.x }}")));
    assert!(!warned(&shell("echo {{ ds_nodash | safe }}")));
    assert!(!warned(&sql("select * from {{ params.x | ident }}")));
    assert!(!warned(&sql(
        "select '{{ params.x | default(value=\"safe\") }}'"
    )));
}

#[test]
fn a_python_script_is_python_not_a_template_while_env_and_dbt_vars_render() {
    use weir_model::Step;
    use weir_model::template::{RenderContext, Renderer};
    let d = dag(r#"id: code
params: {n: 7}
tasks:
  py:
    kind: python
    script: |
      print(f"{{literal}} {% not a tag")
    requirements: ["pandas=={{ x }}"]
    env: {DAY: "{{ ds }}"}
  model:
    kind: dbt
    project: shop
    conn: wh
    select: "tag:{{ params.n }}"
    vars: {ds: "{{ ds }}", n: "{{ params.n }}"}
"#);
    let ctx = RenderContext::for_run(
        "code",
        "r1",
        utc("2024-03-01T00:00:00Z"),
        (utc("2024-03-01T00:00:00Z"), utc("2024-03-02T00:00:00Z")),
        chrono_tz::UTC,
        serde_json::json!({"n": 7}),
    );
    let r = Renderer::new(&ctx).expect("renderer");
    let Step::Python(py) = r
        .render_step(&d.tasks["py"].step, &|_| {
            Ok(weir_model::sql::Dialect::Postgres)
        })
        .expect("render python")
    else {
        panic!("not python")
    };
    assert_eq!(
        py.script.as_deref(),
        Some("print(f\"{{literal}} {% not a tag\")\n")
    );
    assert_eq!(
        py.requirements,
        Some(weir_model::spec::Requirements::List(vec![
            "pandas=={{ x }}".into()
        ]))
    );
    assert_eq!(py.env["DAY"].0, "2024-03-01");
    let Step::Dbt(model) = r
        .render_step(&d.tasks["model"].step, &|_| {
            Ok(weir_model::sql::Dialect::Postgres)
        })
        .expect("render dbt")
    else {
        panic!("not dbt")
    };
    assert_eq!(model.vars["ds"], "2024-03-01");
    assert_eq!(model.vars["n"], "7");
    assert_eq!(model.select, ["tag:7"]);
}
