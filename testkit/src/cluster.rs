//! Throwaway database servers from the binaries on the machine, for machines where none runs:
//! Postgres (`initdb`, then `postgres`) and MariaDB (`mariadb-install-db`, then `mariadbd`),
//! each in a temporary folder on a free loopback port, stopped and removed when the test
//! process exits (however it exits: a keeper shell waits for its stdin to close).

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

/// What a machine needs for MariaDB tests, said when neither a server nor binaries are found.
pub(crate) const MARIADB_INSTALL_HINT: &str = "install MariaDB (`apt-get install \
     mariadb-server`: its binaries are enough, weir's tests start a throwaway server from \
     them), start the machine's server (`service mariadb start`), or point \
     WEIR_TEST_MYSQL_URL at a server where the user may CREATE DATABASE";

/// The keepers' stdins: each server lives while this process holds its keeper's.
static KEEPERS: Mutex<Vec<Option<std::process::ChildStdin>>> = Mutex::new(Vec::new());

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

/// The first of `names` found in `/usr/sbin`, `/usr/bin` or on `PATH`.
fn program(names: &[&str]) -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
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

pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A started server.
pub(crate) struct Cluster {
    /// Its admin URL: `postgres://postgres@127.0.0.1:PORT/postgres` or
    /// `mysql://root@127.0.0.1:PORT/`.
    pub(crate) url: String,
    /// Its folder (data, socket, server log), removed when the server stops.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) dir: PathBuf,
    /// Its keeper in [`KEEPERS`].
    #[cfg_attr(not(test), allow(dead_code))]
    keeper: usize,
}

/// A temporary folder (kept: the keeper removes it) owned by `owner` when running as root.
fn server_dir(prefix: &str, owner: &str) -> Result<PathBuf, String> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("temporary folder: {e}"))?
        .keep();
    if is_root() {
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{owner}:{owner}"))
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.success() {
            return Err(format!("cannot give {} to the {owner} user", dir.display()));
        }
    }
    Ok(dir)
}

/// Starts `argv` under a keeper that waits for its own stdin to close (this process exited,
/// or [`stop`]), then stops the server with `signal` and removes `dir`. Then waits until
/// `ready` says the server accepts connections.
pub(crate) fn keep_until_ready(
    what: &str,
    dir: &Path,
    argv: &[String],
    signal: &str,
    ready: impl Fn() -> bool,
) -> Result<usize, String> {
    let mut keeper = Command::new("bash")
        .args([
            "-c",
            r#"log="$1"; dir="$2"; signal="$3"; shift 3
"$@" >>"$log" 2>&1 &
pid=$!
cat >/dev/null
kill -"$signal" "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#,
            "keeper",
        ])
        .arg(dir.join("server.log"))
        .arg(dir)
        .arg(signal)
        .args(argv)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let index = {
        let mut keepers = KEEPERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keepers.push(keeper.stdin.take());
        keepers.len() - 1
    };
    let log = || std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return Ok(index);
        }
        if let Ok(Some(status)) = keeper.try_wait() {
            return Err(format!("the throwaway {what} exited ({status}): {}", log()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the throwaway {what} did not accept connections within {}s: {}",
                START_TIMEOUT.as_secs(),
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The command line of `command` as strings (what the keeper runs).
pub(crate) fn argv(command: &Command) -> Vec<String> {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Creates a cluster's data (`DIR/data`) in a new folder named from `prefix`; returns the
/// binaries' folder and the cluster's folder.
fn init_cluster(prefix: &str) -> Result<(PathBuf, PathBuf), String> {
    let bin = binaries().ok_or_else(|| format!("no Postgres binaries found; {INSTALL_HINT}"))?;
    let dir = server_dir(prefix, "postgres")?;
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
        .arg(dir.join("data"))
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    Ok((bin, dir))
}

/// Starts a Postgres cluster.
///
/// # Errors
/// No binaries, or a cluster that does not start: the message says what happened and what to
/// install.
pub(crate) fn start() -> Result<Cluster, String> {
    let (bin, dir) = init_cluster("weir-test-pg-")?;
    let data = dir.join("data");
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let mut server = as_cluster_user(&bin.join("postgres"));
    server
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]);
    let keeper = keep_until_ready("Postgres", &dir, &argv(&server), "INT", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
    })?;
    Ok(Cluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        dir,
        keeper,
    })
}

