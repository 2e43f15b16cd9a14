//! A DAG's run history as its pages show it: recent runs and the grid of runs by tasks.

use chrono::{DateTime, Utc};

use crate::db::with_read_pool;
use crate::{Backend, Result, Store, StoreError};

/// A run in a short list (the DAG list's dots, the grid's columns).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunBrief {
    /// Run id.
    pub run_id: String,
    /// Run state.
    pub state: String,
    /// Logical date.
    pub logical_date: DateTime<Utc>,
    /// Run type.
    pub run_type: String,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// One task instance as the grid shows it.
#[derive(Debug, Clone)]
pub struct GridCell {
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// Map index (-1 when not mapped).
    pub map_index: i32,
    /// State.
    pub state: String,
    /// Try number.
    pub try_number: i32,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
}

impl Store {
    /// A DAG's newest runs, `offset` skipped, newest logical date first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn recent_runs(
        &self,
        dag_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RunBrief>> {
        Ok(with_read_pool!(self, |pool| {
            sqlx::query_as::<_, RunBrief>(
                "SELECT run_id, state, logical_date, run_type, started_at, ended_at FROM weir_runs WHERE dag_id = $1
                 ORDER BY logical_date DESC LIMIT $2 OFFSET $3",
            )
            .bind(dag_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The task instances of a DAG's newest `limit` runs, for the grid.
    ///
    /// # Errors
    /// Database failures; on SQLite, a stored time that is not RFC 3339
    /// ([`StoreError::Corrupt`]).
    pub async fn grid_cells(&self, dag_id: &str, limit: i64) -> Result<Vec<GridCell>> {
        match self.backend() {
            Backend::Sqlite => self.grid_cells_by_run(dag_id, limit).await,
            Backend::Postgres => self.grid_cells_by_instance(dag_id, limit).await,
        }
    }

    /// [`Store::grid_cells`] as a row per instance (Postgres: rows come over its binary protocol
    /// and cost little; building JSON instead took the server two to three times as long).
    async fn grid_cells_by_instance(&self, dag_id: &str, limit: i64) -> Result<Vec<GridCell>> {
        // Columns by position (a grid reads thousands of rows; by name, each column of each
        // row was a lookup).
        type Raw = (
            String,
            String,
            i32,
            String,
            i32,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Raw> = with_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT t.run_id, t.task_id, t.map_index, t.state, t.try_number, t.started_at, t.ended_at
                 FROM (SELECT run_id FROM weir_runs WHERE dag_id = $1 ORDER BY logical_date DESC LIMIT $2) r
                 JOIN weir_task_instances t ON t.run_id = r.run_id",
            )
            .bind(dag_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(run_id, task_id, map_index, state, try_number, started_at, ended_at)| GridCell {
                    run_id,
                    task_id,
                    map_index,
                    state,
                    try_number,
                    started_at,
                    ended_at,
                },
            )
            .collect())
    }

    /// [`Store::grid_cells`] as a row per run, its instances a JSON array of `[task, map index,
    /// state, try, started, ended]` (SQLite: sqlx copies every value of every row and hands
    /// each row from the connection's thread to the runtime's, about 60 % of the
    /// 100 x 30 grid page's time; a hundred rows of JSON cost a fraction of 3,000 rows).
    async fn grid_cells_by_run(&self, dag_id: &str, limit: i64) -> Result<Vec<GridCell>> {
        type Instance = (String, i32, String, i32, Option<String>, Option<String>);
        let runs: Vec<(String, String)> = with_read_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT r.run_id, json_group_array(json_array(t.task_id, t.map_index, t.state,
                        t.try_number, t.started_at, t.ended_at))
                 FROM (SELECT run_id FROM weir_runs WHERE dag_id = $1 ORDER BY logical_date DESC LIMIT $2) r
                 JOIN weir_task_instances t ON t.run_id = r.run_id
                 GROUP BY r.run_id",
            )
            .bind(dag_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let time = |run_id: &str, text: Option<String>| -> Result<Option<DateTime<Utc>>> {
            text.map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|e| {
                        StoreError::Corrupt(format!("run {run_id}: a task's time `{t}`: {e}"))
                    })
            })
            .transpose()
        };
        let mut cells = Vec::new();
        for (run_id, instances) in runs {
            let instances: Vec<Instance> = serde_json::from_str(&instances).map_err(|e| {
                StoreError::Corrupt(format!(
                    "run {run_id}: its task instances for the grid: {e}"
                ))
            })?;
            for (task_id, map_index, state, try_number, started, ended) in instances {
                cells.push(GridCell {
                    started_at: time(&run_id, started)?,
                    ended_at: time(&run_id, ended)?,
                    run_id: run_id.clone(),
                    task_id,
                    map_index,
                    state,
                    try_number,
                });
            }
        }
        Ok(cells)
    }
}
