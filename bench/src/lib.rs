//! Shared pieces of weir's benchmarks: generated inputs and a median timer.
//!
//! Benchmarks are `--release` binaries in `src/bin/`, run by the scripts in `bench/`; they
//! print figures, they assert nothing about time.

use std::time::{Duration, Instant};

/// A DAG file of `tasks` tasks that exercises the format: several kinds, templates,
/// dependencies on earlier tasks (fan-in), defaults, foreach and when.
pub fn generated_dag(index: usize, tasks: usize) -> String {
    let mut s = format!(
        "id: generated_{index:04}\ndescription: generated DAG {index}\nschedule: \"{} {} * * *\"\ntimezone: Europe/Zurich\nstart_date: 2024-01-01\ncatchup: false\ntags: [bench, generated]\nparams:\n  limit: 100\n  table: t_{index}\ndefaults:\n  retries: 2\n  retry_delay: 30s\n  retry_backoff: 2.0\n  timeout: 15m\ntasks:\n",
        index % 60,
        index % 24
    );
    for t in 0..tasks {
        s.push_str(&format!("  task_{t:03}:\n"));
        match t % 5 {
            0 => s.push_str("    kind: shell\n    run: |\n      echo \"{{ ds }} {{ params.table }}\"\n      echo \"rows=42\" >> \"$WEIR_OUTPUT\"\n"),
            1 => s.push_str("    kind: sql\n    conn: warehouse\n    sql:\n      - delete from stage where ds = '{{ ds }}'\n      - insert into stage select * from raw where ds = '{{ ds }}'\n"),
            2 => s.push_str("    kind: load\n    source: {file: \"data/{{ ds_nodash }}/part.csv\", format: csv}\n    target: {conn: warehouse, table: stage}\n    columns:\n      id: {type: bigint, not_null: true}\n      name: {type: text}\n      at: {type: timestamptz}\n    mode: upsert\n    key: [id]\n"),
            3 => s.push_str("    kind: validate\n    conn: warehouse\n    checks:\n      - row_count: {table: stage, min: 1}\n      - unique: {table: stage, columns: [id]}\n"),
            _ => s.push_str("    kind: noop\n    trigger_rule: all_done\n    when: \"{{ params.limit > 10 }}\"\n"),
        }
        if t > 0 {
            let mut deps = vec![t - 1];
            if t >= 7 {
                deps.push(t - 7);
            }
            let deps: Vec<String> = deps.iter().map(|d| format!("task_{d:03}")).collect();
            s.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
        }
    }
    s
}

/// Runs `f` `rounds` times and returns the durations sorted (median at `len / 2`).
pub fn time_rounds(rounds: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}
