//! Reading DAG files from disk: a folder (recursively, `*.yaml`/`*.yml`) or single files, and
//! a scanner that re-parses only files whose size or modification time changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use crate::error::{Result, SchedulerError};
use weir_model::{Dag, Diagnostic, Known, Parsed, parse_dag};

/// One DAG file and what parsing it found.
#[derive(Debug)]
pub struct DagFile {
    /// The path as given or found (used in messages).
    pub path: PathBuf,
    /// The DAG (when valid) and its problems.
    pub parsed: Parsed,
}

impl DagFile {
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }
}

/// Reads and validates every DAG file under `paths`, in path order. A DAG id defined twice is
/// an error in every file after the first.
///
/// # Errors
/// A path that does not exist or a folder that cannot be read.
pub fn load_dag_files(paths: &[PathBuf], known: Option<&Known>) -> Result<Vec<DagFile>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.map_err(|e| {
                    SchedulerError::Folder(format!("reading folder {}: {e}", path.display()))
                })?;
                if entry.file_type().is_file() && is_dag_file(entry.path()) {
                    files.push(entry.into_path());
                }
            }
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(SchedulerError::Folder(format!(
                "{}: no such file or folder",
                path.display()
            )));
        }
    }
    let mut out = read_all(files, known);
    let mut first_seen: HashMap<String, PathBuf> = HashMap::new();
    for file in &mut out {
        let Some(id) = file.parsed.dag.as_ref().map(|d| d.id().to_owned()) else {
            continue;
        };
        match first_seen.get(&id) {
            Some(first) => {
                let loc = file.parsed.id_loc;
                file.parsed.diagnostics.push(Diagnostic::error(
                    loc,
                    format!("DAG id `{id}` is already used by {}", first.display()),
                ));
                file.parsed.dag = None;
            }
            None => {
                first_seen.insert(id, file.path.clone());
            }
        }
    }
    Ok(out)
}

/// Reads and parses files on every core: files are independent, and a folder of a thousand
/// DAGs parses in half the time on two cores. Results keep the order of `files`.
fn read_all(files: Vec<PathBuf>, known: Option<&Known>) -> Vec<DagFile> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<PathBuf>> = Vec::with_capacity(threads);
    let mut rest = files.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(chunk).collect());
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|paths| {
                scope.spawn(move || {
                    paths
                        .into_iter()
                        .map(|p| read_one(p, known))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn is_dag_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Scans a DAG folder repeatedly; keeps each file's size and modification time so that an
/// unchanged folder costs one `stat` per file. The cache is only a hint: a restarted scheduler
/// re-reads everything and the store ignores versions it already has.
#[derive(Debug, Default)]
pub struct FolderScanner {
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
}

/// What changed in the folder since the last scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files new or changed since the last scan, parsed.
    pub changed: Vec<DagFile>,
    /// Files gone since the last scan.
    pub removed: Vec<PathBuf>,
}

impl FolderScanner {
    /// Scans `folder`: parses new and changed files.
    ///
    /// # Errors
    /// A folder that cannot be read.
    pub fn scan(&mut self, folder: &Path, known: Option<&Known>) -> Result<Scan> {
        let mut current = HashMap::new();
        if folder.is_dir() {
            for entry in walkdir::WalkDir::new(folder).sort_by_file_name() {
                let entry = entry.map_err(|e| {
                    SchedulerError::Folder(format!("reading folder {}: {e}", folder.display()))
                })?;
                if entry.file_type().is_file() && is_dag_file(entry.path()) {
                    let meta = entry.metadata().map_err(|e| {
                        SchedulerError::Folder(format!("reading {}: {e}", entry.path().display()))
                    })?;
                    current.insert(entry.into_path(), (meta.len(), meta.modified().ok()));
                }
            }
        } else {
            return Err(SchedulerError::Folder(format!(
                "dags folder {} does not exist",
                folder.display()
            )));
        }
        let mut changed_paths: Vec<PathBuf> = current
            .iter()
            .filter(|(p, m)| self.seen.get(*p) != Some(m))
            .map(|(p, _)| p.clone())
            .collect();
        changed_paths.sort();
        let mut removed: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !current.contains_key(*p))
            .cloned()
            .collect();
        removed.sort();
        self.seen = current;
        Ok(Scan {
            changed: read_all(changed_paths, known),
            removed,
        })
    }
}

fn read_one(path: PathBuf, known: Option<&Known>) -> DagFile {
    let parsed = match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_dag(&text, known),
            Err(_) => Parsed::failed(Diagnostic::error(None, "the file is not UTF-8 text")),
        },
        Err(e) => Parsed::failed(Diagnostic::error(
            None,
            format!("cannot read the file: {e}"),
        )),
    };
    DagFile { path, parsed }
}

/// Finds the DAG with id `dag_id` among valid files.
///
/// # Errors
/// No valid DAG has that id (with the closest id, and a note when a broken file may hold it).
pub fn find_dag<'a>(files: &'a [DagFile], dag_id: &str) -> Result<(&'a DagFile, &'a Dag)> {
    if let Some(found) = files.iter().find_map(|f| {
        f.parsed
            .dag
            .as_ref()
            .filter(|d| d.id() == dag_id)
            .map(|d| (f, d))
    }) {
        return Ok(found);
    }
    let ids = files
        .iter()
        .filter_map(|f| f.parsed.dag.as_ref())
        .map(|d| d.id());
    let hint = weir_model::suggest::did_you_mean(dag_id, ids)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    let broken = files.iter().filter(|f| f.parsed.dag.is_none()).count();
    let note = if broken > 0 {
        format!("; {broken} DAG file(s) have errors (see `weir dags validate`)")
    } else {
        String::new()
    };
    Err(SchedulerError::NotFound(format!(
        "no DAG `{dag_id}`{hint}{note}"
    )))
}
