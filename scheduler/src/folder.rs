//! Reading DAG files from disk: a folder (recursively, `*.yaml`/`*.yml`) or single files, the
//! files each DAG reads (`sql` files, migration folders; stored with its version), and a
//! scanner that re-parses only DAGs whose file, or a file they read, changed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use crate::error::{Result, SchedulerError};
use weir_model::files::{FileRef, file_refs, migration_key, migration_name};
use weir_model::{Dag, Diagnostic, Known, Loc, Parsed, parse_dag};

/// One DAG file and what parsing it found.
#[derive(Debug)]
pub struct DagFile {
    /// The path as given or found (used in messages).
    pub path: PathBuf,
    /// The DAG (when valid) and its problems.
    pub parsed: Parsed,
    /// The DAG file's own text (shown by the web UI).
    pub source: String,
    /// The text of the files the DAG reads, by the path written in it.
    pub files: BTreeMap<String, String>,
    /// Paths on disk those came from (files and folders), with their state just before they
    /// were read: the scanner re-reads the DAG when one changes.
    pub deps: Vec<(PathBuf, Stamp)>,
}

impl DagFile {
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }
}

/// Reads and validates every DAG file under `paths`, in path order. A DAG id written in two
/// files (valid or not) is an error in every file after the first.
///
/// # Errors
/// A path that does not exist or a folder that cannot be read.
pub fn load_dag_files(paths: &[PathBuf], known: Option<&Known>) -> Result<Vec<DagFile>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in dag_entries(path) {
                let entry = entry.map_err(|e| {
                    SchedulerError::Folder(format!("reading folder {}: {e}", path.display()))
                })?;
                files.push(entry.into_path());
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
        // A file with errors still claims its id: two files must not share one, valid or not.
        let Some(id) = file.parsed.dag_id.clone() else {
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

/// The DAG files below `folder` (`*.yaml`, `*.yml`), in path order. A folder holding a
/// `dbt_project.yml` is a dbt project a `dbt` task names, whose YAML is dbt's: it is not
/// read for DAGs, nor is anything below it.
fn dag_entries(folder: &Path) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> {
    walkdir::WalkDir::new(folder)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() > 0 && e.file_type().is_dir() && e.path().join("dbt_project.yml").is_file())
        })
        .filter(|e| {
            e.as_ref()
                .map_or(true, |e| e.file_type().is_file() && is_dag_file(e.path()))
        })
}

/// Scans a DAG folder repeatedly; keeps each file's size and modification time, and those of
/// the files it reads, so that an unchanged folder costs one `stat` per file. The cache is only
/// a hint: a restarted scheduler re-reads everything and the store ignores versions it already
/// has.
#[derive(Debug, Default)]
pub struct FolderScanner {
    seen: HashMap<PathBuf, Seen>,
}

/// Size and modification time of a path (`None`: it could not be read).
pub type Stamp = Option<(u64, Option<SystemTime>)>;

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    own: Stamp,
    deps: Vec<(PathBuf, Stamp)>,
    /// The DAG id the file claims (written as a string), valid or not.
    dag_id: Option<String>,
}

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// What changed in the folder since the last scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files new or changed since the last scan (or reading a file that changed), parsed.
    pub changed: Vec<DagFile>,
    /// Files gone since the last scan.
    pub removed: Vec<PathBuf>,
    /// Every DAG file in the folder now, with the DAG id it claims (in a valid file or not;
    /// `None`: the id cannot be read, as in a file that is not YAML).
    pub claims: BTreeMap<PathBuf, Option<String>>,
}

impl Scan {
    /// The DAG id a file of the folder claims.
    pub fn claim_of(&self, path: &Path) -> Option<&str> {
        self.claims.get(path).and_then(Option::as_deref)
    }
}