/// Starts a MariaDB server (root without a password on 127.0.0.1).
///
/// # Errors
/// No binaries, or a server that does not start: the message says what happened and what to
/// install.
pub(crate) fn start_mariadb() -> Result<Cluster, String> {
    let missing = || format!("no MariaDB binaries found; {MARIADB_INSTALL_HINT}");
    let install = program(&["mariadb-install-db", "mysql_install_db"]).ok_or_else(missing)?;
    let server = program(&["mariadbd", "mysqld"]).ok_or_else(missing)?;
    let admin = program(&["mariadb-admin", "mysqladmin"]).ok_or_else(missing)?;
    let dir = server_dir("weir-test-mariadb-", "mysql")?;
    let data = dir.join("data");
    let mut init = Command::new(&install);
    init.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if is_root() {
        init.arg("--user=mysql");
    }
    let init = init
        .output()
        .map_err(|e| format!("running {}: {e}", install.display()))?;
    if !init.status.success() {
        return Err(format!(
            "{} failed: {}{}",
            install.display(),
            String::from_utf8_lossy(&init.stdout),
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let mut command = Command::new(&server);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=0",
            // Debian's packaged server defaults (without them: latin1).
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]);
    if is_root() {
        command.arg("--user=mysql");
    }
    let keeper = keep_until_ready("MariaDB", &dir, &argv(&command), "TERM", || {
        Command::new(&admin)
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "--silent"])
            .arg(format!("-P{port}"))
            .arg("ping")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    Ok(Cluster {
        url: format!("mysql://root@127.0.0.1:{port}/"),
        dir,
        keeper,
    })
}

/// Stops a server now (tests of this crate; otherwise it stops when the process exits).
#[cfg(test)]
pub(crate) fn stop(cluster: &Cluster) {
    if let Some(keeper) = KEEPERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_mut(cluster.keeper)
    {
        drop(keeper.take());
    }
}

/// A Postgres cluster of the test's own that the test can restart (`pg_ctl restart -m fast`
/// or `-m immediate`) while weir's processes use it: what a database restart or failover does
/// to them. Stopped and removed when dropped.
pub struct RestartablePostgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    bin: PathBuf,
    dir: PathBuf,
    /// The server's options (`pg_ctl start -o`): port, socket folder, listen address.
    options: String,
}

impl RestartablePostgres {
    /// Creates and starts the cluster.
    ///
    /// # Errors
    /// No binaries, or a cluster that does not start.
    pub fn start() -> Result<RestartablePostgres, String> {
        let (bin, dir) = init_cluster("weir-test-pg-restart-")?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let server = RestartablePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            dir,
            options,
        };
        server.pg_ctl(&["-o", &server.options], "start")?;
        Ok(server)
    }

    /// Restarts the server: `fast` (clients disconnected, a clean shutdown) or `immediate`
    /// (no shutdown checkpoint: crash recovery at start). Returns once it accepts
    /// connections again.
    ///
    /// # Errors
    /// `pg_ctl` failing.
    pub fn restart(&self, mode: &str) -> Result<(), String> {
        self.pg_ctl(&["-m", mode], "restart")
    }

    /// Stops the server (`fast` or `immediate`), keeps it down for `down`, then starts it
    /// again: an outage during which running tasks end and their outcomes cannot be written.
    ///
    /// # Errors
    /// `pg_ctl` failing.
    pub fn outage(&self, mode: &str, down: Duration) -> Result<(), String> {
        self.pg_ctl(&["-m", mode], "stop")?;
        std::thread::sleep(down);
        self.pg_ctl(&["-o", &self.options], "start")
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `pg_ctl ACTION`. Its output goes to a file, not a pipe: the server it starts
    /// would inherit a pipe and hold it open for its whole life.
    fn pg_ctl(&self, args: &[&str], action: &str) -> Result<(), String> {
        let out_path = self.dir.join(format!("pg_ctl-{action}.out"));
        let out = std::fs::File::create(&out_path).map_err(|e| format!("pg_ctl output: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("pg_ctl output: {e}"))?;
        let status = as_cluster_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.join("server.log"))
            .args(args)
            .arg(action)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| format!("running pg_ctl {action}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {action} failed: {}\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                self.log()
            ))
        }
    }
}

impl Drop for RestartablePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate"], "stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
