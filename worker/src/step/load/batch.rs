//! The rows side of a load's plan: each batch written, a `COPY` group gathered and settled,
//! bad rows found by halving inside savepoints, rejects recorded, the incremental cursor
//! tracked. (The table side, from DDL to the final swap, is in [`super::plan`].)

use super::*;

/// The ranges of a refused batch left to write again, each refused one halved in turn down to
/// single rows: a few bad rows cost a few dozen statements, not one per row. (A batch of one
/// row is its own bad row: nothing to try.)
pub(super) struct Halving(Vec<std::ops::Range<usize>>);

impl Halving {
    pub(super) fn new(len: usize) -> Halving {
        let mut h = Halving(Vec::new());
        if len > 1 {
            h.split(0..len);
        }
        h
    }

    /// Queues both halves of `range`, the first to be tried first.
    pub(super) fn split(&mut self, range: std::ops::Range<usize>) {
        let middle = range.start + range.len() / 2;
        self.0.push(middle..range.end);
        self.0.push(range.start..middle);
    }

    pub(super) fn next_range(&mut self) -> Option<std::ops::Range<usize>> {
        self.0.pop()
    }

    /// Records that the database refused `range`: `true` when it is a single row (the bad
    /// one), else its halves are queued.
    pub(super) fn refused(&mut self, range: std::ops::Range<usize>) -> bool {
        if range.len() == 1 {
            return true;
        }
        self.split(range);
        false
    }
}

/// Where a row came from (a reject without its reason: what a `COPY` group keeps per row).
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub(super) file: Arc<str>,
    pub(super) line: u64,
    pub(super) raw: Raw,
}

impl From<Origin> for Reject {
    fn from(o: Origin) -> Reject {
        Reject {
            file: o.file,
            line: o.line,
            raw: o.raw,
            reason: String::new(),
        }
    }
}

/// The database's own words for a refused row.
pub(super) fn database_reason(e: &sqlx::Error) -> String {
    format!("refused by the database: {}", crate::conn::db_error(e))
}

pub(super) fn exceeds(limit: &RejectLimit, rejected: u64, read: u64) -> bool {
    match limit {
        RejectLimit::Count(n) => rejected > *n,
        RejectLimit::Percent(share) => {
            #[expect(
                clippy::cast_precision_loss,
                reason = "row counts fit f64 exactly below 2^53"
            )]
            let over = (rejected as f64) > (read as f64) * share / 100.0;
            over
        }
    }
}

impl Plan {
    /// Where a row written by value came from; a typed database row's raw row is rebuilt from
    /// its values (the loaded columns only: an upsert's row also carries its staging number).
    pub(super) fn origin_of(&self, (values, at): &(Vec<Value>, Reject)) -> Reject {
        let mut origin = at.clone();
        if matches!(origin.raw, Raw::Typed) {
            origin.raw = Raw::Fields(
                values
                    .iter()
                    .take(self.columns.names.len())
                    .map(value_text)
                    .collect(),
            );
        }
        origin
    }

    /// Raises the high-water mark to a loaded row's cursor value.
    pub(super) fn track_cursor(&self, values: &[Value], counts: &mut Counts) {
        let Some((i, _)) = &self.cursor else { return };
        let Some(v) = values.get(*i) else { return };
        Self::raise_cursor(v, counts);
    }

    /// Makes `v` the loaded cursor if it is higher.
    pub(super) fn raise_cursor(v: &Value, counts: &mut Counts) {
        if value_text(v).is_none() {
            return;
        }
        let higher = counts
            .cursor
            .as_ref()
            .is_none_or(|c| compare(v, c) == Some(std::cmp::Ordering::Greater));
        if higher {
            counts.cursor = Some(v.clone());
        }
    }

