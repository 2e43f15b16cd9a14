//! Python environment creation (release build): how long weir takes to build a `python`
//! step's environment with uv, and to find it again.
//!
//!   pyenv REQUIREMENT...     e.g. `pyenv six==1.16.0` or `pyenv pandas==2.3.3`
//!
//! Prints, for those requirements: creation in a fresh cache (nothing downloaded before:
//! uv's download cache empty), creation of a new environment with uv's download cache warm
//! (another key), and the lookup of an existing environment (what every later try pays).
//! uv itself comes from the tests' shared cache (`WEIR_TEST_PYTHON_CACHE`, default
//! `target/test-tools/python`), installed there first if needed.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use weir_worker::conn::Masker;
use weir_worker::log::LogSink;
use weir_worker::step::python::env::{EnvSpec, Packages, PythonSetup, UV_VERSION, ensure};

#[tokio::main]
async fn main() {
    let requirements: Vec<String> = std::env::args().skip(1).collect();
    if requirements.is_empty() {
        eprintln!("usage: pyenv REQUIREMENT...");
        std::process::exit(2);
    }
    let (sink, mut rx) = LogSink::channel(Masker::default());
    // The build's own output is not the figure: drained, shown with PYENV_VERBOSE.
    let verbose = std::env::var_os("PYENV_VERBOSE").is_some();
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if verbose {
                eprintln!("{}", line.text);
            }
        }
    });
    let cancel = CancellationToken::new();
    let shared = weir_testkit::engine::python_setup();
    let none = EnvSpec {
        python: None,
        requirements: Packages::Lines(Vec::new()),
    };
    ensure(&shared, &none, &sink, &cancel)
        .await
        .expect("uv in the shared cache");
    let uv = shared.uv.clone().unwrap_or_else(|| {
        std::path::absolute(&shared.cache_dir)
            .expect("absolute")
            .join(format!("uv/{UV_VERSION}/bin/uv"))
    });
    let fresh = tempfile::tempdir().expect("tempdir");
    let setup = PythonSetup {
        cache_dir: fresh.path().to_path_buf(),
        uv: Some(uv),
    };
    let spec = |tag: &str| EnvSpec {
        python: None,
        requirements: Packages::Lines(
            requirements
                .iter()
                .cloned()
                .chain([format!("# {tag}")])
                .collect(),
        ),
    };
    let timed = |started: Instant| started.elapsed().as_secs_f64();
    let started = Instant::now();
    ensure(&setup, &spec("cold"), &sink, &cancel)
        .await
        .expect("cold build");
    let cold = timed(started);
    let started = Instant::now();
    ensure(&setup, &spec("warm download cache"), &sink, &cancel)
        .await
        .expect("second build");
    let warm = timed(started);
    let started = Instant::now();
    let lookups = 1000;
    for _ in 0..lookups {
        let found = ensure(&setup, &spec("cold"), &sink, &cancel)
            .await
            .expect("lookup");
        assert!(found.created_in.is_none(), "found, not built");
    }
    let lookup = timed(started) / f64::from(lookups);
    println!(
        "environment of {}: created in {cold:.2} s with nothing downloaded, {warm:.2} s with uv's download cache warm; found again in {:.1} µs",
        requirements.join(" "),
        lookup * 1e6
    );
}
