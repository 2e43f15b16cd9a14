//! DAG versions, the DAG table (paused flag, latest good version) and import errors.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use weir_model::DagSpec;
use weir_model::asset::ScheduleSpec;

use crate::db::{BeginWrite, with_pool};
use crate::{Result, Store, StoreError};

/// A DAG as the store knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DagRow {
    /// DAG id.
    pub dag_id: String,
    /// The file it was read from.
    pub file: String,
    /// Whether scheduled runs are held back.
    pub paused: bool,
    /// The latest good version.
    pub version_id: i64,
    /// Schedule as written.
    pub schedule: Option<String>,
    /// IANA zone.
    pub timezone: String,
    /// When the version last changed.
    pub updated_at: DateTime<Utc>,
    /// Since when no file in the dags folder defines it (no new runs; history kept).
    pub removed_at: Option<DateTime<Utc>>,
}

/// A stored DAG version.
#[derive(Debug, Clone)]
pub struct DagVersion {
    /// Version id (runs pin it).
    pub id: i64,
    /// DAG id.
    pub dag_id: String,
    /// Content hash of the canonical JSON.
    pub hash: String,
    /// The spec.
    pub spec: DagSpec,
    /// Files the DAG reads (path as written in the DAG → text): `sql` files, migrations.
    pub files: BTreeMap<String, String>,
}

/// A file that did not import.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportErrorRow {
    /// File path.
    pub file: String,
    /// DAG id, when it could be read.
    pub dag_id: Option<String>,
    /// Every problem, one per line, `FILE:LINE:COL: message`.
    pub message: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    id: i64,
    dag_id: String,
    hash: String,
    spec: String,
    files: String,
}

impl TryFrom<VersionRow> for DagVersion {
    type Error = StoreError;
    fn try_from(r: VersionRow) -> Result<DagVersion> {
        Ok(DagVersion {
            id: r.id,
            dag_id: r.dag_id,
            hash: r.hash,
            spec: serde_json::from_str(&r.spec)?,
            files: serde_json::from_str(&r.files)?,
        })
    }
}

