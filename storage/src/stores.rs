//! [`Stores`]: the configured storage connections and an OpenDAL operator per store used, with
//! what the steps need of them: listing a glob, streaming reads, atomic writes, copies, moves
//! and deletes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use opendal::{Operator, services};

use crate::{Location, Scheme, StorageError, StoreConn};

/// An object or file found by a listing or a `stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Where it is.
    pub location: Location,
    /// Its size in bytes.
    pub size: u64,
    /// The store's entity tag, when it gives one (S3: the MD5 of a single-part upload).
    pub etag: Option<String>,
    /// The content MD5 (base64), when the store keeps one (GCS, Azure).
    pub md5: Option<String>,
    /// When it was last written, as the store says (RFC 3339), if it says.
    pub modified: Option<String>,
}

impl Object {
    /// What tells this version of the object from another written under the same name: the
    /// entity tag, else the content MD5, else the size and modification time.
    pub fn version(&self) -> String {
        self.etag
            .clone()
            .or_else(|| self.md5.clone())
            .unwrap_or_else(|| {
                format!(
                    "{}@{}",
                    self.size,
                    self.modified.as_deref().unwrap_or("unknown")
                )
            })
    }
}

/// The storage connections of a worker and the operators opened for them (a cache; the
/// configuration is the truth).
#[derive(Debug, Default, Clone)]
pub struct Stores {
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: Vec<StoreConn>,
    operators: Mutex<HashMap<OperatorKey, Operator>>,
}

/// An operator per store, root and connection.
type OperatorKey = (Scheme, String, Option<String>);

/// Bytes per part of an upload.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Bytes per ranged read of a stream, and reads in flight: what a reader holds ahead of its
/// consumer (8 MiB), whatever the object's size.
const READ_CHUNK: usize = 4 * 1024 * 1024;
const READS_IN_FLIGHT: usize = 2;

impl Stores {
    /// Stores with these connections.
    pub fn new(conns: Vec<StoreConn>) -> Stores {
        Stores {
            inner: std::sync::Arc::new(Inner {
                conns,
                operators: Mutex::default(),
            }),
        }
    }

    /// Every credential of every connection, to mask.
    pub fn secrets(&self) -> Vec<String> {
        self.inner
            .conns
            .iter()
            .flat_map(StoreConn::secrets)
            .collect()
    }

    /// The connection that covers `loc` (the longest prefix wins), if any: without one, a
    /// store's own environment and instance credentials are used.
    pub fn connection_for(&self, loc: &Location) -> Option<&StoreConn> {
        self.inner
            .conns
            .iter()
            .filter(|c| c.covers(loc))
            .max_by_key(|c| c.at.path.len())
    }

    /// The operator for `loc`'s store, and `loc`'s path in it.
    fn operator(&self, loc: &Location) -> Result<(Operator, String), StorageError> {
        let conn = self.connection_for(loc);
        let key = (loc.scheme, loc.root.clone(), conn.map(|c| c.name.clone()));
        let path = match loc.scheme {
            Scheme::Local => std::path::absolute(&loc.path)
                .map_err(|e| StorageError::invalid(format!("{loc}: {e}")))?
                .display()
                .to_string(),
            _ => loc.path.clone(),
        };
        let mut cache = self
            .inner
            .operators
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(op) = cache.get(&key) {
            return Ok((op.clone(), path));
        }
        let op = build(loc, conn).map_err(|e| {
            let named = conn.map_or(String::new(), |c| format!(" (connection `{}`)", c.name));
            StorageError::invalid(format!("{}{}{named}: {e}", loc.scheme.prefix(), loc.root))
        })?;
        cache.insert(key, op.clone());
        Ok((op, path))
    }

