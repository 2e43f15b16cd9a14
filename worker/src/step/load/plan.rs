//! The table side of a load's plan: the target made ready (created, staged for `replace`),
//! the whole load run in one transaction, `upsert` merged and counted, the swap at the end.
//! (The rows side, batches and rejects, is in [`super::batch`].)

use super::*;

/// The staging table's column numbering rows in load order (`upsert`).
pub(super) const SEQ: &str = "__weir_seq";

pub(super) struct Plan {
    pub(super) dialect: Dialect,
    /// When the load began (for the outputs the commit ledger keeps).
    pub(super) started: Instant,
    /// The loaded columns.
    pub(super) columns: Columns,
    /// `incremental`: the cursor column's position, and the stored value rows must exceed.
    pub(super) cursor: Option<(usize, Option<Value>)>,
    /// The table rows go into during the load (the target, or the staging table of `replace`).
    pub(super) into: String,
    pub(super) target: String,
    /// `replace` and `upsert`: the staging table and its column definitions.
    pub(super) staging: Option<(String, String)>,
    /// Quoted key columns (`upsert`).
    pub(super) keys: Vec<String>,
    /// Merge the staging table into the target rather than swap it in.
    pub(super) upsert: bool,
    pub(super) rejects: String,
    /// The rejects table's name as written (`schema.table__rejects`).
    pub(super) rejects_name: String,
    pub(super) column_list: String,
    pub(super) create_target: Option<String>,
    pub(super) create_rejects: String,
    pub(super) on_error: OnError,
    pub(super) max: Option<RejectLimit>,
    pub(super) batch: usize,
}

