//! Where a file is: a local path, or an object in a bucket (`s3://`, `gs://`, `az://`) or on an
//! SFTP server (`sftp://[user@]host[:port]/path`), parsed once from the text a DAG writes.

use std::fmt;

use crate::StorageError;

/// The kind of store a location is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// The worker's own file system.
    Local,
    /// Amazon S3 and the stores that speak its API (MinIO, Ceph, R2, moto).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage (and ADLS Gen2 accounts, through their blob endpoint).
    Azure,
    /// A server's files over SSH.
    Sftp,
}

impl Scheme {
    /// The URL scheme weir writes for it.
    pub fn prefix(self) -> &'static str {
        match self {
            Scheme::Local => "",
            Scheme::S3 => "s3://",
            Scheme::Gcs => "gs://",
            Scheme::Azure => "az://",
            Scheme::Sftp => "sftp://",
        }
    }

    /// Whether the store renames objects in one step (else a move is a copy and a delete).
    pub fn renames(self) -> bool {
        matches!(self, Scheme::Local | Scheme::Sftp)
    }
}

/// A parsed location. `root` is the bucket, container or `[user@]host[:port]` (empty for a
/// local path); `path` is the key or path in it (a local path as written, relative to the
/// worker's directory unless absolute).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The store.
    pub scheme: Scheme,
    /// Bucket, container or SFTP authority.
    pub root: String,
    /// Key in the bucket, path on the server (without its leading `/`), or local path.
    pub path: String,
}

impl Location {
    /// Parses a location: a URL of a known scheme, `file://` or a plain path.
    ///
    /// # Errors
    /// An unknown scheme (`ftp://…`), or a bucket URL without its bucket.
    pub fn parse(text: &str) -> Result<Location, StorageError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Location::local(text));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "file" => return Ok(Location::local(rest)),
            "s3" | "s3a" => Scheme::S3,
            "gs" | "gcs" => Scheme::Gcs,
            "az" | "azure" | "abfs" | "abfss" | "wasb" | "wasbs" => Scheme::Azure,
            "sftp" => Scheme::Sftp,
            other => {
                return Err(StorageError::invalid(format!(
                    "`{text}`: `{other}://` is not a location weir can read; use a path, s3://, gs://, az:// or sftp://"
                )));
            }
        };
        let (root, path) = rest.split_once('/').unwrap_or((rest, ""));
        // `abfss://container@account.dfs.core.windows.net/path`: the container is before `@`.
        let root = match (scheme, root.split_once('@')) {
            (Scheme::Azure, Some((container, _account))) => container,
            _ => root,
        };
        if root.is_empty() {
            return Err(StorageError::invalid(format!(
                "`{text}` names no {} after `{}`",
                match scheme {
                    Scheme::Sftp => "host",
                    Scheme::Azure => "container",
                    _ => "bucket",
                },
                scheme.prefix()
            )));
        }
        Ok(Location {
            scheme,
            root: root.to_owned(),
            path: path.to_owned(),
        })
    }

    fn local(path: &str) -> Location {
        Location {
            scheme: Scheme::Local,
            root: String::new(),
            path: path.to_owned(),
        }
    }

    /// Whether this is a local path.
    pub fn is_local(&self) -> bool {
        self.scheme == Scheme::Local
    }

    /// The same store and root at another path.
    pub fn with_path(&self, path: impl Into<String>) -> Location {
        Location {
            scheme: self.scheme,
            root: self.root.clone(),
            path: path.into(),
        }
    }

    /// The last component of the path.
    pub fn file_name(&self) -> &str {
        self.path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
    }

    /// This location as a folder: `name` inside it.
    pub fn join(&self, name: &str) -> Location {
        let base = self.path.trim_end_matches('/');
        let name = name.trim_start_matches('/');
        self.with_path(if base.is_empty() {
            name.to_owned()
        } else {
            format!("{base}/{name}")
        })
    }

    /// Splits a glob into the folder to list (its components before the first with a
    /// wildcard) and the pattern the listed paths must match; `None` when there is no wildcard.
    pub fn glob_split(&self) -> Option<(String, glob::Pattern)> {
        let wild = |c: &str| c.contains(['*', '?', '[']);
        if !wild(&self.path) {
            return None;
        }
        let parts: Vec<&str> = self.path.split('/').collect();
        let first_wild = parts.iter().position(|p| wild(p)).unwrap_or(0);
        let folder = parts[..first_wild].join("/");
        let pattern = glob::Pattern::new(&self.path).ok()?;
        Some((folder, pattern))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Local => f.write_str(&self.path),
            s => write!(f, "{}{}/{}", s.prefix(), self.root, self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_by_scheme() {
        let l = Location::parse("s3://landing/hr/2026/*.csv").expect("s3");
        assert_eq!((l.scheme, l.root.as_str()), (Scheme::S3, "landing"));
        assert_eq!(l.path, "hr/2026/*.csv");
        assert_eq!(l.to_string(), "s3://landing/hr/2026/*.csv");
        let (folder, pattern) = l.glob_split().expect("a glob");
        assert_eq!(folder, "hr/2026");
        assert!(pattern.matches_with(
            "hr/2026/a.csv",
            glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            }
        ));
        let a = Location::parse("abfss://raw@acct.dfs.core.windows.net/x/y.parquet").expect("az");
        assert_eq!(
            (a.scheme, a.root.as_str(), a.path.as_str()),
            (Scheme::Azure, "raw", "x/y.parquet")
        );
        let s = Location::parse("sftp://etl@files.example.com:2222/out/a.csv").expect("sftp");
        assert_eq!(s.root, "etl@files.example.com:2222");
        assert_eq!(s.path, "out/a.csv");
        assert!(Location::parse("data/x.csv").expect("local").is_local());
        assert_eq!(
            Location::parse("file:///tmp/x").expect("file").path,
            "/tmp/x"
        );
        assert!(Location::parse("ftp://h/x").is_err());
        assert!(Location::parse("s3:///key").is_err());
        assert_eq!(Location::parse("gs://b/k").expect("gs").glob_split(), None);
    }
}