    /// The objects a location names: every match of a glob (`*`, `?`, `[…]` within a path
    /// component, `**` across components), in path order; or the one object named, when it
    /// exists. No match is an empty list, not an error.
    ///
    /// # Errors
    /// A store that cannot be listed (credentials, network, a missing bucket).
    pub async fn list(&self, loc: &Location) -> Result<Vec<Object>, StorageError> {
        if loc.is_local() {
            return list_local(loc);
        }
        let Some((folder, pattern)) = loc.glob_split() else {
            return Ok(self.stat(loc).await?.into_iter().collect());
        };
        let (op, _) = self.operator(loc)?;
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let entries = op
            .list_with(&prefix)
            .recursive(true)
            .await
            .map_err(|e| StorageError::of(loc, &e))?;
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::default()
        };
        let mut found: Vec<Object> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter(|e| pattern.matches_with(e.path().trim_start_matches('/'), options))
            .map(|e| {
                let m = e.metadata();
                Object {
                    location: loc.with_path(e.path().trim_start_matches('/')),
                    size: m.content_length(),
                    etag: m.etag().map(str::to_owned),
                    md5: m.content_md5().map(str::to_owned),
                    modified: m.last_modified().map(|t| t.to_string()),
                }
            })
            .collect();
        found.sort_by(|a, b| a.location.path.cmp(&b.location.path));
        Ok(found)
    }

    /// The object at `loc`, or `None` when there is none.
    ///
    /// # Errors
    /// The store's, other than "not found".
    pub async fn stat(&self, loc: &Location) -> Result<Option<Object>, StorageError> {
        let (op, path) = self.operator(loc)?;
        match op.stat(&path).await {
            Ok(m) if m.is_file() => Ok(Some(Object {
                location: loc.clone(),
                size: m.content_length(),
                etag: m.etag().map(str::to_owned),
                md5: m.content_md5().map(str::to_owned),
                modified: m.last_modified().map(|t| t.to_string()),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::of(loc, &e)),
        }
    }

    /// A seekable stream of the object's bytes (ranged reads, several parts in flight; nothing
    /// is read whole into memory).
    ///
    /// # Errors
    /// A missing object, or the store's.
    pub async fn open(&self, loc: &Location) -> Result<ObjectReader, StorageError> {
        use tokio_util::compat::FuturesAsyncReadCompatExt as _;
        let (size, reader) = self.reader(loc, Some(READ_CHUNK)).await?;
        let reader = reader
            .into_futures_async_read(0..size)
            .await
            .map_err(|e| StorageError::of(loc, &e))?;
        Ok(ObjectReader {
            inner: reader.compat(),
            size,
        })
    }

    /// The object's size and an OpenDAL reader of it (`chunk`: the size of each ranged read
    /// of a stream).
    async fn reader(
        &self,
        loc: &Location,
        chunk: Option<usize>,
    ) -> Result<(u64, opendal::Reader), StorageError> {
        let (op, path) = self.operator(loc)?;
        let size = op
            .stat(&path)
            .await
            .map_err(|e| StorageError::of(loc, &e))?
            .content_length();
        let mut with = op.reader_with(&path).concurrent(READS_IN_FLIGHT);
        if let Some(c) = chunk {
            with = with.chunk(c);
        }
        let reader = with.await.map_err(|e| StorageError::of(loc, &e))?;
        Ok((size, reader))
    }

    /// Reads of byte ranges of the object (a Parquet file's footer, then its column chunks).
    ///
    /// # Errors
    /// A missing object, or the store's.
    pub async fn ranges(&self, loc: &Location) -> Result<RangeReader, StorageError> {
        let (size, reader) = self.reader(loc, None).await?;
        Ok(RangeReader {
            reader,
            size,
            loc: loc.clone(),
        })
    }

    /// A writer whose bytes appear at `loc` only when it commits: an object store's upload
    /// (multipart for large objects) becomes visible when it completes; a local or SFTP file
    /// is written under a temporary name beside `loc` and renamed. Dropped or aborted, it
    /// leaves nothing at `loc`.
    ///
    /// # Errors
    /// The store's.
    pub async fn create(&self, loc: &Location) -> Result<ObjectWriter, StorageError> {
        let (op, path) = self.operator(loc)?;
        let temp = loc.scheme.renames().then(|| {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            let hidden = format!(".{name}.weir-partial-{}", uuid::Uuid::new_v4().simple());
            if dir.is_empty() {
                hidden
            } else {
                format!("{dir}/{hidden}")
            }
        });
        let writing = temp.clone().unwrap_or_else(|| path.clone());
        let writer = op
            .writer_with(&writing)
            .content_type(content_type(&path))
            .chunk(PART_SIZE)
            .concurrent(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| StorageError::of(loc, &e))?;
        Ok(ObjectWriter {
            op,
            loc: loc.clone(),
            path,
            temp,
            writer: Some(writer),
            bytes: 0,
        })
    }

    /// Copies an object. Within one store and connection the store copies it itself; across
    /// stores the bytes stream through this process.
    ///
    /// # Errors
    /// A missing source, or either store's.
    pub async fn copy(&self, from: &Location, to: &Location) -> Result<u64, StorageError> {
        let same_store = from.scheme == to.scheme
            && from.root == to.root
            && self.connection_for(from).map(|c| &c.name)
                == self.connection_for(to).map(|c| &c.name);
        if same_store {
            let (op, from_path) = self.operator(from)?;
            let (_, to_path) = self.operator(to)?;
            if op.info().capability().copy {
                op.copy(&from_path, &to_path)
                    .await
                    .map_err(|e| StorageError::of(from, &e))?;
                return Ok(self.stat(to).await?.map_or(0, |o| o.size));
            }
        }
        let mut reader = self.open(from).await?;
        let mut writer = self.create(to).await?;
        let mut buf = vec![0_u8; 1024 * 1024];
        loop {
            use tokio::io::AsyncReadExt as _;
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    writer.abort().await;
                    return Err(StorageError::io(from, &e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.write(buf[..n].to_vec()).await {
                writer.abort().await;
                return Err(e);
            }
        }
        writer.commit().await
    }

    /// Moves an object: a rename where the store has one, else a copy and a delete.
    ///
    /// # Errors
    /// A missing source, or the store's.
    pub async fn rename(&self, from: &Location, to: &Location) -> Result<(), StorageError> {
        let same_store = from.scheme == to.scheme && from.root == to.root;
        if same_store && from.scheme.renames() {
            let (op, from_path) = self.operator(from)?;
            let (_, to_path) = self.operator(to)?;
            if let Some(dir) = to_path.rsplit_once('/').map(|(d, _)| format!("{d}/")) {
                op.create_dir(&dir)
                    .await
                    .map_err(|e| StorageError::of(to, &e))?;
            }
            return op
                .rename(&from_path, &to_path)
                .await
                .map_err(|e| StorageError::of(from, &e));
        }
        self.copy(from, to).await?;
        self.delete(from).await
    }

    /// Deletes an object (one already gone is not an error).
    ///
    /// # Errors
    /// The store's.
    pub async fn delete(&self, loc: &Location) -> Result<(), StorageError> {
        let (op, path) = self.operator(loc)?;
        match op.delete(&path).await {
            Err(e) if e.kind() != opendal::ErrorKind::NotFound => Err(StorageError::of(loc, &e)),
            _ => Ok(()),
        }
    }
}

/// The media type an object gets from its name.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("csv") => "text/csv",
        Some("tsv") => "text/tab-separated-values",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("gz") => "application/gzip",
        Some("zst") => "application/zstd",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Every local file a glob (or a plain path) matches, in path order.
fn list_local(loc: &Location) -> Result<Vec<Object>, StorageError> {
    let paths = glob::glob(&loc.path)
        .map_err(|e| StorageError::invalid(format!("`{loc}` is not a valid glob: {e}")))?;
    let mut found: Vec<Object> = paths
        .filter_map(Result::ok)
        .filter_map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .filter(std::fs::Metadata::is_file)?;
            Some(Object {
                location: loc.with_path(p.display().to_string()),
                size: meta.len(),
                etag: None,
                md5: None,
                modified: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos())),
            })
        })
        .collect();
    found.sort_by(|a, b| a.location.path.cmp(&b.location.path));
    Ok(found)
}

