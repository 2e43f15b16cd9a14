//! Claiming a file source's files (`source.claim`), so that a file that arrives is loaded once:
//! the matching files are renamed into a folder of this task instance's own before they are
//! read (a rename is atomic: when two runs race for one file, one gets it), a retry reads what
//! its instance already claimed, and after the commit the files move on to `archive_to`.

use std::path::{Path, PathBuf};

use weir_model::spec::Claim;

use super::{LoadContext, LoadError};

/// The folder this instance's claimed files live in under `root`:
/// `root/<run id>/<task id>[.<map index>]`.
fn folder(root: &str, ctx: &LoadContext) -> PathBuf {
    let safe = |s: &str| s.replace(['/', '\\'], "_");
    let task = match ctx.attempt.as_ref().map(|a| a.map_index) {
        Some(i) if i >= 0 => format!("{}.{i}", safe(&ctx.task_id)),
        _ => safe(&ctx.task_id),
    };
    Path::new(root).join(safe(&ctx.run_id)).join(task)
}

/// The files to load: those this instance claimed on an earlier try, else the files matching
/// `pattern`, moved into its claim folder now. None at all: a retryable error (the files may
/// not have arrived yet).
pub(super) fn claim(
    pattern: &str,
    claim: &Claim,
    ctx: &LoadContext,
) -> Result<Vec<PathBuf>, LoadError> {
    for (what, at) in [
        ("claim.move_to", claim.move_to.as_str()),
        (
            "claim.archive_to",
            claim.archive_to.as_deref().unwrap_or(""),
        ),
    ] {
        if weir_storage::is_store_url(at) {
            return Err(LoadError::fatal(format!(
                "the files are local but {what} `{at}` is on a store; local files are claimed by a rename into a local folder"
            )));
        }
    }
    let dir = folder(&claim.move_to, ctx);
    let already = files_in(&dir)?;
    if !already.is_empty() {
        return Ok(already);
    }
    let matching = local_matches(pattern)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| LoadError::fatal(format!("creating {}: {e}", dir.display())))?;
    for path in matching {
        let Some(name) = path.file_name() else {
            continue;
        };
        let to = dir.join(name);
        if to.exists() {
            return Err(LoadError::fatal(format!(
                "{} and another matching file have the same name `{}`; claimed files keep their names",
                path.display(),
                name.to_string_lossy()
            )));
        }
        match std::fs::rename(&path, &to) {
            Ok(()) => {}
            // Another run claimed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                return Err(LoadError::fatal(format!(
                    "cannot claim {} into {}: another file system (a claim is a rename; put `move_to` beside the files)",
                    path.display(),
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(LoadError::fatal(format!(
                    "claiming {} into {}: {e}",
                    path.display(),
                    dir.display()
                )));
            }
        }
    }
    let claimed = files_in(&dir)?;
    if claimed.is_empty() {
        return Err(LoadError {
            retryable: true,
            message: format!("every file matching `{pattern}` was claimed by another run"),
        });
    }
    Ok(claimed)
}

/// After the commit: moves this instance's claimed files to `archive_to` (same layout), and
/// returns where the loaded files now are. Without `archive_to` they stay claimed.
pub(super) fn archive(claim: &Claim, ctx: &LoadContext) -> Result<Vec<PathBuf>, LoadError> {
    let from = folder(&claim.move_to, ctx);
    let Some(root) = &claim.archive_to else {
        return files_in(&from);
    };
    let to = folder(root, ctx);
    let files = files_in(&from)?;
    if files.is_empty() {
        return files_in(&to);
    }
    let failed = |e: std::io::Error| LoadError {
        retryable: true,
        message: format!(
            "the load committed, but archiving its files to {} failed: {e}",
            to.display()
        ),
    };
    std::fs::create_dir_all(&to).map_err(failed)?;
    let mut archived = Vec::with_capacity(files.len());
    for path in files {
        let Some(name) = path.file_name() else {
            continue;
        };
        let dest = to.join(name);
        std::fs::rename(&path, &dest).map_err(failed)?;
        archived.push(dest);
    }
    let _ = std::fs::remove_dir(&from);
    Ok(archived)
}

/// The local files a glob matches, in name order; none: a retryable error (they may not have
/// arrived yet).
fn local_matches(pattern: &str) -> Result<Vec<PathBuf>, LoadError> {
    let mut files: Vec<PathBuf> = glob::glob(pattern)
        .map_err(|e| LoadError::fatal(format!("`{pattern}` is not a valid glob: {e}")))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        return Err(LoadError {
            retryable: true,
            message: format!("no file matches `{pattern}` (relative to {cwd})"),
        });
    }
    Ok(files)
}

/// The files of a folder, by name (none when it does not exist).
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LoadError::fatal(format!("reading {}: {e}", dir.display()))),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
