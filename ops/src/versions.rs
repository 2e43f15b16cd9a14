//! Stored DAG versions, parsed once per process. A version never changes once stored, so a
//! parsed copy is always right; the cache only saves validating the same spec again (the
//! scheduler on every pass, the worker on every try, the web on every DAG list).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use weir_model::Dag;
use weir_store::Store;

use crate::error::{OpsError, Result};

/// Versions kept at most; past it the cache starts over (a long-lived process sees each DAG
/// edit as a new version).
const KEPT: usize = 4096;

/// A stored DAG version, parsed.
#[derive(Debug)]
pub struct Version {
    /// The DAG it describes.
    pub dag: Dag,
    /// The files it carries (`sql` steps' `file`s), by path.
    pub files: BTreeMap<String, String>,
}

/// A stored version's spec validated into its DAG again.
///
/// # Errors
/// [`OpsError::InvalidVersion`] with every problem, when it no longer validates (a newer weir
/// may check more than the one that stored it).
pub(crate) fn parse(version_id: i64, spec: weir_model::DagSpec) -> Result<Dag> {
    Dag::from_spec(spec).map_err(|problems| {
        OpsError::InvalidVersion(
            version_id,
            problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Parsed DAG versions by id, read from the store on first use.
#[derive(Clone, Default)]
pub struct Versions {
    parsed: Arc<Mutex<HashMap<i64, Arc<Version>>>>,
}

impl Versions {
    /// Version `version_id`, parsed.
    ///
    /// # Errors
    /// An unknown version, one that no longer validates ([`OpsError::InvalidVersion`]), or
    /// the database's.
    pub async fn get(&self, store: &Store, version_id: i64) -> Result<Arc<Version>> {
        if let Some(v) = self.lock().get(&version_id) {
            return Ok(Arc::clone(v));
        }
        let stored = store.dag_version(version_id).await?;
        let version = Arc::new(Version {
            dag: parse(version_id, stored.spec)?,
            files: stored.files,
        });
        let mut parsed = self.lock();
        if parsed.len() >= KEPT {
            parsed.clear();
        }
        parsed.insert(version_id, Arc::clone(&version));
        Ok(version)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Version>>> {
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
