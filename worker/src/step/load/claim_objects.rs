//! Claiming a file source's objects on a store (`source.claim` with an `s3://`, `gs://`,
//! `az://` or `sftp://` glob), so that each object that arrives is loaded by one task instance
//! only, even when runs race and tries are retried:
//!
//! 1. a retry first takes what its instance already claimed (the objects in its claim folder,
//!    `move_to/<run id>/<task id>[.<map index>]/`);
//! 2. else each matching object is claimed in weir's database (one row per object version:
//!    of two instances racing for it, one gets the row), then moved into the claim folder (a
//!    rename where the store has one, else a copy and a delete);
//! 3. after the commit, the claimed objects move on to `archive_to` when given.
//!
//! A try that stops between its database claim and the move leaves the object where it was;
//! its retry finds the claim its own and moves it then.

use weir_model::spec::{Claim, LoadSource};
use weir_storage::{Location, Stores};

use super::{LoadContext, LoadError, SourceFile};

/// The folder this instance's claimed objects live in under `root`.
fn folder(root: &Location, ctx: &LoadContext) -> Location {
    let safe = |s: &str| s.replace(['/', '\\'], "_");
    let task = match ctx.attempt.as_ref().map(|a| a.map_index) {
        Some(i) if i >= 0 => format!("{}.{i}", safe(&ctx.task_id)),
        _ => safe(&ctx.task_id),
    };
    root.join(&safe(&ctx.run_id)).join(&task)
}

/// The objects directly in a folder.
async fn objects_in(
    stores: &Stores,
    dir: &Location,
) -> Result<Vec<weir_storage::Object>, LoadError> {
    Ok(stores.list(&dir.join("*")).await?)
}

/// The files to load: those this instance claimed on an earlier try, else the objects matching
/// `pattern`, claimed and moved into its claim folder now.
pub(super) async fn claim(
    pattern: &str,
    claim: &Claim,
    ctx: &LoadContext,
    stores: &Stores,
    source: &LoadSource,
) -> Result<Vec<SourceFile>, LoadError> {
    let at = Location::parse(pattern)?;
    let root = Location::parse(&claim.move_to)?;
    if root.is_local() {
        return Err(LoadError::fatal(format!(
            "`claim.move_to` `{}` is a local folder but the files are on a store; claim into a folder of the store (e.g. {}claimed)",
            claim.move_to,
            at.scheme.prefix().to_owned() + &at.root + "/"
        )));
    }
    let dir = folder(&root, ctx);
    let already = objects_in(stores, &dir).await?;
    if !already.is_empty() {
        return Ok(files(already, source));
    }
    let matching = stores.list(&at).await?;
    if matching.is_empty() {
        return Err(LoadError {
            retryable: true,
            message: format!("no file matches `{pattern}`"),
        });
    }
    let archive = claim
        .archive_to
        .as_deref()
        .map(Location::parse)
        .transpose()?;
    let inside = |o: &Location, folder: &Location| {
        o.scheme == folder.scheme
            && o.root == folder.root
            && o.path
                .starts_with(&format!("{}/", folder.path.trim_end_matches('/')))
    };
    let owner = weir_store::ObjectOwner {
        run_id: ctx.run_id.clone(),
        task_id: ctx.task_id.clone(),
        map_index: ctx.attempt.as_ref().map_or(-1, |a| a.map_index),
    };
    let mut names = std::collections::BTreeSet::new();
    for object in matching {
        // A glob over the claim or archive folders does not take back what is in them.
        if inside(&object.location, &root)
            || archive
                .as_ref()
                .is_some_and(|a| inside(&object.location, a))
        {
            continue;
        }
        let name = object.location.file_name().to_owned();
        if !names.insert(name.clone()) {
            return Err(LoadError::fatal(format!(
                "{} and another matching object have the same name `{name}`; claimed objects keep their names",
                object.location
            )));
        }
        let mine = match &ctx.claims {
            Some(store) => {
                let by = store
                    .claim_object(&object.location.to_string(), &object.version(), &owner)
                    .await
                    .map_err(|e| LoadError {
                        message: format!("claiming {}: {e}", object.location),
                        retryable: true,
                    })?;
                by == owner
            }
            // `weir tasks test`: one process, nothing to race with.
            None => true,
        };
        if mine {
            stores.rename(&object.location, &dir.join(&name)).await?;
        }
    }
    let claimed = objects_in(stores, &dir).await?;
    if claimed.is_empty() {
        return Err(LoadError {
            retryable: true,
            message: format!("every object matching `{pattern}` was claimed by another run"),
        });
    }
    Ok(files(claimed, source))
}

fn files(objects: Vec<weir_storage::Object>, source: &LoadSource) -> Vec<SourceFile> {
    objects
        .into_iter()
        .map(|o| SourceFile::new(o.location, None, source))
        .collect()
}

/// After the commit: moves this instance's claimed objects to `archive_to` (same layout), and
/// returns where the loaded objects now are. Without `archive_to` they stay claimed.
pub(super) async fn archive(
    claim: &Claim,
    ctx: &LoadContext,
    stores: &Stores,
) -> Result<Vec<String>, LoadError> {
    let from = folder(&Location::parse(&claim.move_to)?, ctx);
    let Some(root) = &claim.archive_to else {
        return Ok(names(objects_in(stores, &from).await?));
    };
    let to = folder(&Location::parse(root)?, ctx);
    let objects = objects_in(stores, &from).await?;
    if objects.is_empty() {
        return Ok(names(objects_in(stores, &to).await?));
    }
    let mut archived = Vec::with_capacity(objects.len());
    for object in objects {
        let dest = to.join(object.location.file_name());
        stores
            .rename(&object.location, &dest)
            .await
            .map_err(|e| LoadError {
                retryable: true,
                message: format!(
                    "the load committed, but archiving its files to {to} failed: {}",
                    e.message
                ),
            })?;
        archived.push(dest.to_string());
    }
    Ok(archived)
}

fn names(objects: Vec<weir_storage::Object>) -> Vec<String> {
    objects
        .into_iter()
        .map(|o| o.location.to_string())
        .collect()
}
