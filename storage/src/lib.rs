//! Where files are, for every step that reads or writes one: a local path, an S3 (or
//! S3-compatible) bucket, Google Cloud Storage, Azure Blob Storage or an SFTP server, behind one
//! API ([`Stores`]) built on Apache OpenDAL.
//!
//! - [`Location`]: a location as a DAG writes it (`s3://landing/hr/*.csv`), parsed once;
//! - [`StoreConn`]: a storage connection of weir.toml (endpoint, region, credentials), chosen
//!   for a location by the longest matching prefix; without one, each cloud's own environment
//!   and instance credentials;
//! - [`Stores`]: listing globs, streaming reads, atomic writes, copies, moves and deletes;
//! - [`Compression`]: gzip and zstd as streams;
//! - [`Stores::copy_hashed`] and [`Stores::verify`]: copies checked against their source.

mod compression;
mod config;
mod location;
mod stores;
mod verify;

pub use compression::{Compression, Encoder, decode_all};
pub use config::{StoreConn, StoreOption, is_store_url, options_of};
pub use location::{Location, Scheme};
pub use stores::{
    Object, ObjectReader, ObjectWriter, PART_SIZE, PARTS_IN_FLIGHT, RangeReader, Stores,
};
pub use verify::{Digest, Hashes, Verified};

/// Why a location could not be read or written: a message naming the location (never a
/// credential), and whether a retry may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    /// What happened, naming the location.
    pub message: String,
    /// A network or server failure that may pass.
    pub retryable: bool,
}

impl StorageError {
    /// A mistake in the DAG or the configuration: retrying will not help.
    pub fn invalid(message: impl Into<String>) -> StorageError {
        StorageError {
            message: message.into(),
            retryable: false,
        }
    }

    /// An OpenDAL error at `loc`, in a reader's words.
    pub fn of(loc: &Location, e: &opendal::Error) -> StorageError {
        use opendal::ErrorKind as K;
        let what = match e.kind() {
            K::NotFound => "not found".to_owned(),
            K::PermissionDenied => {
                "permission denied (check the connection's credentials)".to_owned()
            }
            K::ConfigInvalid => {
                format!("the connection's configuration is invalid: {}", e.message())
            }
            _ if e.message().is_empty() => e.to_string(),
            _ => e.message().to_owned(),
        };
        StorageError {
            message: format!("{loc}: {what}"),
            retryable: e.is_temporary() || matches!(e.kind(), K::Unexpected | K::RateLimited),
        }
    }

    /// An I/O error while streaming `loc`.
    pub fn io(loc: &Location, e: &std::io::Error) -> StorageError {
        StorageError {
            message: format!("{loc}: {e}"),
            retryable: true,
        }
    }
}
