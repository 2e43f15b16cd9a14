//! Parses and validates 1,000 generated DAG files of 50 tasks each, in memory, on one thread
//! and on every core, and prints the median, fastest and slowest of several rounds. `--write DIR` also writes the files, so the
//! CLI can be timed on them (`bench/parse.sh` does both).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut write_to: Option<PathBuf> = None;
    let (mut files, mut tasks, mut rounds) = (1000usize, 50usize, 10usize);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&arg));
        match arg.as_str() {
            "--write" => write_to = Some(PathBuf::from(value())),
            "--files" => files = value().parse().unwrap_or_else(|_| usage("--files")),
            "--tasks" => tasks = value().parse().unwrap_or_else(|_| usage("--tasks")),
            "--rounds" => rounds = value().parse().unwrap_or_else(|_| usage("--rounds")),
            other => usage(other),
        }
    }
    let texts: Vec<String> = (0..files)
        .map(|i| weir_bench::generated_dag(i, tasks))
        .collect();
    if let Some(dir) = &write_to {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for (i, text) in texts.iter().enumerate() {
            std::fs::write(dir.join(format!("generated_{i:04}.yaml")), text)
                .unwrap_or_else(|e| panic!("writing: {e}"));
        }
    }
    // Every generated file must be valid, or the figure would time the error path.
    for (i, text) in texts.iter().enumerate() {
        let parsed = weir_model::parse_dag(text, None);
        assert!(
            parsed.dag.is_some(),
            "generated file {i} is invalid: {:#?}",
            parsed.diagnostics
        );
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let times = weir_bench::time_rounds(rounds, || {
        for text in &texts {
            std::hint::black_box(weir_model::parse_dag(text, None));
        }
    });
    let median = times[times.len() / 2];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = weir_bench::time_rounds(rounds, || {
        std::thread::scope(|scope| {
            for chunk in texts.chunks(texts.len().div_ceil(threads)) {
                scope.spawn(move || {
                    for text in chunk {
                        std::hint::black_box(weir_model::parse_dag(text, None));
                    }
                });
            }
        });
    });
    let parallel_median = parallel[parallel.len() / 2];
    println!(
        "parse+validate {files} files x {tasks} tasks ({:.1} MB): median {:.1} ms, min {:.1} ms, max {:.1} ms over {rounds} rounds; {:.1} us per file, {:.2} us per task",
        bytes as f64 / 1e6,
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e6 / files as f64,
        median.as_secs_f64() * 1e6 / (files * tasks) as f64,
    );
    println!(
        "same on {threads} threads: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        parallel_median.as_secs_f64() * 1e3,
        parallel[0].as_secs_f64() * 1e3,
        parallel[parallel.len() - 1].as_secs_f64() * 1e3,
    );
}

fn usage(arg: &str) -> ! {
    eprintln!(
        "parse_dags: bad argument `{arg}`\nusage: parse_dags [--files N] [--tasks N] [--rounds N] [--write DIR]"
    );
    std::process::exit(2);
}
