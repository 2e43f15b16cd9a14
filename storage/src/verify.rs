//! Copies that prove themselves: an object streamed from one location to another with the MD5
//! of every byte sent (and of each upload part), then checked at the destination against what
//! the store says of it (an S3 entity tag, single-part or multipart; a GCS or Azure content
//! MD5) or, where the store says nothing usable, against the destination read back.

use md5::{Digest as _, Md5};
use tokio::io::AsyncReadExt as _;

use crate::{Location, Object, PART_SIZE, Scheme, StorageError, Stores};

/// The MD5 of an object's bytes, whole and/or per upload part (whichever the check needs: one
/// pass of MD5 over a large file is a second or more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Bytes hashed.
    pub size: u64,
    /// MD5 of all of them, when asked for.
    md5: Option<[u8; 16]>,
    /// MD5 of each [`PART_SIZE`] part (the last shorter), when asked for.
    parts: Option<Vec<[u8; 16]>>,
}

/// Which MD5s to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashes {
    /// Of the whole object (what GCS and Azure keep).
    pub whole: bool,
    /// Of each upload part (what an S3 entity tag is made of; enough to tell any two byte
    /// sequences apart on its own).
    pub parts: bool,
}

impl Hashes {
    /// Both.
    pub const BOTH: Hashes = Hashes {
        whole: true,
        parts: true,
    };

    /// What checking a copy at `to`, and the bytes read from `from`, needs.
    pub fn for_copy(from: &Object, to: &Location) -> Hashes {
        let whole_kept = |s: Scheme| matches!(s, Scheme::Gcs | Scheme::Azure);
        Hashes {
            whole: whole_kept(to.scheme)
                || (whole_kept(from.location.scheme) && from.md5.is_some()),
            parts: !whole_kept(to.scheme),
        }
    }
}

/// MD5 over a stream, whole and by part.
struct Hasher {
    whole: Option<Md5>,
    part: Option<Md5>,
    in_part: usize,
    parts: Vec<[u8; 16]>,
    size: u64,
}

impl Hasher {
    fn new(hashes: Hashes) -> Hasher {
        Hasher {
            whole: hashes.whole.then(Md5::new),
            part: hashes.parts.then(Md5::new),
            in_part: 0,
            parts: Vec::new(),
            size: 0,
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        if let Some(w) = &mut self.whole {
            w.update(bytes);
        }
        self.size += bytes.len() as u64;
        let Some(part) = &mut self.part else {
            return;
        };
        while !bytes.is_empty() {
            let take = (PART_SIZE - self.in_part).min(bytes.len());
            part.update(&bytes[..take]);
            self.in_part += take;
            bytes = &bytes[take..];
            if self.in_part == PART_SIZE {
                self.parts.push(std::mem::take(part).finalize().into());
                self.in_part = 0;
            }
        }
    }

    fn finish(self) -> Digest {
        let parts = self.part.map(|part| {
            let mut parts = self.parts;
            if self.in_part > 0 || parts.is_empty() {
                parts.push(part.finalize().into());
            }
            parts
        });
        Digest {
            size: self.size,
            md5: self.whole.map(|w| w.finalize().into()),
            parts,
        }
    }
}

impl Digest {
    /// What the digest says, for a log: the MD5, else the S3-style MD5 of the parts' MD5s.
    pub fn hex(&self) -> String {
        match (&self.md5, &self.parts) {
            (Some(m), _) => hex(m),
            (None, Some(_)) => format!("{} (of its parts)", self.s3_etag().unwrap_or_default()),
            (None, None) => String::new(),
        }
    }

    /// The entity tag S3 gives an upload of these bytes by weir: the MD5 of a single-part
    /// upload, else the MD5 of the parts' MD5s and the count of parts.
    fn s3_etag(&self) -> Option<String> {
        let parts = self.parts.as_ref()?;
        if let [one] = parts.as_slice() {
            return Some(hex(one));
        }
        let mut all = Md5::new();
        for p in parts {
            all.update(p);
        }
        Some(format!("{}-{}", hex(&all.finalize()), parts.len()))
    }

    /// Whether two digests of the same kinds say the same bytes.
    fn same(&self, other: &Digest) -> bool {
        self.size == other.size
            && (self.md5.is_none() || other.md5.is_none() || self.md5 == other.md5)
            && (self.parts.is_none() || other.parts.is_none() || self.parts == other.parts)
            && (self.md5.is_some() && other.md5.is_some()
                || self.parts.is_some() && other.parts.is_some())
    }