impl FolderScanner {
    /// Scans `folder`: parses new and changed files.
    ///
    /// # Errors
    /// A folder that cannot be read.
    pub fn scan(&mut self, folder: &Path, known: Option<&Known>) -> Result<Scan> {
        let mut current: HashMap<PathBuf, Stamp> = HashMap::new();
        if folder.is_dir() {
            for entry in dag_entries(folder) {
                let entry = entry.map_err(|e| {
                    SchedulerError::Folder(format!("reading folder {}: {e}", folder.display()))
                })?;
                let meta = entry.metadata().map_err(|e| {
                    SchedulerError::Folder(format!("reading {}: {e}", entry.path().display()))
                })?;
                current.insert(entry.into_path(), Some((meta.len(), meta.modified().ok())));
            }
        } else {
            return Err(SchedulerError::Folder(format!(
                "dags folder {} does not exist",
                folder.display()
            )));
        }
        let mut changed_paths: Vec<PathBuf> = current
            .iter()
            .filter(|(p, own)| {
                self.seen.get(*p).is_none_or(|seen| {
                    seen.own != **own || seen.deps.iter().any(|(dep, was)| stamp(dep) != *was)
                })
            })
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
        // A DAG id a removed or changed file claimed may now belong to another file that was
        // refused as its duplicate: read the other claimants again.
        let released: std::collections::HashSet<&String> = removed
            .iter()
            .chain(&changed_paths)
            .filter_map(|p| self.seen.get(p).and_then(|s| s.dag_id.as_ref()))
            .collect();
        if !released.is_empty() {
            let mut again: Vec<PathBuf> = self
                .seen
                .iter()
                .filter(|(p, s)| {
                    current.contains_key(*p)
                        && !changed_paths.contains(p)
                        && s.dag_id.as_ref().is_some_and(|id| released.contains(id))
                })
                .map(|(p, _)| p.clone())
                .collect();
            changed_paths.append(&mut again);
            changed_paths.sort();
        }
        self.seen.retain(|p, _| current.contains_key(p));
        let changed = read_all(changed_paths, known);
        for file in &changed {
            let own = current.get(&file.path).copied().flatten();
            self.seen.insert(
                file.path.clone(),
                Seen {
                    own,
                    deps: file.deps.clone(),
                    dag_id: file.parsed.dag_id.clone(),
                },
            );
        }
        let claims = self
            .seen
            .iter()
            .map(|(path, seen)| (path.clone(), seen.dag_id.clone()))
            .collect();
        Ok(Scan {
            changed,
            removed,
            claims,
        })
    }
}

fn read_one(path: PathBuf, known: Option<&Known>) -> DagFile {
    let (text, mut parsed) = match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => {
                let parsed = parse_dag(&text, known);
                (text, parsed)
            }
            Err(_) => (
                String::new(),
                Parsed::failed(Diagnostic::error(None, "the file is not UTF-8 text")),
            ),
        },
        Err(e) => (
            String::new(),
            Parsed::failed(Diagnostic::error(
                None,
                format!("cannot read the file: {e}"),
            )),
        ),
    };
    let mut files = BTreeMap::new();
    let mut deps = Vec::new();
    if let Some(dag) = &parsed.dag {
        let base = path.parent().unwrap_or(Path::new("."));
        let problems = read_referenced(&dag.spec, base, &text, &mut files, &mut deps);
        if !problems.is_empty() {
            parsed.diagnostics.extend(problems);
            parsed
                .diagnostics
                .sort_by_key(|d| d.loc.map(|l| (l.line, l.col)));
            parsed.dag = None;
        }
    }
    DagFile {
        path,
        parsed,
        source: text,
        files,
        deps,
    }
}

