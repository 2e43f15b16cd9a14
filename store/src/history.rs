//! A DAG's run history as its pages show it: recent runs and the grid of runs by tasks.

use chrono::{DateTime, Utc};

use crate::db::with_read_pool;
use crate::{Result, Store};

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
    /// Database failures.
    pub async fn grid_cells(&self, dag_id: &str, limit: i64) -> Result<Vec<GridCell>> {
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
}