    fn hashes(&self) -> Hashes {
        Hashes {
            whole: self.md5.is_some(),
            parts: self.parts.is_some(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A content MD5 as stores give it (base64, as GCS and Azure do), in hex.
fn md5_hex_of_base64(b64: &str) -> Option<String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .filter(|b| b.len() == 16)
        .map(|b| hex(&b))
}

/// How a copy was found equal to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The store's entity tag (S3) matched the bytes' MD5.
    EntityTag,
    /// The store's content MD5 (GCS, Azure) matched.
    ContentMd5,
    /// The destination, read back, has the same MD5.
    ReadBack,
}

impl Verified {
    /// How it reads in a log.
    pub fn how(self) -> &'static str {
        match self {
            Verified::EntityTag => "the store's entity tag",
            Verified::ContentMd5 => "the store's content MD5",
            Verified::ReadBack => "reading it back",
        }
    }
}

impl Stores {
    /// The digest of the object at `loc`, read whole (as a stream).
    ///
    /// # Errors
    /// The store's.
    pub async fn digest(&self, loc: &Location, hashes: Hashes) -> Result<Digest, StorageError> {
        let mut reader = self.open(loc).await?;
        let mut hasher = Hasher::new(hashes);
        let mut buf = vec![0_u8; 1024 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| StorageError::io(loc, &e))?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    }

    /// Whether `object` holds exactly the bytes of `digest`: its size, then what its store
    /// says of its content, else its bytes read back. `Ok(None)`: it does not.
    ///
    /// # Errors
    /// The store's.
    pub async fn verify(
        &self,
        object: &Object,
        digest: &Digest,
    ) -> Result<Option<Verified>, StorageError> {
        if object.size != digest.size {
            return Ok(None);
        }
        if object.location.scheme == Scheme::S3
            && let (Some(tag), Some(expected)) = (&object.etag, digest.s3_etag())
            && tag.trim_matches('"') == expected
        {
            return Ok(Some(Verified::EntityTag));
        }
        if let (Some(kept), Some(md5)) = (
            object.md5.as_deref().and_then(md5_hex_of_base64),
            &digest.md5,
        ) {
            return Ok((kept == hex(md5)).then_some(Verified::ContentMd5));
        }
        // No checksum the store keeps (a local or SFTP file, an Azure block list, an S3 object
        // encrypted with KMS): the bytes themselves.
        let back = self.digest(&object.location, digest.hashes()).await?;
        Ok(back.same(digest).then_some(Verified::ReadBack))
    }

    /// Whether the MD5 the store keeps of `object` (GCS, Azure) differs from `digest`: bytes
    /// read from it that are not what it holds. (An S3 entity tag is not always an MD5: it is
    /// not used here.)
    pub fn known_mismatch(&self, object: &Object, digest: &Digest) -> bool {
        match (
            object.md5.as_deref().and_then(md5_hex_of_base64),
            &digest.md5,
        ) {
            (Some(kept), Some(md5)) => kept != hex(md5),
            _ => false,
        }
    }

    /// Copies `from` to `to` through this process, hashing every byte sent (`hashes`, see
    /// [`Hashes::for_copy`]) on a thread of its own while the upload goes on; the copy appears
    /// at `to` only once complete. Returns the digest of what was sent (check the destination
    /// against it with [`Stores::verify`]).
    ///
    /// # Errors
    /// Either store's; nothing is left at `to`.
    pub async fn copy_hashed(
        &self,
        from: &Location,
        to: &Location,
        hashes: Hashes,
    ) -> Result<Digest, StorageError> {
        let mut reader = self.open(from).await?;
        let mut writer = self.create(to).await?;
        let (chunks, hashing) = std::sync::mpsc::sync_channel::<bytes::Bytes>(16);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut h = Hasher::new(hashes);
            for chunk in hashing {
                h.update(&chunk);
            }
            h.finish()
        });
        let sent: Result<(), StorageError> = async {
            loop {
                let mut buf = bytes::BytesMut::zeroed(1024 * 1024);
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| StorageError::io(from, &e))?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                let chunk = buf.freeze();
                if chunks.send(chunk.clone()).is_err() {
                    return Err(StorageError::invalid("the hashing thread stopped"));
                }
                writer.write(chunk).await?;
            }
        }
        .await;
        drop(chunks);
        if let Err(e) = sent {
            writer.abort().await;
            return Err(e);
        }
        writer.commit().await?;
        hasher
            .await
            .map_err(|e| StorageError::invalid(format!("hashing {from}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_whole_are_hashed_across_writes() {
        let bytes: Vec<u8> = (0..(2 * PART_SIZE + 5)).map(|i| (i % 253) as u8).collect();
        let mut h = Hasher::new(Hashes::BOTH);
        for chunk in bytes.chunks(1_000_003) {
            h.update(chunk);
        }
        let d = h.finish();
        assert_eq!(d.size, bytes.len() as u64);
        assert_eq!(d.md5, Some(<[u8; 16]>::from(Md5::digest(&bytes))));
        let parts = d.parts.clone().expect("parts");
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[2],
            <[u8; 16]>::from(Md5::digest(&bytes[2 * PART_SIZE..]))
        );
        assert!(d.s3_etag().expect("etag").ends_with("-3"));
        let mut only_parts = Hasher::new(Hashes {
            whole: false,
            parts: true,
        });
        only_parts.update(&bytes);
        let p = only_parts.finish();
        assert!(p.same(&d) && d.same(&p));
        let mut other = bytes.clone();
        other[7] ^= 1;
        let mut h = Hasher::new(Hashes {
            whole: false,
            parts: true,
        });
        h.update(&other);
        assert!(!h.finish().same(&d));
        assert_eq!(
            md5_hex_of_base64("XUFAKrxLKna5cZ2REBfFkg==").as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
    }
}