impl Plan {
    pub(super) fn new(
        step: &LoadStep,
        dialect: Dialect,
        columns: Columns,
        stored_cursor: Option<&str>,
        started: Instant,
    ) -> Result<Plan, LoadError> {
        let target = dialect
            .ident(&step.target.table)
            .map_err(LoadError::fatal)?;
        // An upsert stages in a temporary table of its connection (no WAL, nothing left
        // behind); `replace` stages the table that becomes the target.
        let bare_table = step
            .target
            .table
            .rsplit('.')
            .next()
            .unwrap_or(&step.target.table);
        let staging_name = match step.mode {
            LoadMode::Replace => Some(format!("{}__weir_new", step.target.table)),
            LoadMode::Upsert => Some(format!("{bare_table}__weir_stage")),
            _ => None,
        };
        let staging = staging_name
            .map(|n| dialect.ident(&n))
            .transpose()
            .map_err(LoadError::fatal)?;
        if step.mode == LoadMode::Upsert {
            if step.key.is_empty() {
                return Err(LoadError::fatal("mode `upsert` needs `key`"));
            }
            if let Some(missing) = step.key.iter().find(|k| !columns.names.contains(k)) {
                return Err(LoadError::fatal(format!(
                    "key column `{missing}` is not a loaded column"
                )));
            }
        }
        let rejects_name = format!("{}__rejects", step.target.table);
        let rejects = dialect.ident(&rejects_name).map_err(LoadError::fatal)?;
        let quoted: Vec<String> = columns
            .names
            .iter()
            .map(|n| dialect.ident(n))
            .collect::<Result<_, _>>()
            .map_err(LoadError::fatal)?;
        let definition = quoted
            .iter()
            .zip(&columns.names)
            .zip(&columns.specs)
            .map(|((q, name), spec)| {
                let ty = match (dialect, spec.ty) {
                    // MySQL indexes text only with a length: key columns are VARCHAR.
                    (Dialect::MySql, ColumnType::Text) if step.key.contains(name) => "VARCHAR(255)",
                    (d, t) => sql_type(d, t),
                };
                format!("{q} {ty}{}", if spec.not_null { " NOT NULL" } else { "" })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let keys: Vec<String> = step
            .key
            .iter()
            .map(|k| dialect.ident(k))
            .collect::<Result<_, _>>()
            .map_err(LoadError::fatal)?;
        // The staging table of an upsert refuses a key twice: the later row is rejected.
        // Its rows are numbered in load order (`__weir_seq`) and merged a batch at a time, so
        // that a row the target refuses is found and rejected like any other.
        let staging_definition = if step.mode == LoadMode::Upsert {
            format!(
                "{definition}, {SEQ} BIGINT NOT NULL, PRIMARY KEY ({}), UNIQUE ({SEQ})",
                keys.join(", ")
            )
        } else {
            definition.clone()
        };
        let create_target = match (step.mode, step.target.create) {
            (LoadMode::Replace, _) => None,
            (_, CreateMode::IfMissing) => Some(format!(
                "CREATE TABLE IF NOT EXISTS {target} ({definition})"
            )),
            (_, CreateMode::Never) => None,
        };
        let text = sql_type(dialect, ColumnType::Text);
        let create_rejects = format!(
            "CREATE TABLE IF NOT EXISTS {rejects} (run_id {text} NOT NULL, task_id {text} NOT NULL, \
             source_file {text} NOT NULL, line_number BIGINT NOT NULL, raw_row {text} NOT NULL, reason {text} NOT NULL, \
             rejected_at {} NOT NULL)",
            sql_type(dialect, ColumnType::Timestamptz)
        );
        let (on_error, max) = match &step.rejects {
            Some(r) => (r.on_error, r.max),
            None => (OnError::Fail, None),
        };
        let into = staging.clone().unwrap_or_else(|| target.clone());
        let cursor = match &step.incremental {
            None => None,
            Some(inc) => {
                let i = columns
                    .names
                    .iter()
                    .position(|n| *n == inc.cursor)
                    .ok_or_else(|| {
                        LoadError::fatal(format!(
                            "incremental cursor `{}` is not a loaded column",
                            inc.cursor
                        ))
                    })?;
                let after = match stored_cursor {
                    None => None,
                    Some(text) => Some(
                        parse_value(&inc.cursor, &columns.specs[i], Some(text)).map_err(|e| {
                            LoadError::fatal(format!(
                                "the stored cursor does not parse as the column: {e}"
                            ))
                        })?,
                    ),
                };
                Some((i, after))
            }
        };
        Ok(Plan {
            dialect,
            started,
            columns,
            cursor,
            into,
            target,
            staging: staging.map(|s| (s, staging_definition)),
            keys,
            upsert: step.mode == LoadMode::Upsert,
            rejects,
            rejects_name,
            column_list: if step.mode == LoadMode::Upsert {
                format!("{}, {SEQ}", quoted.join(", "))
            } else {
                quoted.join(", ")
            },
            create_target,
            create_rejects,
            on_error,
            max,
            batch: usize::try_from(step.batch_size)
                .unwrap_or(10_000)
                .clamp(1, 100_000),
        })
    }

    pub(super) async fn execute<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
        input: Input,
        step: &LoadStep,
        ctx: &LoadContext,
        log: &LogSink,
    ) -> Result<Counts, LoadError>
    where
        DB: WriteRows,
    {
        let mut ddl = Vec::new();
        if let Some(create) = &self.create_target {
            ddl.push(create.clone());
        }
        // An upsert's temporary stage is made in the transaction's own connection, below.
        if let Some((name, definition)) = self.staging.as_ref().filter(|_| !self.upsert) {
            ddl.push(format!("DROP TABLE IF EXISTS {name}"));
            ddl.push(format!("CREATE TABLE {name} ({definition})"));
        }
        if self.on_error == OnError::Reject {
            ddl.push(self.create_rejects.clone());
        }
        if self.dialect == Dialect::MySql {
            // MySQL commits around DDL: tables are created before the transaction (an empty
            // table, or an empty staging table, is all a failure can leave behind).
            let mut conn = pool.acquire().await?;
            for statement in &ddl {
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(DB::on(&mut *conn))
                    .await?;
            }
            ddl.clear();
        }
        let mut tx = crate::conn::begin_write(pool).await?;
        if let Some((name, definition)) = self.staging.as_ref().filter(|_| self.upsert) {
            // One a failed load left in this pooled connection goes first (MySQL does not roll
            // back a temporary table's creation).
            ddl.push(self.drop_stage(name));
            ddl.push(format!("CREATE TEMPORARY TABLE {name} ({definition})"));
        }
        for statement in ddl {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(DB::on(&mut *tx))
                .await?;
        }
        if step.mode == LoadMode::TruncateInsert {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DELETE FROM {}", self.target)))
                .execute(DB::on(&mut *tx))
                .await?;
        }
        // `[retention] keep_rejects`: the table's old rejects go, with this load's commit.
        if self.on_error == OnError::Reject
            && let Some(keep) = ctx.keep_rejects
            && let Ok(keep) = chrono::Duration::from_std(keep)
        {
            let mut prune = sqlx::QueryBuilder::<DB>::new(format!(
                "DELETE FROM {} WHERE rejected_at < ",
                self.rejects
            ));
            prune.push_bind(DB::time(Utc::now() - keep));
            prune.build().execute(DB::on(&mut *tx)).await?;
        }
        let mut counts = Counts::default();
        let casts: Vec<Option<&str>> = self
            .columns
            .specs
            .iter()
            .map(|s| match (self.dialect, s.ty) {
                (Dialect::Postgres, ColumnType::Numeric) => Some("NUMERIC"),
                (Dialect::Postgres, ColumnType::Json) => Some("JSONB"),
                _ => None,
            })
            .collect();
        // Rows are read and typed by a task of their own, a batch ahead of the database:
        // reading and writing overlap. Dropping the receiver (a failed batch, a timeout) stops
        // the reader at its next batch. Loaded rows go back to the reader to be freed there:
        // freeing them here cost the writer (the critical path) a tenth of its time, and
        // glibc's allocator more when memory crosses threads.
        let (mut received, spent) = match input {
            Input::Files {
                files,
                format,
                stores,
            } => {
                let (batches, received) = tokio::sync::mpsc::channel(1);
                let (spent, to_free) = std::sync::mpsc::channel::<Spent>();
                let (read_step, read_columns, batch) =
                    (step.clone(), self.columns.clone(), self.batch);
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let mut reader = RowReader {
                        step: &read_step,
                        columns: &read_columns,
                        format,
                        files: &files,
                        stores,
                        handle,
                        batch,
                        next: 0,
                        current: None,
                    };
                    loop {
                        while let Ok(rows) = to_free.try_recv() {
                            drop(rows);
                        }
                        let next = reader.next_batch(batch);
                        let last = !matches!(next, Ok(Some(_)));
                        if batches.blocking_send(next).is_err() || last {
                            return;
                        }
                    }
                });
                (received, spent)
            }
            // The database reader types and batches its rows itself (`stream_source`).
            Input::Database { rows, spent } => (rows, spent),
        };
        if DB::COPY {
            // A group's rows stream into one COPY (in a savepoint) as they are read; the
            // group's text is kept until it is known whether the database took it.
            loop {
                let (chunks, to_copy) = tokio::sync::mpsc::channel(4);
                let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                let (copied, gathered) = tokio::join!(
                    DB::copy_chunks(&mut *sp, &self.into, &self.column_list, to_copy),
                    self.gather_group(&mut received, &spent, chunks, counts.seq)
                );
                let Some(group) = gathered? else {
                    sp.rollback().await?;
                    break;
                };
                match copied {
                    Ok(()) => sp.commit().await?,
                    Err(_) => sp.rollback().await?,
                }
                counts.seq += u64::try_from(group.rows.len()).unwrap_or(0);
                self.settle_group(&mut tx, group, copied, ctx, &mut counts, log)
                    .await?;
            }
        }
        while let Some(rows) = received.recv().await.transpose()?.flatten() {
            let done = self
                .write_batch(&mut tx, rows, &casts, ctx, &mut counts, log)
                .await?;
            let _ = spent.send(Box::new(done));
        }
        if let Some(limit) = &self.max
            && exceeds(limit, counts.rejected, counts.read)
        {
            return Err(LoadError::fatal(format!(
                "{} of {} row(s) rejected, more than `max` allows; see {} (nothing was loaded)",
                counts.rejected, counts.read, self.rejects
            )));
        }
        // The commit ledger's marker goes in with the rows (MySQL's `replace` swaps tables
        // after its transaction: its marker follows the swap).
        let swapped_later = self.dialect == Dialect::MySql && step.mode == LoadMode::Replace;
        if !swapped_later {
            self.mark::<DB>(&mut tx, step, ctx, &counts).await?;
        }
        if self.upsert
            && let Some((stage, _)) = &self.staging
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(self.drop_stage(stage)))
                .execute(DB::on(&mut *tx))
                .await?;
            tx.commit().await?;
        } else if let Some((name, _)) = &self.staging {
            let bare = step
                .target
                .table
                .rsplit('.')
                .next()
                .unwrap_or(&step.target.table);
            let bare = self.dialect.ident(bare).map_err(LoadError::fatal)?;
            match self.dialect {
                // Transactional DDL: the swap commits with the rows.
                Dialect::Postgres | Dialect::Sqlite => {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP TABLE IF EXISTS {}; ALTER TABLE {name} RENAME TO {bare}",
                        self.target
                    )))
                    .execute(DB::on(&mut *tx))
                    .await?;
                    tx.commit().await?;
                }
                // DDL commits implicitly: commit the rows, then one atomic RENAME TABLE.
                Dialect::MySql => {
                    tx.commit().await?;
                    let old = self
                        .dialect
                        .ident(&format!("{}__weir_old", step.target.table))
                        .map_err(LoadError::fatal)?;
                    let mut conn = pool.acquire().await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                        .execute(DB::on(&mut *conn))
                        .await?;
                    let exists = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "SELECT 1 FROM {} LIMIT 0",
                        self.target
                    )))
                    .execute(DB::on(&mut *conn))
                    .await
                    .is_ok();
                    let rename = if exists {
                        format!(
                            "RENAME TABLE {} TO {old}, {name} TO {}",
                            self.target, self.target
                        )
                    } else {
                        format!("RENAME TABLE {name} TO {}", self.target)
                    };
                    sqlx::raw_sql(sqlx::AssertSqlSafe(rename))
                        .execute(DB::on(&mut *conn))
                        .await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                        .execute(DB::on(&mut *conn))
                        .await?;
                    self.mark::<DB>(&mut conn, step, ctx, &counts).await?;
                }
            }
        } else {
            tx.commit().await?;
        }
        if self.on_error == OnError::Reject {
            self.create_latest_view(pool).await;
        }
        if counts.read != counts.loaded + counts.rejected {
            // The invariant is structural; this would be a bug, and must not pass silently.
            return Err(LoadError::fatal(format!(
                "internal error: read {} != loaded {} + rejected {}",
                counts.read, counts.loaded, counts.rejected
            )));
        }
        Ok(counts)
    }

    /// `<table>__rejects_latest`: the newest reject of each source line of each task (a rerun
    /// appends its rejects again; the history stays in `<table>__rejects`). Made once, after
    /// the commit; failing to make it does not fail the load.
    pub(super) async fn create_latest_view<DB>(&self, pool: &sqlx::Pool<DB>)
    where
        DB: SqlDb,
    {
        let Ok(view) = self.dialect.ident(&format!("{}_latest", self.rejects_name)) else {
            return;
        };
        let create = match self.dialect {
            Dialect::Sqlite => "CREATE VIEW IF NOT EXISTS",
            Dialect::Postgres | Dialect::MySql => "CREATE OR REPLACE VIEW",
        };
        let sql = format!(
            "{create} {view} AS SELECT run_id, task_id, source_file, line_number, raw_row, reason, rejected_at \
             FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY task_id, source_file, line_number \
             ORDER BY rejected_at DESC, run_id DESC) AS weir_n FROM {} r) x WHERE weir_n = 1",
            self.rejects
        );
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(DB::pool(pool))
            .await
        {
            tracing::debug!(error = %e, "creating the latest-rejects view failed");
        }
    }

    /// Drops an upsert's temporary stage, and only a temporary table of that name.
    pub(super) fn drop_stage(&self, stage: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("DROP TABLE IF EXISTS pg_temp.{stage}"),
            Dialect::MySql => format!("DROP TEMPORARY TABLE IF EXISTS {stage}"),
            Dialect::Sqlite => format!("DROP TABLE IF EXISTS temp.{stage}"),
        }
    }

    /// Records in the commit ledger that this try's load committed (see [`super::ledger`]).
    pub(super) async fn mark<DB>(
        &self,
        conn: &mut DB::Connection,
        step: &LoadStep,
        ctx: &LoadContext,
        counts: &Counts,
    ) -> Result<(), LoadError>
    where
        DB: SqlDb,
    {
        let Some(attempt) = &ctx.attempt else {
            return Ok(());
        };
        attempt
            .record::<DB>(conn, &outputs(step, ctx, counts, self.started))
            .await?;
        Ok(())
    }

    /// `upsert`: merges the staged rows `first..first + n` (one batch) into the target; a
    /// range the target refuses (a foreign key, a unique column, a check, a trigger) is merged
    /// again by halves down to the refused rows, which become rejects. `origin(i)` is where row
    /// `first + i` came from.
    pub(super) async fn merge_staged<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        first: u64,
        n: usize,
        origin: impl Fn(usize) -> Reject,
        counts: &mut Counts,
    ) -> Result<Vec<Reject>, LoadError>
    where
        DB: WriteRows,
    {
        let mut rejects = Vec::new();
        let Some((stage, _)) = self.staging.as_ref().filter(|_| self.upsert) else {
            return Ok(rejects);
        };
        if n == 0 {
            return Ok(rejects);
        }
        let seqs = |range: &std::ops::Range<usize>| {
            let at = |i: usize| first + u64::try_from(i).unwrap_or(u64::MAX);
            (at(range.start), at(range.end) - 1)
        };
        let mut try_range = async |tx: &mut sqlx::Transaction<'static, DB>, range| {
            let mut sp = sqlx::Connection::begin(&mut **tx).await?;
            match self.merge(&mut sp, stage, seqs(&range)).await {
                Ok((updated, inserted)) => {
                    sp.commit().await?;
                    counts.updated += updated;
                    counts.inserted += inserted;
                    Ok::<_, sqlx::Error>(None)
                }
                Err(e) => {
                    sp.rollback().await?;
                    Ok(Some(e))
                }
            }
        };
        let Some(error) = try_range(tx, 0..n).await? else {
            return Ok(rejects);
        };
        tracing::debug!(%error, "merge refused; narrowing down the refused rows");
        let reject = |i: usize, e: &sqlx::Error| Reject {
            reason: database_reason(e),
            ..origin(i)
        };
        if n == 1 {
            rejects.push(reject(0, &error));
        }
        let mut halving = Halving::new(n);
        while let Some(range) = halving.next_range() {
            if let Some(e) = try_range(tx, range.clone()).await?
                && halving.refused(range.clone())
            {
                rejects.push(reject(range.start, &e));
            }
        }
        // They were counted as loaded when they reached the staging table.
        counts.loaded -= u64::try_from(rejects.len()).unwrap_or(0);
        Ok(rejects)
    }

    /// Merges the staged rows numbered `seqs` (inclusive) into the target: rows whose key
    /// exists and whose other columns differ are updated (an unchanged row is not rewritten);
    /// rows with a new key are inserted. Returns (updated, inserted).
    pub(super) async fn merge<DB>(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        stage: &str,
        seqs: (u64, u64),
    ) -> Result<(u64, u64), sqlx::Error>
    where
        DB: WriteRows,
    {
        let d = self.dialect;
        let in_range = format!("s.{SEQ} BETWEEN {} AND {}", seqs.0, seqs.1);
        let quoted: Vec<String> = self
            .columns
            .names
            .iter()
            .map(|n| d.ident(n))
            .collect::<Result<_, _>>()
            .map_err(|e| sqlx::Error::Protocol(e.0))?;
        let others: Vec<&String> = quoted.iter().filter(|q| !self.keys.contains(q)).collect();
        let join = self
            .keys
            .iter()
            .map(|k| format!("t.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let updated = if others.is_empty() {
            0
        } else {
            let differs = others
                .iter()
                .map(|c| match d {
                    Dialect::Postgres => format!("t.{c} IS DISTINCT FROM s.{c}"),
                    Dialect::Sqlite => format!("t.{c} IS NOT s.{c}"),
                    Dialect::MySql => format!("NOT (t.{c} <=> s.{c})"),
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let sql = match d {
                Dialect::Postgres | Dialect::Sqlite => format!(
                    "UPDATE {} AS t SET {} FROM {stage} AS s WHERE {join} AND ({differs}) AND {in_range}",
                    self.target,
                    others
                        .iter()
                        .map(|c| format!("{c} = s.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Dialect::MySql => format!(
                    "UPDATE {} AS t JOIN {stage} AS s ON {join} SET {} WHERE ({differs}) AND {in_range}",
                    self.target,
                    others
                        .iter()
                        .map(|c| format!("t.{c} = s.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(DB::on(&mut **tx))
                .await?;
            DB::affected(&result)
        };
        let list = quoted.join(", ");
        let from_stage = quoted
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let new_keys = format!(
            "FROM {stage} AS s WHERE {in_range} AND NOT EXISTS (SELECT 1 FROM {} AS t WHERE {join})",
            self.target
        );
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} ({list}) SELECT {from_stage} {new_keys}",
            self.target
        )))
        .execute(DB::on(&mut **tx))
        .await?;
        Ok((updated, DB::affected(&result)))
    }
}
