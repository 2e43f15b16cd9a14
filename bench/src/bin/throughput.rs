//! The open-loop load of bench/throughput.sh: triggers manual runs through the API at a steady
//! rate, whatever the answers' latency, and writes one line per trigger.
//!
//!   throughput BASE_URL TOKEN RUNS_PER_MINUTE SECONDS DAGS OUT
//!
//! Triggers go round-robin to the DAGs `tp_01` … `tp_DAGS`, evenly spaced; each is its own
//! request (a slow answer delays no later trigger). OUT gets `run_id,sent_micros,status`
//! (`sent_micros`: Unix time of the request's start; `run_id` empty when refused), and the
//! program prints how many were sent, refused and how long the answers took.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, rate, seconds, dags, out] = args.as_slice() else {
        eprintln!("usage: throughput BASE_URL TOKEN RUNS_PER_MINUTE SECONDS DAGS OUT");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("RUNS_PER_MINUTE: a number");
    let seconds: f64 = seconds.parse().expect("SECONDS: a number");
    let dags: usize = dags.parse().expect("DAGS: a number");
    let total = (rate * seconds / 60.0).round() as usize;
    let spacing = Duration::from_secs_f64(60.0 / rate);
    // reqwest is built without a TLS provider of its own (the workspace's choice); plain HTTP
    // needs none, but the client's builder asks for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("HTTP client");

    let started = Instant::now();
    let mut ticks = tokio::time::interval(spacing);
    // Behind schedule (a busy core), the missed triggers go at once: the rate is the rate.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        ticks.tick().await;
        let url = format!("{base}/api/v1/dags/tp_{:02}/runs", i % dags + 1);
        let request = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{}");
        requests.push(tokio::spawn(async move {
            let sent = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_micros();
            let t = Instant::now();
            let (status, run_id) = match request.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let body: serde_json::Value = res.json().await.unwrap_or_default();
                    let run_id = body["run_id"].as_str().unwrap_or_default().to_owned();
                    (status, run_id)
                }
                Err(e) => {
                    eprintln!("trigger failed: {e}");
                    (0, String::new())
                }
            };
            (run_id, sent, status, t.elapsed())
        }));
    }
    let sending = started.elapsed();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("OUT"));
    let mut answers = Vec::with_capacity(total);
    let mut refused = 0;
    for r in requests {
        let (run_id, sent, status, took) = r.await.expect("request task");
        if status != 201 {
            refused += 1;
        }
        answers.push(took.as_secs_f64() * 1000.0);
        writeln!(file, "{run_id},{sent},{status}").expect("write OUT");
    }
    file.flush().expect("write OUT");
    answers.sort_by(f64::total_cmp);
    let pct = |p: f64| answers[((answers.len() as f64 * p) as usize).min(answers.len() - 1)];
    println!(
        "  sent {total} triggers in {:.1} s ({:.0}/min), {refused} refused; API answer p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        sending.as_secs_f64(),
        total as f64 * 60.0 / sending.as_secs_f64(),
        pct(0.5),
        pct(0.95),
        answers[answers.len() - 1],
    );
}
