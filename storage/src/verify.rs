//! Copies that prove themselves: an object streamed from one location to another with the MD5
//! of every byte sent (and of each upload part), then checked at the destination against what
//! the store says of it (an S3 entity tag, single-part or multipart; a GCS or Azure content
//! MD5) or, where the store says nothing usable, against the destination read back.

use md5::{Digest as _, Md5};
use tokio::io::AsyncReadExt as _;

use crate::{Location, Object, PART_SIZE, Scheme, StorageError, Stores};

/// The MD5 of an object's bytes, whole and per upload part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Bytes hashed.
    pub size: u64,
    /// MD5 of all of them.
    pub md5: [u8; 16],
    /// MD5 of each [`PART_SIZE`] part (the last shorter).
    parts: Vec<[u8; 16]>,
}

/// MD5 over a stream, whole and by part.
#[derive(Default)]
struct Hasher {
    whole: Md5,
    part: Md5,
    in_part: usize,
    parts: Vec<[u8; 16]>,
    size: u64,
}

impl Hasher {
    fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (PART_SIZE - self.in_part).min(bytes.len());
            self.part.update(&bytes[..take]);
            self.in_part += take;
            bytes = &bytes[take..];
            if self.in_part == PART_SIZE {
                self.parts
                    .push(std::mem::take(&mut self.part).finalize().into());
                self.in_part = 0;
            }
        }
    }

    fn finish(mut self) -> Digest {
        if self.in_part > 0 {
            self.parts.push(self.part.finalize().into());
        }
        Digest {
            size: self.size,
            md5: self.whole.finalize().into(),
            parts: self.parts,
        }
    }
}

impl Digest {
    /// The MD5 as lower-case hex.
    pub fn hex(&self) -> String {
        hex(&self.md5)
    }

    /// The entity tag S3 gives an upload of these bytes by weir: the MD5 of a single-part
    /// upload, else the MD5 of the parts' MD5s and the count of parts.
    fn s3_etag(&self) -> String {
        if self.parts.len() <= 1 {
            return self.hex();
        }
        let mut all = Md5::new();
        for p in &self.parts {
            all.update(p);
        }
        format!("{}-{}", hex(&all.finalize()), self.parts.len())
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
    pub async fn digest(&self, loc: &Location) -> Result<Digest, StorageError> {
        let mut reader = self.open(loc).await?;
        let mut hasher = Hasher::default();
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
            && let Some(tag) = &object.etag
            && tag.trim_matches('"') == digest.s3_etag()
        {
            return Ok(Some(Verified::EntityTag));
        }
        if let Some(md5) = object.md5.as_deref().and_then(md5_hex_of_base64) {
            return Ok((md5 == digest.hex()).then_some(Verified::ContentMd5));
        }
        // No checksum the store keeps (a local or SFTP file, an Azure block list, an S3 object
        // encrypted with KMS): the bytes themselves.
        let back = self.digest(&object.location).await?;
        Ok((back.md5 == digest.md5).then_some(Verified::ReadBack))
    }

    /// Whether the MD5 the store keeps of `object` (GCS, Azure) differs from `digest`: bytes
    /// read from it that are not what it holds. (An S3 entity tag is not always an MD5: it is
    /// not used here.)
    pub fn known_mismatch(&self, object: &Object, digest: &Digest) -> bool {
        object
            .md5
            .as_deref()
            .and_then(md5_hex_of_base64)
            .is_some_and(|md5| md5 != digest.hex())
    }

    /// Copies `from` to `to` through this process, hashing every byte sent; the copy appears
    /// at `to` only once complete. Returns the digest of what was sent (check the destination
    /// against it with [`Stores::verify`]).
    ///
    /// # Errors
    /// Either store's; nothing is left at `to`.
    pub async fn copy_hashed(
        &self,
        from: &Location,
        to: &Location,
    ) -> Result<Digest, StorageError> {
        let mut reader = self.open(from).await?;
        let mut writer = self.create(to).await?;
        let mut hasher = Hasher::default();
        loop {
            let mut buf = vec![0_u8; 1024 * 1024];
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
            buf.truncate(n);
            hasher.update(&buf);
            if let Err(e) = writer.write(buf).await {
                writer.abort().await;
                return Err(e);
            }
        }
        writer.commit().await?;
        Ok(hasher.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_whole_are_hashed_across_writes() {
        let bytes: Vec<u8> = (0..(2 * PART_SIZE + 5)).map(|i| (i % 253) as u8).collect();
        let mut h = Hasher::default();
        for chunk in bytes.chunks(1_000_003) {
            h.update(chunk);
        }
        let d = h.finish();
        assert_eq!(d.size, bytes.len() as u64);
        assert_eq!(d.md5, <[u8; 16]>::from(Md5::digest(&bytes)));
        assert_eq!(d.parts.len(), 3);
        assert_eq!(
            d.parts[2],
            <[u8; 16]>::from(Md5::digest(&bytes[2 * PART_SIZE..]))
        );
        assert!(d.s3_etag().ends_with("-3"));
        assert_eq!(
            md5_hex_of_base64("XUFAKrxLKna5cZ2REBfFkg==").as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
    }
}