/// Builds the operator of `loc`'s store from its connection's options (or none: the store's
/// environment and instance credentials).
fn build(loc: &Location, conn: Option<&StoreConn>) -> opendal::Result<Operator> {
    install_http_transport();
    let mut config: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| config.push((k.to_owned(), v.to_owned()));
    if let Some(c) = conn {
        let known = crate::config::options_of(loc.scheme);
        for (k, v) in &c.options {
            if let Some(o) = known.iter().find(|o| o.name == k) {
                set(o.opendal, v);
            }
        }
    }
    let has = |config: &[(String, String)], k: &str| config.iter().any(|(key, _)| key == k);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let op = match loc.scheme {
        Scheme::Local => Operator::new(services::Fs::default().root("/"))?,
        Scheme::S3 => {
            config.push(("bucket".into(), loc.root.clone()));
            if !has(&config, "region") {
                let region = env("AWS_REGION")
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                config.push(("region".into(), region));
            }
            if !has(&config, "endpoint")
                && let Some(e) = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"))
            {
                config.push(("endpoint".into(), e));
            }
            // Each part goes up with its CRC32C, which S3 checks on receipt.
            config.push(("checksum_algorithm".into(), "crc32c".into()));
            Operator::from_iter::<services::S3>(config)?
        }
        Scheme::Gcs => {
            config.push(("bucket".into(), loc.root.clone()));
            Operator::from_iter::<services::Gcs>(config)?
        }
        Scheme::Azure => {
            config.push(("container".into(), loc.root.clone()));
            if !has(&config, "account_name")
                && let Some(a) =
                    env("AZURE_STORAGE_ACCOUNT").or_else(|| env("AZURE_STORAGE_ACCOUNT_NAME"))
            {
                config.push(("account_name".into(), a));
            }
            if !has(&config, "account_key")
                && !has(&config, "sas_token")
                && let Some(k) =
                    env("AZURE_STORAGE_KEY").or_else(|| env("AZURE_STORAGE_ACCOUNT_KEY"))
            {
                config.push(("account_key".into(), k));
            }
            if !has(&config, "endpoint") {
                let account = config
                    .iter()
                    .find(|(k, _)| k == "account_name")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                config.push((
                    "endpoint".into(),
                    format!("https://{account}.blob.core.windows.net"),
                ));
            }
            Operator::from_iter::<services::Azblob>(config)?
        }
        Scheme::Sftp => {
            config.push(("endpoint".into(), format!("ssh://{}", loc.root)));
            config.push(("root".into(), "/".into()));
            Operator::from_iter::<services::Sftp>(config)?
        }
    };
    Ok(op.layer(
        opendal::layers::RetryLayer::new()
            .with_max_times(4)
            .with_jitter(),
    ))
}

