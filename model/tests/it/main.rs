//! Integration tests of weir-model: DAG files in, diagnostics and schedules out.

mod cron;
mod examples;
mod invalid;
mod model;
mod schema;

use std::path::PathBuf;

/// A path below the repository root.
pub(crate) fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// The `*.yaml` files of a folder, sorted.
pub(crate) fn yaml_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path(folder))
        .unwrap_or_else(|e| panic!("reading {folder}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}