    /// Inserts one batch: parsed rows in one multi-row INSERT (inside a savepoint); if the
    /// database refuses it, row by row (each in a savepoint) to reject only the bad rows.
    pub(super) async fn write_batch<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        rows: Vec<InputRow>,
        casts: &[Option<&str>],
        ctx: &LoadContext,
        counts: &mut Counts,
        log: &LogSink,
    ) -> Result<Vec<(Vec<Value>, Reject)>, LoadError>
    where
        DB: WriteRows,
    {
        let rows = self.past_cursor(rows, counts);
        counts.read += u64::try_from(rows.len()).unwrap_or(u64::MAX);
        // The batch's parsed rows, handed back to the caller to free.
        let mut loaded = Vec::new();
        let mut good: Vec<(Vec<Value>, Reject)> = Vec::with_capacity(rows.len());
        let mut rejects = Vec::new();
        for row in rows {
            let at = Reject {
                file: row.file,
                line: row.line,
                raw: row.raw,
                reason: String::new(),
            };
            match row.parsed {
                Ok(values) => good.push((values, at)),
                Err(reason) => rejects.push(Reject { reason, ..at }),
            }
        }
        let first_seq = counts.seq;
        if self.upsert {
            for (values, _) in &mut good {
                values.push(Value::BigInt(Some(
                    i64::try_from(counts.seq).unwrap_or(i64::MAX),
                )));
                counts.seq += 1;
            }
        }
        if !good.is_empty() {
            let values: Vec<&Vec<Value>> = good.iter().map(|(v, _)| v).collect();
            let mut sp = sqlx::Connection::begin(&mut **tx).await?;
            let inserted = self.insert(&mut sp, &values, casts).await;
            match inserted {
                Ok(()) => {
                    sp.commit().await?;
                    counts.loaded += u64::try_from(good.len()).unwrap_or(u64::MAX);
                    for (values, _) in &good {
                        self.track_cursor(values, counts);
                    }
                    loaded = good;
                }
                Err(batch_error) => {
                    sp.rollback().await?;
                    tracing::debug!(error = %batch_error, "batch refused; narrowing down the bad rows");
                    let reject = |row: usize, e: &sqlx::Error| Reject {
                        reason: database_reason(e),
                        ..self.origin_of(&good[row])
                    };
                    if good.len() == 1 {
                        rejects.push(reject(0, &batch_error));
                    }
                    let mut halving = Halving::new(good.len());
                    while let Some(range) = halving.next_range() {
                        let rows: Vec<&Vec<Value>> =
                            good[range.clone()].iter().map(|(v, _)| v).collect();
                        let mut sp = sqlx::Connection::begin(&mut **tx).await?;
                        match self.insert(&mut sp, &rows, casts).await {
                            Ok(()) => {
                                sp.commit().await?;
                                counts.loaded += u64::try_from(rows.len()).unwrap_or(u64::MAX);
                                for values in rows {
                                    self.track_cursor(values, counts);
                                }
                            }
                            Err(e) => {
                                sp.rollback().await?;
                                if halving.refused(range.clone()) {
                                    rejects.push(reject(range.start, &e));
                                }
                            }
                        }
                    }
                    loaded = good;
                }
            }
        }
        let refused = self
            .merge_staged(
                tx,
                first_seq,
                loaded.len(),
                |i| self.origin_of(&loaded[i]),
                counts,
            )
            .await?;
        rejects.extend(refused);
        self.record_rejects(tx, rejects, ctx, counts, log).await?;
        Ok(loaded)
    }

    /// Reads batches until a `COPY` group is full or the input ends (`None`: nothing left).
    /// Typed rows go back to the reader to be freed as soon as they are in `COPY` form.
    pub(super) async fn gather_group(
        &self,
        received: &mut tokio::sync::mpsc::Receiver<Result<Option<Vec<InputRow>>, LoadError>>,
        spent: &std::sync::mpsc::Sender<Spent>,
        chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
        first_seq: u64,
    ) -> Result<Option<CopyGroup>, LoadError> {
        /// Bytes handed to the COPY at a time.
        const CHUNK: usize = 64 * 1024;
        // Bytes of `lines` handed to the COPY so far.
        let mut sent = 0;
        let mut group = CopyGroup {
            first_seq,
            seq_column: self.upsert,
            ..CopyGroup::default()
        };
        let mut any = false;
        // Counted over every row taken (rejects are held until the group is written too).
        let mut taken = 0;
        while taken < COPY_GROUP_ROWS.max(self.batch) && group.lines.len() < COPY_GROUP_BYTES {
            let Some(rows) = received.recv().await.transpose()?.flatten() else {
                break;
            };
            let first = !any;
            any = true;
            taken += rows.len();
            let mut counts = Counts::default();
            let rows = self.past_cursor(rows, &mut counts);
            group.skipped += counts.skipped;
            group.read += u64::try_from(rows.len()).unwrap_or(u64::MAX);
            let mut typed = Vec::with_capacity(rows.len());
            for row in rows {
                let at = Reject {
                    file: row.file,
                    line: row.line,
                    raw: row.raw,
                    reason: String::new(),
                };
                match row.parsed {
                    Ok(values) => {
                        for (i, value) in values.iter().enumerate() {
                            if i > 0 {
                                group.lines.push(b',');
                            }
                            copy_field(&mut group.lines, value);
                        }
                        if self.upsert {
                            let seq =
                                group.first_seq + u64::try_from(group.rows.len()).unwrap_or(0);
                            group.lines.push(b',');
                            group
                                .lines
                                .extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                        }
                        group.lines.push(b'\n');
                        if let Some((i, _)) = &self.cursor {
                            group.cursors.push(values.get(*i).cloned());
                        }
                        let Reject {
                            file, line, raw, ..
                        } = at;
                        // A database row's fields are in its COPY line: not kept twice.
                        let raw = match raw {
                            Raw::Fields(_) | Raw::Typed => Raw::InCopyGroup,
                            other => other,
                        };
                        group
                            .rows
                            .push((group.lines.len(), Origin { file, line, raw }));
                        typed.push(values);
                        if group.lines.len() - sent >= CHUNK {
                            // A COPY that already failed takes no more; the rows are still
                            // gathered for the retry.
                            let _ = chunks.send(group.lines[sent..].to_vec()).await;
                            sent = group.lines.len();
                        }
                    }
                    Err(reason) => group.rejects.push(Reject { reason, ..at }),
                }
            }
            let _ = spent.send(Box::new(typed));
            if first {
                // Sized once, from the first batch (growing by doubling left freed blocks).
                let per_row = group.lines.len() / taken.max(1) + 1;
                let want = (per_row * COPY_GROUP_ROWS.max(self.batch))
                    .min(COPY_GROUP_BYTES + group.lines.len());
                group.lines.reserve(want.saturating_sub(group.lines.len()));
            }
        }
        if group.lines.len() > sent {
            let _ = chunks.send(group.lines[sent..].to_vec()).await;
        }
        Ok(any.then_some(group))
    }

    /// Counts a `COPY` group the database took (`copied` is `Ok`), or, when it refused it,
    /// writes it again read batch by read batch, and a refused batch row by row, to reject
    /// only the bad rows; then records the rejects.
    pub(super) async fn settle_group<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        group: CopyGroup,
        copied: Result<(), sqlx::Error>,
        ctx: &LoadContext,
        counts: &mut Counts,
        log: &LogSink,
    ) -> Result<(), LoadError>
    where
        DB: WriteRows,
    {
        counts.read += group.read;
        counts.skipped += group.skipped;
        let mut rejects = Vec::new();
        // Rows `from..to` in one COPY inside a savepoint; whether the database took them.
        let try_rows = async |tx: &mut sqlx::Transaction<'static, DB>, from: usize, to: usize| {
            let mut sp = sqlx::Connection::begin(&mut **tx).await?;
            let (chunks, to_copy) = tokio::sync::mpsc::channel(1);
            let lines = group.lines_of(from, to).to_vec();
            // The sender goes with its send: the COPY ends when it is dropped.
            let (copied, _) = tokio::join!(
                DB::copy_chunks(&mut *sp, &self.into, &self.column_list, to_copy),
                async move { chunks.send(lines).await }
            );
            match copied {
                Ok(()) => sp.commit().await.map(|()| Ok(())),
                Err(e) => sp.rollback().await.map(|()| Err(e)),
            }
        };
        let mut loaded: Vec<usize> = Vec::with_capacity(group.rows.len());
        let all = group.rows.len();
        match copied {
            Ok(()) => loaded.extend(0..all),
            Err(group_error) => {
                tracing::debug!(error = %group_error, "COPY refused; narrowing down the bad rows");
                let reject = |row: usize, e: &sqlx::Error| Reject {
                    reason: database_reason(e),
                    ..group.origin(row)
                };
                if all == 1 {
                    rejects.push(reject(0, &group_error));
                }
                let mut halving = Halving::new(all);
                while let Some(range) = halving.next_range() {
                    match try_rows(tx, range.start, range.end).await? {
                        Ok(()) => loaded.extend(range),
                        Err(e) => {
                            if halving.refused(range.clone()) {
                                rejects.push(reject(range.start, &e));
                            }
                        }
                    }
                }
            }
        }
        counts.loaded += u64::try_from(loaded.len()).unwrap_or(u64::MAX);
        for row in loaded {
            if let Some(Some(v)) = group.cursors.get(row) {
                Self::raise_cursor(v, counts);
            }
        }
        let refused = self
            .merge_staged(tx, group.first_seq, all, |i| group.origin(i), counts)
            .await?;
        rejects.extend(refused);
        rejects.extend(group.rejects);
        self.record_rejects(tx, rejects, ctx, counts, log).await
    }

    /// `incremental`: the rows past the stored cursor (the others are counted as skipped).
    pub(super) fn past_cursor(&self, rows: Vec<InputRow>, counts: &mut Counts) -> Vec<InputRow> {
        match &self.cursor {
            Some((i, Some(after))) => rows
                .into_iter()
                .filter(|r| {
                    let old = r
                        .parsed
                        .as_ref()
                        .ok()
                        .and_then(|v| v.get(*i))
                        .is_some_and(|v| {
                            compare(v, after).is_some_and(|o| o != std::cmp::Ordering::Greater)
                        });
                    if old {
                        counts.skipped += 1;
                    }
                    !old
                })
                .collect(),
            _ => rows,
        }
    }

    /// Counts rejected rows and writes them to the rejects table, or fails the load when
    /// rejects are not kept or exceed `max`.
    pub(super) async fn record_rejects<DB>(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        rejects: Vec<Reject>,
        ctx: &LoadContext,
        counts: &mut Counts,
        log: &LogSink,
    ) -> Result<(), LoadError>
    where
        DB: WriteRows,
    {
        /// Rows per `INSERT`: 7 binds a row stays under SQLite's 32,766 binds.
        const REJECTS_PER_INSERT: usize = 1000;
        if rejects.is_empty() {
            return Ok(());
        }
        if self.on_error == OnError::Fail {
            let first = &rejects[0];
            return Err(LoadError::fatal(format!(
                "{} line {}: {} (nothing was loaded; set `rejects: {{on_error: reject}}` to load the other rows)",
                first.file, first.line, first.reason
            )));
        }
        counts.rejected += u64::try_from(rejects.len()).unwrap_or(u64::MAX);
        if let Some(RejectLimit::Count(max)) = &self.max
            && counts.rejected > *max
        {
            return Err(LoadError::fatal(format!(
                "more than {max} row(s) rejected (the last: {} line {}: {}); nothing was loaded",
                rejects[rejects.len() - 1].file,
                rejects[rejects.len() - 1].line,
                rejects[rejects.len() - 1].reason
            )));
        }
        for r in rejects.iter().take(3) {
            log.note(format!("rejected {} line {}: {}", r.file, r.line, r.reason));
        }
        let room = REJECTS_IN_OUTPUTS.saturating_sub(counts.first_rejects.len());
        counts.first_rejects.extend(
            rejects
                .iter()
                .take(room)
                .map(|r| (Arc::clone(&r.file), r.line, r.reason.clone())),
        );
        let now = Utc::now();
        for chunk in rejects.chunks(REJECTS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<DB>::new(format!(
                "INSERT INTO {} (run_id, task_id, source_file, line_number, raw_row, reason, rejected_at) ",
                self.rejects
            ));
            insert.push_values(chunk, |mut b, r| {
                b.push_bind(DB::text(ctx.run_id.clone()))
                    .push_bind(DB::text(ctx.task_id.clone()))
                    .push_bind(DB::text(r.file.to_string()))
                    .push_bind(DB::int(i64::try_from(r.line).unwrap_or(i64::MAX)))
                    .push_bind(DB::text(r.raw.text()))
                    .push_bind(DB::text(r.reason.clone()))
                    .push_bind(DB::time(now));
            });
            insert.build().execute(DB::on(&mut **tx)).await?;
        }
        Ok(())
    }

    pub(super) async fn insert<DB: WriteRows>(
        &self,
        conn: &mut sqlx::Transaction<'_, DB>,
        rows: &[&Vec<Value>],
        casts: &[Option<&str>],
    ) -> Result<(), sqlx::Error> {
        DB::write_rows(&mut **conn, &self.into, &self.column_list, rows, casts).await
    }
}
