//! A throwaway Postgres cluster from the binaries on the machine, for machines where no server
//! runs: `initdb` into a temporary folder, `postgres` on a free loopback port, both removed when
//! the test process exits (however it exits: a keeper shell waits for its stdin to close).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a machine needs for Postgres tests, said when neither a server nor binaries are found.
pub(crate) const INSTALL_HINT: &str = "install Postgres (`apt-get install postgresql`: its \
     binaries are enough, weir's tests start a throwaway cluster from them), start the \
     machine's server (`pg_ctlcluster --skip-systemctl-redirect 15 main start`), or point \
     WEIR_TEST_POSTGRES_URL at a server where the user may CREATE DATABASE";

/// How long a fresh cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The keeper's stdin: the cluster lives while this process holds it.
static KEEPER: Mutex<Option<std::process::ChildStdin>> = Mutex::new(None);

/// The folder with `initdb`, `postgres` and `pg_isready`: where the `initdb` on `PATH` really
/// is (symbolic links followed), else the newest `/usr/lib/postgresql/<version>/bin` (Debian
/// keeps them off `PATH`).
fn binaries() -> Option<PathBuf> {
    let complete = |bin: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| bin.join(b).is_file())
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .filter_map(|p| std::fs::canonicalize(p.join("initdb")).ok())
            .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
            .find(|bin| complete(bin))
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                complete(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

/// Postgres refuses to run as root: as root, the cluster runs as the `postgres` user.
fn as_cluster_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `/proc/self` belongs to the process's effective user.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A started cluster.
pub(crate) struct Cluster {
    /// Its admin URL: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub(crate) url: String,
    /// Its folder (data, socket, server log), removed when the cluster stops.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) dir: PathBuf,
}

/// Starts a cluster.
///
/// # Errors
/// No binaries, or a cluster that does not start: the message says what happened and what to
/// install.
pub(crate) fn start() -> Result<Cluster, String> {
    let bin = binaries().ok_or_else(|| format!("no Postgres binaries found; {INSTALL_HINT}"))?;
    let dir = tempfile::Builder::new()
        .prefix("weir-test-pg-")
        .tempdir()
        .map_err(|e| format!("temporary folder: {e}"))?
        .keep();
    if is_root() {
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.success() {
            return Err(format!(
                "cannot give {} to the postgres user",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    let init = as_cluster_user(&bin.join("initdb"))
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let server = as_cluster_user(&bin.join("postgres"));
    let mut argv: Vec<String> = std::iter::once(server.get_program())
        .chain(server.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(
        [
            "-D",
            &data.to_string_lossy(),
            "-p",
            &port.to_string(),
            "-k",
            &dir.to_string_lossy(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ]
        .map(str::to_owned),
    );
    // The keeper starts the server, waits for its own stdin to close (this process exited),
    // then stops the server and removes the folder.
    let mut keeper = Command::new("bash")
        .args([
            "-c",
            r#"log="$1"; dir="$2"; shift 2
"$@" >"$log" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#,
            "keeper",
        ])
        .arg(dir.join("server.log"))
        .arg(&dir)
        .args(&argv)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let stdin = keeper.stdin.take();
    *KEEPER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = stdin;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        {
            return Ok(Cluster { url, dir });
        }
        if let Ok(Some(status)) = keeper.try_wait() {
            return Err(format!(
                "the throwaway Postgres exited ({status}): {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the throwaway Postgres did not accept connections within {}s: {}",
                START_TIMEOUT.as_secs(),
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the cluster now (tests of this module; otherwise it stops when the process exits).
#[cfg(test)]
pub(crate) fn stop() {
    drop(
        KEEPER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(),
    );
}