/// OpenDAL's HTTP stores go through one reqwest client of ours (rustls with ring, the provider
/// of the rest of weir), installed once.
fn install_http_transport() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Ok(client) = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            opendal::HttpTransporter::install_default(
                opendal_http_transport_reqwest::ReqwestTransport::new(client),
            );
        }
    });
}

/// A stream of an object's bytes: `AsyncRead` and `AsyncSeek`.
pub struct ObjectReader {
    inner: tokio_util::compat::Compat<opendal::FuturesAsyncReader>,
    size: u64,
}

impl ObjectReader {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl tokio::io::AsyncRead for ObjectReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncSeek for ObjectReader {
    fn start_seek(
        mut self: std::pin::Pin<&mut Self>,
        position: std::io::SeekFrom,
    ) -> std::io::Result<()> {
        std::pin::Pin::new(&mut self.inner).start_seek(position)
    }

    fn poll_complete(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        std::pin::Pin::new(&mut self.inner).poll_complete(cx)
    }
}

/// Ranged reads of one object; see [`Stores::ranges`].
pub struct RangeReader {
    reader: opendal::Reader,
    size: u64,
    loc: Location,
}

impl RangeReader {
    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes of `range`.
    ///
    /// # Errors
    /// The store's.
    pub async fn read(&self, range: std::ops::Range<u64>) -> Result<bytes::Bytes, StorageError> {
        Ok(self
            .reader
            .read(range)
            .await
            .map_err(|e| StorageError::of(&self.loc, &e))?
            .to_bytes())
    }

    /// The bytes of several ranges, fetched at once (near ranges merged into one request).
    ///
    /// # Errors
    /// The store's.
    pub async fn fetch(
        &self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> Result<Vec<bytes::Bytes>, StorageError> {
        Ok(self
            .reader
            .fetch(ranges)
            .await
            .map_err(|e| StorageError::of(&self.loc, &e))?
            .into_iter()
            .map(|b| b.to_bytes())
            .collect())
    }
}

/// An object being written; see [`Stores::create`].
pub struct ObjectWriter {
    op: Operator,
    loc: Location,
    path: String,
    temp: Option<String>,
    writer: Option<opendal::Writer>,
    bytes: u64,
}

impl ObjectWriter {
    /// Appends bytes (uploaded in parts as they fill).
    ///
    /// # Errors
    /// The store's.
    pub async fn write(&mut self, bytes: impl Into<bytes::Bytes>) -> Result<(), StorageError> {
        let bytes: bytes::Bytes = bytes.into();
        let n = bytes.len() as u64;
        let Some(w) = self.writer.as_mut() else {
            return Err(StorageError::invalid(format!(
                "{}: written after its end",
                self.loc
            )));
        };
        w.write(bytes)
            .await
            .map_err(|e| StorageError::of(&self.loc, &e))?;
        self.bytes += n;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Completes the upload (or renames the temporary file into place); returns the bytes.
    ///
    /// # Errors
    /// The store's; then nothing is at the location.
    pub async fn commit(mut self) -> Result<u64, StorageError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(self.bytes);
        };
        if let Err(e) = w.close().await {
            let _ = w.abort().await;
            self.remove_temp().await;
            return Err(StorageError::of(&self.loc, &e));
        }
        if let Some(temp) = self.temp.take()
            && let Err(e) = self.op.rename(&temp, &self.path).await
        {
            let _ = self.op.delete(&temp).await;
            return Err(StorageError::of(&self.loc, &e));
        }
        Ok(self.bytes)
    }

    /// Gives up: the upload is aborted, the temporary file removed.
    pub async fn abort(mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.abort().await;
        }
        self.remove_temp().await;
    }

    async fn remove_temp(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = self.op.delete(&temp).await;
        }
    }
}

/// A writer dropped before its commit (a try cancelled or timed out) is aborted in the
/// background: the upload is dropped, the temporary file removed.
impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let (writer, temp) = (self.writer.take(), self.temp.take());
        if writer.is_none() && temp.is_none() {
            return;
        }
        let op = self.op.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Some(mut w) = writer {
                    let _ = w.abort().await;
                }
                if let Some(temp) = temp {
                    let _ = op.delete(&temp).await;
                }
            });
        }
    }
}
