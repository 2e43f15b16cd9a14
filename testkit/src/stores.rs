//! Real storage servers on loopback ports, for tests of locations: moto (S3), Azurite (Azure
//! Blob), gcp-storage-emulator (GCS) and OpenSSH's sshd (SFTP, with throwaway keys). One server
//! of each kind per test process, started on first use and stopped when the process exits (the
//! keepers of `cluster.rs`); each [`TestStore`] is a fresh bucket, container or folder on it.
//!
//! The tools come from `scripts/test`: moto and gcp-storage-emulator in the venv of
//! `WEIR_TEST_PYTHON`, Azurite at `WEIR_TEST_AZURITE` (both defaulting to `target/test-tools`),
//! sshd from Debian's openssh-server. A missing tool fails the test saying how to install it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::{argv, free_port, keep_until_ready};

/// The kinds of store tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// moto's S3.
    S3,
    /// gcp-storage-emulator.
    Gcs,
    /// Azurite.
    Azure,
    /// sshd's SFTP.
    Sftp,
}

impl StoreKind {
    /// Every kind.
    pub const ALL: [StoreKind; 4] = [
        StoreKind::S3,
        StoreKind::Gcs,
        StoreKind::Azure,
        StoreKind::Sftp,
    ];
}

/// A fresh bucket (container, SFTP folder) on a running test server, and the connection that
/// reaches it.
#[derive(Debug, Clone)]
pub struct TestStore {
    /// Which server.
    pub kind: StoreKind,
    /// The bucket's URL, without a trailing slash: `s3://weir-7`, `sftp://root@127.0.0.1:P/tmp/x`.
    pub url: String,
    /// The connection's options (endpoint, credentials) by weir's names.
    pub options: BTreeMap<String, String>,
    /// A credential of the connection that must never appear in a log.
    pub secret: String,
}

/// The well-known development account key of Azurite (public: Microsoft documents it).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestStore {
    /// A fresh, empty bucket on the server of `kind`.
    ///
    /// # Panics
    /// When the server cannot start (a missing tool, with how to install it).
    pub fn new(kind: StoreKind) -> TestStore {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("weir-{}-{n}", std::process::id());
        match kind {
            StoreKind::S3 => {
                let port = server(&S3, "moto (S3)", || {
                    let mut c = Command::new(python_tool("moto_server"));
                    c.args(["-H", "127.0.0.1", "-p"]);
                    c
                });
                http(port, "PUT", &format!("/{name}"), "");
                let secret = format!("weir-s3-secret-{n}x{}", std::process::id());
                TestStore {
                    kind,
                    url: format!("s3://{name}"),
                    options: options(&[
                        ("endpoint", &format!("http://127.0.0.1:{port}")),
                        ("region", "us-east-1"),
                        ("access_key_id", "weirtest"),
                        ("secret_access_key", &secret),
                    ]),
                    secret,
                }
            }
            StoreKind::Gcs => {
                let port = server(&GCS, "gcp-storage-emulator (GCS)", || {
                    let mut c = Command::new(python_tool("gcp-storage-emulator"));
                    c.args(["start", "--in-memory", "--host", "127.0.0.1", "--port"]);
                    c
                });
                http(
                    port,
                    "POST",
                    "/storage/v1/b?project=weir",
                    &format!("{{\"name\":\"{name}\"}}"),
                );
                let secret = format!("weir-gcs-token-{n}x{}", std::process::id());
                TestStore {
                    kind,
                    url: format!("gs://{name}"),
                    options: options(&[
                        ("endpoint", &format!("http://127.0.0.1:{port}")),
                        ("token", &secret),
                    ]),
                    secret,
                }
            }
            StoreKind::Azure => {
                let port = server(&AZURE, "Azurite (Azure Blob)", || {
                    let tool = std::env::var("WEIR_TEST_AZURITE").map_or_else(
                        |_| tools_dir().join("azurite/node_modules/.bin/azurite-blob"),
                        PathBuf::from,
                    );
                    assert!(tool.is_file(), "{} is missing: {HINT}", tool.display());
                    let data = tempfile::tempdir().expect("temporary folder").keep();
                    let mut c = Command::new(tool);
                    c.arg("--location").arg(data).args([
                        "--silent",
                        "--skipApiVersionCheck",
                        "--blobHost",
                        "127.0.0.1",
                        "--blobPort",
                    ]);
                    c
                });
                let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
                let made = Command::new(python())
                    .args([
                        "-c",
                        "import sys\nfrom azure.storage.blob import BlobServiceClient\nBlobServiceClient(sys.argv[1], credential={'account_name': 'devstoreaccount1', 'account_key': sys.argv[2]}).create_container(sys.argv[3])",
                        &endpoint,
                        AZURITE_KEY,
                        &name,
                    ])
                    .output()
                    .expect("python for azure-storage-blob");
                assert!(
                    made.status.success(),
                    "creating container {name} on Azurite: {}",
                    String::from_utf8_lossy(&made.stderr)
                );
                TestStore {
                    kind,
                    url: format!("az://{name}"),
                    options: options(&[
                        ("endpoint", &endpoint),
                        ("account_name", "devstoreaccount1"),
                        ("account_key", AZURITE_KEY),
                    ]),
                    secret: AZURITE_KEY.to_owned(),
                }
            }
            StoreKind::Sftp => {
                let sshd = sftp_server();
                let dir = tempfile::Builder::new()
                    .prefix("weir-sftp-")
                    .tempdir()
                    .expect("temporary folder")
                    .keep();
                TestStore {
                    kind,
                    url: format!(
                        "sftp://{}@127.0.0.1:{}{}",
                        sshd.user,
                        sshd.port,
                        dir.display()
                    ),
                    options: options(&[
                        ("key", &sshd.key.display().to_string()),
                        ("known_hosts", "accept"),
                    ]),
                    // SFTP authenticates with a key file: its path is not a secret.
                    secret: String::new(),
                }
            }
        }
    }

    /// `path` in this bucket, as a location.
    pub fn at(&self, path: &str) -> String {
        format!("{}/{}", self.url, path.trim_start_matches('/'))
    }

    /// Uploads `bytes` to `path` in one request of the GCS emulator's JSON API (the way to
    /// put an object of several parts there: it lacks the XML multipart API).
    ///
    /// # Panics
    /// On another kind of store, or when the upload fails.
    pub fn put_whole(&self, path: &str, bytes: &[u8]) {
        assert_eq!(
            self.kind,
            StoreKind::Gcs,
            "put_whole is for the GCS emulator"
        );
        let port = *GCS.get().expect("the GCS emulator runs");
        let bucket = self.url.trim_start_matches("gs://");
        let name: String = url_encode(path);
        http_bytes(
            port,
            "POST",
            &format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"),
            "application/octet-stream",
            bytes,
        );
    }

    /// The connection as weir.toml writes it.
    pub fn toml(&self, name: &str) -> String {
        let mut out = format!("[connections.{name}]\nurl = \"{}\"\n", self.url);
        for (k, v) in &self.options {
            out.push_str(&format!("{k} = \"{v}\"\n"));
        }
        out
    }

    /// The connection, for a worker's stores.
    ///
    /// # Panics
    /// Never for the options this module writes.
    pub fn conn(&self, name: &str) -> weir_storage::StoreConn {
        weir_storage::StoreConn::new(name, &self.url, self.options.clone())
            .expect("test connection")
    }
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const HINT: &str = "run `bash scripts/test` once (it installs the storage servers into target/test-tools and Debian's openssh-server)";