/// The hash a version is stored under: sha256 of its spec's JSON, then of its files' JSON
/// when it reads any (formatting-only edits of the YAML file therefore do not create versions;
/// an edited SQL file does).
pub(crate) fn spec_hash(json: &str, files_json: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(json.as_bytes());
    if let Some(files) = files_json {
        hasher.update(b"\0");
        hasher.update(files.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Records a valid DAG read from `file` (whose text is `source`): stores a new version when the spec changed,
    /// points the DAG at it, and clears the file's import error. A DAG seen for the first time
    /// takes `paused` from its spec; later its paused flag is the user's (pause/unpause).
    /// Returns the version id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn sync_dag(
        &self,
        file: &str,
        spec: &DagSpec,
        source: &str,
        files: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let json = serde_json::to_string(spec)?;
        let files_json = serde_json::to_string(files)?;
        // A DAG reading no files keeps the hash it had before versions held files.
        let hash = spec_hash(&json, (!files.is_empty()).then_some(files_json.as_str()));
        let schedule = spec.schedule.as_ref().map(ScheduleSpec::summary);
        let subscribed: Vec<&str> = spec
            .schedule
            .as_ref()
            .and_then(ScheduleSpec::assets)
            .map(|a| a.keys().iter().map(String::as_str).collect())
            .unwrap_or_default();
        let timezone = spec.timezone.map_or("UTC", |t| t.0.name()).to_owned();
        let version_id: i64 = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO weir_dag_versions (dag_id, hash, spec, created_at, files) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (dag_id, hash) DO NOTHING",
            )
            .bind(&spec.id)
            .bind(&hash)
            .bind(&json)
            .bind(now)
            .bind(&files_json)
            .execute(&mut *tx)
            .await?;
            let version_id: i64 = sqlx::query_scalar(
                "SELECT id FROM weir_dag_versions WHERE dag_id = $1 AND hash = $2",
            )
            .bind(&spec.id)
            .bind(&hash)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO weir_dags (dag_id, file, paused, version_id, schedule, timezone, updated_at, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (dag_id) DO UPDATE SET file = $2, version_id = $4, schedule = $5, timezone = $6, source = $8,
                     removed_at = NULL,
                     updated_at = CASE WHEN weir_dags.version_id = $4 THEN weir_dags.updated_at ELSE $7 END",
            )
            .bind(&spec.id)
            .bind(file)
            .bind(spec.paused)
            .bind(version_id)
            .bind(&schedule)
            .bind(&timezone)
            .bind(now)
            .bind(source)
            .execute(&mut *tx)
            .await?;
            // The limit claims count against (issue #19: enforced when workers claim).
            sqlx::query(crate::task::SET_LIMIT_SQL)
                .bind("dag")
                .bind(&spec.id)
                .bind(i64::from(spec.max_active_tasks))
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM weir_import_errors WHERE file = $1")
                .bind(file)
                .execute(&mut *tx)
                .await?;
            // The assets it waits for: updates of assets it no longer names are dropped from
            // its queue; an asset it starts naming counts from now.
            sqlx::query("DELETE FROM weir_asset_subscriptions WHERE dag_id = $1")
                .bind(&spec.id)
                .execute(&mut *tx)
                .await?;
            for key in &subscribed {
                sqlx::query(
                    "INSERT INTO weir_asset_subscriptions (dag_id, asset_key) VALUES ($1, $2)",
                )
                .bind(&spec.id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "DELETE FROM weir_asset_queue WHERE dag_id = $1
                 AND asset_key NOT IN (SELECT asset_key FROM weir_asset_subscriptions WHERE dag_id = $1)",
            )
            .bind(&spec.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            version_id
        });
        Ok(version_id)
    }

    /// Records that `file` failed to import; the DAG it held (if known) keeps its last good
    /// version.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_import_error(
        &self,
        file: &str,
        dag_id: Option<&str>,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_import_errors (file, dag_id, message, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (file) DO UPDATE SET dag_id = $2, message = $3, at = $4",
            )
            .bind(file)
            .bind(dag_id)
            .bind(message)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Forgets the import error of a file that is gone.
    ///
    /// # Errors
    /// Database failures.
    pub async fn clear_import_error(&self, file: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM weir_import_errors WHERE file = $1")
                .bind(file)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Marks removed every DAG that no file of the dags folder defines any more, and active
    /// again every removed DAG that one does. `claimed` holds the DAG ids files claim now,
    /// `unreadable` the files whose id cannot be read: the DAG such a file held is kept (it
    /// may still define it once fixed). Called after every scan, so a wrong mark made by
    /// another process is corrected on the next. Returns the DAGs that changed, and whether
    /// each is now removed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn mark_removed_dags(
        &self,
        claimed: &std::collections::BTreeSet<&str>,
        unreadable: &std::collections::BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, bool)>> {
        let dags = self.list_dags().await?;
        let changes: Vec<(String, bool)> = dags
            .into_iter()
            .filter_map(|d| {
                let gone = !claimed.contains(d.dag_id.as_str()) && !unreadable.contains(&d.file);
                (gone != d.removed_at.is_some()).then_some((d.dag_id, gone))
            })
            .collect();
        for (dag_id, gone) in &changes {
            with_pool!(self, |pool| {
                let mut tx = pool.begin_write().await?;
                sqlx::query("UPDATE weir_dags SET removed_at = $2 WHERE dag_id = $1")
                    .bind(dag_id)
                    .bind(gone.then_some(now))
                    .execute(&mut *tx)
                    .await?;
                // A removed DAG waits for no asset (its file, back, subscribes it again).
                if *gone {
                    for table in ["weir_asset_subscriptions", "weir_asset_queue"] {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DELETE FROM {table} WHERE dag_id = $1"
                        )))
                        .bind(dag_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
            });
        }
        Ok(changes)
    }

    /// Every DAG, by id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_dags(&self) -> Result<Vec<DagRow>> {
        const SQL: &str = "SELECT dag_id, file, paused, version_id, schedule, timezone, updated_at, removed_at FROM weir_dags ORDER BY dag_id";
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, DagRow>(SQL)
            .fetch_all(pool)
            .await?))
    }

    /// One DAG.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such DAG.
    pub async fn dag(&self, dag_id: &str) -> Result<DagRow> {
        const SQL: &str = "SELECT dag_id, file, paused, version_id, schedule, timezone, updated_at, removed_at FROM weir_dags WHERE dag_id = $1";
        let row = with_pool!(self, |pool| sqlx::query_as::<_, DagRow>(SQL)
            .bind(dag_id)
            .fetch_optional(pool)
            .await?);
        row.ok_or_else(|| StoreError::NotFound(format!("DAG `{dag_id}`")))
    }

    /// Import errors, by file.
    ///
    /// # Errors
    /// Database failures.
    pub async fn import_errors(&self) -> Result<Vec<ImportErrorRow>> {
        const SQL: &str = "SELECT file, dag_id, message, at FROM weir_import_errors ORDER BY file";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, ImportErrorRow>(SQL)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Pauses or unpauses a DAG. Returns whether it changed.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such DAG.
    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<bool> {
        self.dag(dag_id).await?;
        let changed = with_pool!(self, |pool| {
            sqlx::query("UPDATE weir_dags SET paused = $2 WHERE dag_id = $1 AND paused <> $2")
                .bind(dag_id)
                .bind(paused)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed > 0 {
            self.wake_scheduler().await;
        }
        Ok(changed > 0)
    }

    /// A stored version.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or a spec that does not read back.
    pub async fn dag_version(&self, version_id: i64) -> Result<DagVersion> {
        const SQL: &str =
            "SELECT id, dag_id, hash, spec, files FROM weir_dag_versions WHERE id = $1";
        let row = with_pool!(self, |pool| sqlx::query_as::<_, VersionRow>(SQL)
            .bind(version_id)
            .fetch_optional(pool)
            .await?);
        row.ok_or_else(|| StoreError::NotFound(format!("DAG version {version_id}")))?
            .try_into()
    }
}

impl Store {
    /// The cursor an incremental load of `task_id` reached (the largest value it loaded).
    ///
    /// # Errors
    /// Database failures.
    pub async fn incremental_cursor(&self, dag_id: &str, task_id: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar::<_, String>(
            "SELECT cursor FROM weir_incremental WHERE dag_id = $1 AND task_id = $2"
        )
        .bind(dag_id)
        .bind(task_id)
        .fetch_optional(pool)
        .await?))
    }

    /// Records where an incremental load got to.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_incremental_cursor(
        &self,
        dag_id: &str,
        task_id: &str,
        cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO weir_incremental (dag_id, task_id, cursor, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (dag_id, task_id) DO UPDATE SET cursor = $3, at = $4",
            )
            .bind(dag_id)
            .bind(task_id)
            .bind(cursor)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Forgets incremental cursors of a DAG (one task, or all): the next loads read everything.
    /// Returns how many were forgotten.
    ///
    /// # Errors
    /// Database failures.
    pub async fn reset_incremental(&self, dag_id: &str, task_id: Option<&str>) -> Result<u64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM weir_incremental WHERE dag_id = $1 AND ($2 IS NULL OR task_id = $2)",
            )
            .bind(dag_id)
            .bind(task_id)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }
}

impl Store {
    /// The DAG file's text as last read by a scheduler (None before migration 0006's first
    /// sync).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown DAG; database failures.
    pub async fn dag_source(&self, dag_id: &str) -> Result<Option<String>> {
        let row: Option<Option<String>> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT source FROM weir_dags WHERE dag_id = $1")
                .bind(dag_id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("DAG `{dag_id}`")))
    }
}
