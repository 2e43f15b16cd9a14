//! Python environments built with uv, cached on the worker by what they are built from.
//!
//! - **Key**: a hash of uv's version, the Python version asked for and the requirements (the
//!   lines, or the requirements file's name and text). Tasks and runs asking for the same get
//!   the same environment, `<cache_dir>/envs/<key>`.
//! - **Built once under concurrency**: the builder holds an exclusive lock on
//!   `<key>.lock` (an OS file lock: released when its holder dies, however it dies), wipes
//!   whatever a dead builder left, builds in place and writes `.weir-ready` last. A reader
//!   uses an environment only once that file is there; a second process asking meanwhile
//!   waits on the lock and then finds it ready.
//! - **uv**: `[python] uv` when set; else weir's own copy of the pinned [`UV_VERSION`], which
//!   weir installs from PyPI on first use into `<cache_dir>/uv/<version>` (a venv made by the
//!   worker's `python3`), under the same kind of lock. uv's download cache is
//!   `<cache_dir>/uv-cache`, shared by every build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::log::LogSink;

/// The uv release weir installs and builds environments with.
pub const UV_VERSION: &str = "0.13.9";

/// The file whose presence says an environment is complete.
const READY: &str = ".weir-ready";

/// Longest an environment's creation may take (a large scientific stack on a slow index).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where and with what environments are built (`[python]` in weir.toml).
#[derive(Debug, Clone)]
pub struct PythonSetup {
    /// Folder of the environments, uv's cache and weir's own uv.
    pub cache_dir: PathBuf,
    /// A uv program to use instead of weir's pinned copy.
    pub uv: Option<PathBuf>,
}

impl Default for PythonSetup {
    fn default() -> Self {
        PythonSetup {
            cache_dir: PathBuf::from(".weir/python"),
            uv: None,
        }
    }
}

/// What an environment is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    /// The Python version asked for (`3.11`); none: the `python3` uv finds first.
    pub python: Option<String>,
    /// The packages.
    pub requirements: Packages,
}

/// An environment's packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packages {
    /// Requirement lines.
    Lines(Vec<String>),
    /// A requirements file or `pyproject.toml`: its name (which tells uv how to read it) and
    /// text.
    File {
        /// The file's name (`requirements.txt`, `pyproject.toml`).
        name: String,
        /// Its text.
        text: String,
    },
}

impl EnvSpec {
    /// The cache key: the first 16 bytes of a SHA-256 over uv's version and the spec, in hex.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("uv {UV_VERSION}\npython {:?}\n", self.python));
        match &self.requirements {
            Packages::Lines(lines) => {
                h.update("lines\n");
                for l in lines {
                    h.update(l.trim());
                    h.update("\n");
                }
            }
            Packages::File { name, text } => {
                h.update(format!("file {name}\n"));
                h.update(text);
            }
        }
        h.finalize()[..16].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// What the environment holds, in words.
    pub fn describe(&self) -> String {
        let packages = match &self.requirements {
            Packages::Lines(l) if l.is_empty() => "no packages".to_owned(),
            Packages::Lines(l) => l.join(", "),
            Packages::File { name, .. } => format!("the packages of {name}"),
        };
        format!(
            "Python {}, {packages}",
            self.python.as_deref().unwrap_or("(the worker's python3)")
        )
    }
}

/// A ready environment.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// Its folder.
    pub dir: PathBuf,
    /// How long this call took to create it (`None`: it was there).
    pub created_in: Option<Duration>,
}

