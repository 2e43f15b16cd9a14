//! `kind: transfer`: files copied from one location to another (a local folder, a bucket on
//! S3, GCS or Azure, an SFTP server), each one proven equal to its source before the step
//! says so.
//!
//! - **Verified**: every byte sent is hashed (MD5, whole and by upload part); the copy is then
//!   checked against what its store says of it (S3's entity tag, GCS's and Azure's content
//!   MD5) or, where the store keeps nothing usable, read back. A copy that differs is deleted
//!   and the try fails (a retry copies it again). Where the source's store keeps an MD5, what
//!   was read is checked against it too.
//! - **Atomic per file**: a copy appears at its destination only once complete (see
//!   `weir_storage::Stores::create`).
//! - **Parallel**: `parallel` files at once; a large file goes up in parts, several at once.
//! - **Resumable**: a destination that already holds the same bytes (same size, same MD5) is
//!   skipped, so a retry after a failure copies only what is missing or wrong.
//!
//! Outputs: `files` (the destinations, in source order), `copied`, `skipped`, `bytes` (bytes
//! copied by this try).

use futures_util::StreamExt as _;
use weir_model::spec::TransferStep;
use weir_storage::{Location, Object, Stores};

use crate::conn::Connections;
use crate::log::LogSink;
use crate::outcome::TaskOutcome;

/// Runs a rendered `transfer` step.
pub async fn run(step: &TransferStep, conns: &Connections, log: &LogSink) -> TaskOutcome {
    match transfer(step, conns.stores(), log).await {
        Ok(outputs) => TaskOutcome::Succeeded { outputs },
        Err(e) => TaskOutcome::Failed {
            error: e.message,
            retryable: e.retryable,
        },
    }
}

/// What happened to one file.
enum Done {
    Copied(u64),
    Skipped,
}

async fn transfer(
    step: &TransferStep,
    stores: &Stores,
    log: &LogSink,
) -> Result<serde_json::Map<String, serde_json::Value>, weir_storage::StorageError> {
    let from = Location::parse(&step.from)?;
    let to = Location::parse(&step.to)?;
    let sources = stores.list(&from).await?;
    if sources.is_empty() {
        return Err(weir_storage::StorageError {
            message: format!("no file matches `{}`", step.from),
            retryable: true,
        });
    }
    let into_folder = step.to.ends_with('/');
    // The part of each source's path kept below `to`: what follows the glob's folder.
    let base = match from.glob_split() {
        Some((folder, _)) => folder,
        None if into_folder => from
            .path
            .rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_owned()),
        None => {
            // One file to one name.
            String::new()
        }
    };
    if from.glob_split().is_some() && !into_folder {
        return Err(weir_storage::StorageError::invalid(format!(
            "`from` is a glob, so `to` must be a folder ending in `/` (found `{}`)",
            step.to
        )));
    }
    let destination = |source: &Object| -> Location {
        if !into_folder {
            return to.clone();
        }
        let rel = source
            .location
            .path
            .strip_prefix(&base)
            .unwrap_or(&source.location.path)
            .trim_start_matches('/');
        to.join(rel)
    };
    log.note(format!(
        "transferring {} file(s) from `{}` to `{}`, {} at a time",
        sources.len(),
        step.from,
        step.to,
        step.parallel
    ));
    let pairs: Vec<(Object, Location)> = sources
        .into_iter()
        .map(|s| {
            let dest = destination(&s);
            (s, dest)
        })
        .collect();
    let parallel = usize::try_from(step.parallel).unwrap_or(4).clamp(1, 64);
    let delete = step.delete_source;
    let mut results = futures_util::stream::iter(pairs)
        .map(|(source, dest)| one(stores, source, dest, delete, log))
        .buffered(parallel);
    let (mut files, mut copied, mut skipped, mut bytes) = (Vec::new(), 0_u64, 0_u64, 0_u64);
    while let Some(result) = results.next().await {
        let (dest, done) = result?;
        match done {
            Done::Copied(n) => {
                copied += 1;
                bytes += n;
            }
            Done::Skipped => skipped += 1,
        }
        files.push(serde_json::Value::String(dest.to_string()));
    }
    log.note(format!(
        "copied {copied} file(s) ({bytes} bytes), skipped {skipped} already there and verified"
    ));
    let mut out = serde_json::Map::new();
    out.insert("files".into(), files.into());
    out.insert("copied".into(), copied.into());
    out.insert("skipped".into(), skipped.into());
    out.insert("bytes".into(), bytes.into());
    Ok(out)
}

/// Copies one file unless its destination already holds the same bytes, verifies the copy,
/// and deletes the source when asked.
async fn one(
    stores: &Stores,
    source: Object,
    dest: Location,
    delete_source: bool,
    log: &LogSink,
) -> Result<(Location, Done), weir_storage::StorageError> {
    let done = copy_verified(stores, &source, &dest, log).await?;
    if delete_source {
        stores.delete(&source.location).await?;
    }
    Ok((dest, done))
}

async fn copy_verified(
    stores: &Stores,
    source: &Object,
    dest: &Location,
    log: &LogSink,
) -> Result<Done, weir_storage::StorageError> {
    let src = &source.location;
    if let Some(existing) = stores.stat(dest).await?
        && existing.size == source.size
    {
        let digest = stores.digest(src, weir_storage::Hashes::BOTH).await?;
        if let Some(how) = stores.verify(&existing, &digest).await? {
            log.note(format!("{dest}: already there, verified by {}", how.how()));
            return Ok(Done::Skipped);
        }
        log.note(format!(
            "{dest}: there but different from {src}: copying it again"
        ));
    }
    let digest = stores
        .copy_hashed(src, dest, weir_storage::Hashes::for_copy(source, dest))
        .await?;
    if digest.size != source.size {
        stores.delete(dest).await?;
        return Err(weir_storage::StorageError {
            message: format!(
                "{src}: read {} bytes where the store lists {} (did it change during the copy?); the copy was deleted",
                digest.size, source.size
            ),
            retryable: true,
        });
    }
    if stores.known_mismatch(source, &digest) {
        stores.delete(dest).await?;
        return Err(weir_storage::StorageError {
            message: format!(
                "{src}: the bytes read do not match the MD5 its store keeps; the copy was deleted"
            ),
            retryable: true,
        });
    }
    let Some(copy) = stores.stat(dest).await? else {
        return Err(weir_storage::StorageError {
            message: format!("{dest}: not there after its upload completed"),
            retryable: true,
        });
    };
    match stores.verify(&copy, &digest).await? {
        Some(how) => {
            log.note(format!(
                "{src} → {dest}: {} bytes, MD5 {}, verified by {}",
                digest.size,
                digest.hex(),
                how.how()
            ));
            Ok(Done::Copied(digest.size))
        }
        None => {
            stores.delete(dest).await?;
            Err(weir_storage::StorageError {
                message: format!(
                    "{dest}: the copy differs from {src} ({} bytes, MD5 {}); it was deleted, a retry copies it again",
                    digest.size,
                    digest.hex()
                ),
                retryable: true,
            })
        }
    }
}
