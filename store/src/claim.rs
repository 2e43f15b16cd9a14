//! Claims of objects on stores: which task instance loads an object that arrived in a bucket
//! (`source.claim` of a load). An object store has no atomic rename to claim with; this table
//! is where two runs racing for one object learn which of them has it.

use chrono::Utc;

use crate::db::with_pool;
use crate::{Result, Store};

/// The task instance that claimed an object.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ObjectOwner {
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// Map index (-1 unless mapped).
    pub map_index: i32,
}

impl Store {
    /// Claims version `version` of the object at `location` for `owner`, unless another task
    /// instance has it. Returns the owner: `owner` itself when the claim is (or already was)
    /// its own.
    ///
    /// # Errors
    /// The database's.
    pub async fn claim_object(
        &self,
        location: &str,
        version: &str,
        owner: &ObjectOwner,
    ) -> Result<ObjectOwner> {
        let now = Utc::now();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_object_claims (location, version, run_id, task_id, map_index, claimed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (location, version) DO NOTHING",
            )
            .bind(location)
            .bind(version)
            .bind(&owner.run_id)
            .bind(&owner.task_id)
            .bind(owner.map_index)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(sqlx::query_as::<_, ObjectOwner>(
                "SELECT run_id, task_id, map_index FROM weir_object_claims WHERE location = $1 AND version = $2",
            )
            .bind(location)
            .bind(version)
            .fetch_one(pool)
            .await?)
        })
    }
}