static S3: OnceLock<u16> = OnceLock::new();
static GCS: OnceLock<u16> = OnceLock::new();
static AZURE: OnceLock<u16> = OnceLock::new();

/// The port of this process's server, started on first use with `command` + the port.
fn server(cell: &OnceLock<u16>, what: &str, command: impl Fn() -> Command) -> u16 {
    *cell.get_or_init(|| {
        let port = free_port().expect("a free port");
        let dir = tempfile::Builder::new()
            .prefix("weir-test-store-")
            .tempdir()
            .expect("temporary folder")
            .keep();
        let mut c = command();
        c.arg(port.to_string());
        keep_until_ready(what, &dir, &argv(&c), "TERM", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap_or_else(|e| panic!("{e}; {HINT}"));
        port
    })
}

/// The folder of the tools `scripts/test` installs.
fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools")
}

/// The venv's Python.
pub fn python() -> PathBuf {
    std::env::var("WEIR_TEST_PYTHON")
        .map_or_else(|_| tools_dir().join("venv/bin/python"), PathBuf::from)
}

/// A command of the venv (beside its Python).
fn python_tool(name: &str) -> PathBuf {
    let tool = python().with_file_name(name);
    assert!(tool.is_file(), "{} is missing: {HINT}", tool.display());
    tool
}

/// One plain HTTP/1.1 request to a loopback server (the emulators take unsigned requests for
/// making buckets); panics unless it answers 2xx.
fn http(port: u16, method: &str, path: &str, body: &str) {
    http_bytes(port, method, path, "application/json", body.as_bytes());
}

fn http_bytes(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("request");
    s.write_all(body).expect("body");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).unwrap_or("");
    assert!(
        status.starts_with('2'),
        "{method} {path} on port {port}: {answer}"
    );
}

/// `text` percent-encoded for a query parameter.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The test sshd: its port, the user to log in as and the client's private key.
struct Sshd {
    port: u16,
    user: String,
    key: PathBuf,
}

fn sftp_server() -> &'static Sshd {
    static SSHD: OnceLock<Sshd> = OnceLock::new();
    SSHD.get_or_init(|| {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        assert!(sshd.is_file(), "{} is missing: {HINT}", sshd.display());
        let dir = tempfile::Builder::new()
            .prefix("weir-test-sshd-")
            .tempdir()
            .expect("temporary folder")
            .keep();
        let keygen = |file: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(file))
                .output()
                .expect("ssh-keygen");
            assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        let port = free_port().expect("a free port");
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let mut c = Command::new(&sshd);
        c.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
        keep_until_ready("sshd (SFTP)", &dir, &argv(&c), "TERM", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap_or_else(|e| panic!("{e}; {HINT}"));
        Sshd {
            port,
            user,
            key: dir.join("client_key"),
        }
    })
}