/// Reads the files a DAG refers to into `files`; returns the problems (a missing file, a
/// migration folder with a misnamed or duplicate version), each placed where the DAG names it.
fn read_referenced(
    spec: &weir_model::DagSpec,
    base: &Path,
    dag_text: &str,
    files: &mut BTreeMap<String, String>,
    deps: &mut Vec<(PathBuf, Stamp)>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for r in file_refs(spec) {
        match r {
            FileRef::SqlFile { task, path } | FileRef::Text { task, path } => {
                let full = base.join(path);
                deps.push((full.clone(), stamp(&full)));
                match std::fs::read_to_string(&full) {
                    Ok(text) => {
                        files.insert(path.to_owned(), text);
                    }
                    Err(e) => problems.push(Diagnostic::error(
                        place_of(dag_text, path),
                        format!(
                            "task `{task}`: cannot read `{path}` ({}): {e}",
                            full.display()
                        ),
                    )),
                }
            }
            FileRef::DbtProject { task, dir } => {
                let full = base.join(dir);
                if !full.join("dbt_project.yml").is_file() {
                    problems.push(Diagnostic::error(
                        place_of(dag_text, dir),
                        format!(
                            "task `{task}`: `{dir}` ({}) holds no dbt_project.yml: `project` names a dbt project's folder",
                            full.display()
                        ),
                    ));
                    continue;
                }
                if let Err(e) = read_project(&full, dir, files, deps) {
                    problems.push(Diagnostic::error(
                        place_of(dag_text, dir),
                        format!("task `{task}`: dbt project `{dir}`: {e}"),
                    ));
                }
            }
            FileRef::Migrations { task, dir } => {
                let full = base.join(dir);
                deps.push((full.clone(), stamp(&full)));
                let entries = match std::fs::read_dir(&full) {
                    Ok(entries) => entries,
                    Err(e) => {
                        problems.push(Diagnostic::error(
                            place_of(dag_text, dir),
                            format!(
                                "task `{task}`: cannot read the migrations folder `{dir}` ({}): {e}",
                                full.display()
                            ),
                        ));
                        continue;
                    }
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".sql"))
                    .collect();
                names.sort();
                let mut versions: HashMap<u64, String> = HashMap::new();
                for name in names {
                    let Some((version, _)) = migration_name(&name) else {
                        problems.push(Diagnostic::error(
                            place_of(dag_text, dir),
                            format!(
                                "task `{task}`: `{dir}/{name}` is not named NNNN_name.sql (a version number, `_`, a name)"
                            ),
                        ));
                        continue;
                    };
                    if let Some(first) = versions.insert(version, name.clone()) {
                        problems.push(Diagnostic::error(
                            place_of(dag_text, dir),
                            format!(
                                "task `{task}`: `{dir}/{first}` and `{dir}/{name}` have the same version {version}"
                            ),
                        ));
                        continue;
                    }
                    let file = full.join(&name);
                    deps.push((file.clone(), stamp(&file)));
                    match std::fs::read_to_string(&file) {
                        Ok(text) => {
                            files.insert(migration_key(dir, &name), text);
                        }
                        Err(e) => problems.push(Diagnostic::error(
                            place_of(dag_text, dir),
                            format!("task `{task}`: cannot read `{dir}/{name}`: {e}"),
                        )),
                    }
                }
            }
        }
    }
    problems
}

/// Most a dbt project may hold, in bytes of its stored files: it is stored with each version.
const MAX_PROJECT_BYTES: usize = 16 << 20;

/// Reads every file of the dbt project at `full` (written `dir` in the DAG) into `files`, but
/// dbt's output folders and hidden files; the folders and files become dependencies.
fn read_project(
    full: &Path,
    dir: &str,
    files: &mut BTreeMap<String, String>,
    deps: &mut Vec<(PathBuf, Stamp)>,
) -> std::result::Result<(), String> {
    let mut total = 0usize;
    let mut pending = vec![(full.to_path_buf(), String::new())];
    while let Some((folder, relative)) = pending.pop() {
        deps.push((folder.clone(), stamp(&folder)));
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| format!("cannot read `{}`: {e}", folder.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", folder.display()))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let top = relative.is_empty();
            if name.starts_with('.')
                || (top && weir_model::files::DBT_OUTPUT_DIRS.contains(&name.as_str()))
            {
                continue;
            }
            let path = entry.path();
            let inner = if top {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            // Followed like dbt follows them: a link to a folder is a folder.
            if path.is_dir() {
                pending.push((path, inner));
                continue;
            }
            deps.push((path.clone(), stamp(&path)));
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read `{inner}`: {e}"))?;
            total += bytes.len();
            if total > MAX_PROJECT_BYTES {
                return Err(format!(
                    "its files pass {} MiB (at `{inner}`): weir stores a project with each DAG version; move data files out of it",
                    MAX_PROJECT_BYTES >> 20
                ));
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("`{inner}` is not UTF-8 text: a project stored with the DAG holds text files only"))?;
            files.insert(weir_model::files::project_key(dir, &inner), text);
        }
    }
    Ok(())
}

/// Where `value` is first written in the DAG's text (the path of a missing file).
fn place_of(text: &str, value: &str) -> Option<Loc> {
    text.lines().enumerate().find_map(|(i, line)| {
        let col = line.find(value)?;
        Some(Loc {
            line: u32::try_from(i + 1).ok()?,
            col: u32::try_from(line[..col].chars().count() + 1).ok()?,
        })
    })
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