impl PythonEnv {
    /// Its interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// A program installed in it (`dbt`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}

/// The environment for `spec`, built when it is not in the cache yet. A build's output goes
/// to `log`; its failure (a missing package, a version uv cannot find) comes back with uv's
/// own message.
///
/// # Errors
/// The build failed, or the cache cannot be written.
pub async fn ensure(
    setup: &PythonSetup,
    spec: &EnvSpec,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<PythonEnv, String> {
    let envs = absolute(&setup.cache_dir).join("envs");
    let dir = envs.join(spec.key());
    if dir.join(READY).is_file() {
        return Ok(PythonEnv {
            dir,
            created_in: None,
        });
    }
    std::fs::create_dir_all(&envs).map_err(|e| {
        format!(
            "cannot create the environments folder {}: {e}",
            envs.display()
        )
    })?;
    let _lock = lock(
        &envs.join(format!("{}.lock", spec.key())),
        log,
        "environment",
        cancel,
    )
    .await?;
    if dir.join(READY).is_file() {
        // Another process built it while this one waited.
        log.note(format!(
            "Python environment {} built by another process: {}",
            dir.display(),
            spec.describe()
        ));
        return Ok(PythonEnv {
            dir,
            created_in: None,
        });
    }
    let uv = uv(setup, log, cancel).await?;
    // The build alone: not the wait for another builder, nor uv's own installation.
    let started = Instant::now();
    log.note(format!(
        "creating the Python environment {} ({})",
        dir.display(),
        spec.describe()
    ));
    if dir.exists() {
        // Left by a builder that died: nobody uses an environment without its ready file.
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot remove the unfinished {}: {e}", dir.display()))?;
    }
    let cache = absolute(&setup.cache_dir).join("uv-cache");
    let mut venv = uv_command(&uv, &cache);
    venv.arg("venv").arg("--no-project");
    if let Some(v) = &spec.python {
        venv.args(["--python", v]);
    }
    venv.arg(&dir);
    run(venv, "uv venv", log, cancel).await?;
    let requirements_file;
    let install_from = match &spec.requirements {
        Packages::Lines(lines) if lines.is_empty() => None,
        Packages::Lines(lines) => {
            let path = dir.join(".weir-requirements.txt");
            std::fs::write(&path, lines.join("\n") + "\n")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Some(path)
        }
        Packages::File { name, text } => {
            // A folder of its own: uv reads a `pyproject.toml` by its name.
            let folder = dir.join(".weir-requirements");
            std::fs::create_dir_all(&folder)
                .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
            requirements_file = folder.join(name);
            std::fs::write(&requirements_file, text)
                .map_err(|e| format!("cannot write {}: {e}", requirements_file.display()))?;
            Some(requirements_file.clone())
        }
    };
    if let Some(file) = install_from {
        let mut install = uv_command(&uv, &cache);
        install
            .args(["pip", "install", "--python"])
            .arg(dir.join("bin/python"))
            .arg("-r")
            .arg(&file);
        run(install, "uv pip install", log, cancel).await?;
    }
    let took = started.elapsed();
    std::fs::write(
        dir.join(READY),
        format!(
            "{}\ncreated in {:.1} s with uv {UV_VERSION}\n",
            spec.describe(),
            took.as_secs_f64()
        ),
    )
    .map_err(|e| format!("cannot mark {} ready: {e}", dir.display()))?;
    metrics::histogram!("weir_python_env_seconds").record(took.as_secs_f64());
    log.note(format!(
        "created the Python environment in {:.1} s",
        took.as_secs_f64()
    ));
    Ok(PythonEnv {
        dir,
        created_in: Some(took),
    })
}

/// The uv to build with: `[python] uv`, or weir's pinned copy, installed on first use.
async fn uv(
    setup: &PythonSetup,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<PathBuf, String> {
    if let Some(uv) = &setup.uv {
        return Ok(uv.clone());
    }
    let root = absolute(&setup.cache_dir).join("uv");
    let home = root.join(UV_VERSION);
    let program = home.join("bin/uv");
    if home.join(READY).is_file() {
        return Ok(program);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let _lock = lock(&root.join(format!("{UV_VERSION}.lock")), log, "uv", cancel).await?;
    if home.join(READY).is_file() {
        return Ok(program);
    }
    log.note(format!(
        "installing uv {UV_VERSION} from PyPI into {} (once per worker machine)",
        home.display()
    ));
    if home.exists() {
        std::fs::remove_dir_all(&home)
            .map_err(|e| format!("cannot remove the unfinished {}: {e}", home.display()))?;
    }
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(&home);
    run(venv, "python3 -m venv", log, cancel)
        .await
        .map_err(|e| format!("{e} (weir installs uv with the worker's python3; or set `[python] uv` to a uv program)"))?;
    let mut pip = Command::new(home.join("bin/pip"));
    pip.args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("uv=={UV_VERSION}"),
    ]);
    run(pip, "pip install uv", log, cancel).await?;
    std::fs::write(home.join(READY), format!("uv {UV_VERSION}\n"))
        .map_err(|e| format!("cannot mark {} ready: {e}", home.display()))?;
    Ok(program)
}

/// A uv command: the worker's environment but weir's own settings (`WEIR_*` holds its
/// secrets), uv's cache in weir's folder, no colours.
fn uv_command(uv: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(uv);
    cmd.env_clear()
        .envs(std::env::vars().filter(|(k, _)| !k.starts_with("WEIR_") && k != "VIRTUAL_ENV"))
        .env("UV_CACHE_DIR", cache)
        .env("NO_COLOR", "1");
    cmd
}

/// Runs a build command, its output into the try's log.
async fn run(
    cmd: Command,
    label: &str,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<(), String> {
    crate::step::process::run_group(cmd, label, Some(CREATE_TIMEOUT), log, cancel)
        .await
        .map_err(|outcome| {
            let why = match outcome {
                crate::outcome::TaskOutcome::Failed { error, .. } => error,
                crate::outcome::TaskOutcome::TimedOut { after } => {
                    format!("timed out after {} s", after.as_secs())
                }
                other => format!("{other:?}"),
            };
            format!("building the Python environment failed: {label}: {why} (its message is in the log above)")
        })
}

/// Takes the exclusive lock `path` (created if missing), waiting for its holder; said in the
/// log when it has to wait.
async fn lock(
    path: &Path,
    log: &LogSink,
    what: &str,
    cancel: &CancellationToken,
) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
    log.note(format!(
        "another process is building this {what}: waiting for it"
    ));
    let shown = path.display().to_string();
    let waiting = tokio::task::spawn_blocking(move || file.lock().map(|()| file));
    tokio::select! {
        taken = waiting => taken
            .map_err(|e| format!("waiting for the lock {shown}: {e}"))?
            .map_err(|e| format!("cannot lock {shown}: {e}")),
        // The waiting thread takes the lock later and lets it go at once.
        () = cancel.cancelled() => Err(format!("stopped while waiting for the lock {shown}")),
    }
}

/// `path` made absolute against the current directory (an environment is used from other
/// working directories than the one it was built from).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
