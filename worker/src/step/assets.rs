//! What a successful try wrote and read: the asset events recorded with its success, with no
//! declaration needed for the steps that know their targets.
//!
//! - `load` writes its target table (rows loaded, inserted, updated) and reads its source (the
//!   files' location, the URL, or the table or the tables of the query);
//! - `export` writes its location (rows, bytes) and reads its table or query's tables;
//! - `transfer` writes `to` (files, bytes) and reads `from`; `http` with `save_to` writes it;
//! - `migrate` writes its history table (`weir_schema_history`) when it applied a file;
//! - `validate` reads the tables and files its checks name;
//! - `sql` writes the targets of its `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `CREATE TABLE … AS`
//!   and `TRUNCATE` statements and reads the other tables they name, as far as the SQL parses
//!   (sqlparser, in the connection's dialect); SQL that does not parse records nothing;
//! - `dbt` writes the models, seeds and snapshots it built (each with its upstream relations in
//!   the event's details) and reads the sources they select from, as its artifacts say;
//! - every kind adds the task's `produces` and `consumes`.
//!
//! A location written with templates (`s3://lake/{{ ds }}/orders.parquet`) is one asset, its
//! templates read as `*` (`s3://lake/*/orders.parquet`); the objects of each event are in its
//! details.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sqlparser::ast::{ObjectName, ObjectNamePart, Statement, TableFactor, TableObject};
use weir_model::Step;
use weir_model::asset::{parse_asset_key, table_key};
use weir_model::sql::Dialect;
use weir_store::{Access, AssetCounts, AssetRecord};

use crate::conn::Connections;

/// The task's own `produces` and `consumes`, rendered.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// Assets it writes.
    pub produces: Vec<String>,
    /// Assets it reads.
    pub consumes: Vec<String>,
}

/// The events of a successful try of `step` (as rendered) whose DAG wrote `written` (and of a
/// `dbt` try that failed part way: what it built was written).
pub fn records(
    step: &Step,
    written: &Step,
    declared: &Declared,
    outputs: &Map<String, Value>,
    conns: &Connections,
) -> Vec<AssetRecord> {
    let mut out = Recorder {
        conns,
        records: Vec::new(),
    };
    // Counts are numbers; `migrate` gives text.
    let num = |k: &str| {
        outputs.get(k).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    match (step, written) {
        (Step::Load(l), Step::Load(w)) => {
            let details = outputs
                .get("files")
                .map(|f| serde_json::json!({ "files": f }));
            out.table(
                Access::Write,
                &l.target.conn,
                &l.target.table,
                AssetCounts {
                    rows: num("rows_loaded"),
                    inserted: num("rows_inserted"),
                    updated: num("rows_updated"),
                    ..AssetCounts::default()
                },
                None,
            );
            let src = &l.source;
            if let (Some(file), Some(w)) = (&src.file, &w.source.file) {
                out.location(Access::Read, w, file, AssetCounts::default(), details);
            } else if let Some(url) = &src.http {
                out.url(Access::Read, url);
            } else if let (Some(conn), Some(table)) = (&src.conn, &src.table) {
                out.table(Access::Read, conn, table, AssetCounts::default(), None);
            } else if let (Some(conn), Some(query)) = (&src.conn, &src.query) {
                out.sql(conn, query, false);
            }
        }
        (Step::Export(e), Step::Export(w)) => {
            out.location(
                Access::Write,
                &w.to,
                &e.to,
                AssetCounts {
                    rows: num("rows"),
                    bytes: num("bytes"),
                    files: Some(1),
                    ..AssetCounts::default()
                },
                outputs
                    .get("path")
                    .map(|p| serde_json::json!({ "path": p })),
            );
            if let Some(table) = &e.table {
                out.table(Access::Read, &e.conn, table, AssetCounts::default(), None);
            } else if let Some(query) = &e.query {
                out.sql(&e.conn, query, false);
            }
        }
        (Step::Transfer(t), Step::Transfer(w)) => {
            let files = outputs.get("files").and_then(Value::as_array).map(Vec::len);
            out.location(
                Access::Write,
                &w.to,
                &t.to,
                AssetCounts {
                    bytes: num("bytes"),
                    files: files.and_then(|n| i64::try_from(n).ok()),
                    ..AssetCounts::default()
                },
                outputs.get("files").map(|f| {
                    serde_json::json!({ "files": f, "copied": outputs.get("copied"), "skipped": outputs.get("skipped") })
                }),
            );
            out.location(Access::Read, &w.from, &t.from, AssetCounts::default(), None);
        }
        (Step::Http(h), Step::Http(w)) => {
            if let (Some(save), Some(w)) = (&h.save_to, &w.save_to) {
                out.location(
                    Access::Write,
                    w,
                    save,
                    AssetCounts {
                        bytes: num("bytes"),
                        files: Some(1),
                        ..AssetCounts::default()
                    },
                    None,
                );
            }
            out.url(Access::Read, &h.url);
        }
        (Step::Migrate(m), _) if num("applied").is_some_and(|n| n > 0) => {
            out.table(
                Access::Write,
                &m.conn,
                "weir_schema_history",
                AssetCounts::default(),
                Some(serde_json::json!({ "applied": outputs.get("applied"), "version": outputs.get("version") })),
            );
        }
        (Step::Sql(s), _) => {
            for text in &s.sql {
                out.sql(&s.conn, text, true);
            }
        }
        // The relations dbt wrote and the sources they read, from the artifacts (see
        // `dbt::artifacts`): names as dbt created them (quoted, so their case stays).
        (Step::Dbt(d), _) => {
            let quoted = |relation: &str| match relation.split_once('.') {
                Some((schema, table)) => format!("\"{schema}\".\"{table}\""),
                None => format!("\"{relation}\""),
            };
            for w in outputs
                .get("written")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(relation) = w.get("relation").and_then(Value::as_str) else {
                    continue;
                };
                out.table(
                    Access::Write,
                    &d.conn,
                    &quoted(relation),
                    AssetCounts {
                        rows: w.get("rows").and_then(Value::as_i64),
                        ..AssetCounts::default()
                    },
                    Some(
                        serde_json::json!({ "dbt": w.get("node"), "upstream": w.get("upstream") }),
                    ),
                );
            }
            for r in outputs
                .get("read")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(relation) = r.as_str() {
                    out.table(
                        Access::Read,
                        &d.conn,
                        &quoted(relation),
                        AssetCounts::default(),
                        None,
                    );
                }
            }
        }
        // The tables and files its checks read (a side's own `conn`, else the step's).
        // Tables as rendered, files as written (a templated location is one asset).
        (Step::Validate(v), Step::Validate(w)) => {
            if let Ok(checks) = serde_json::to_value(&v.checks) {
                out.validate_reads(&checks, v.conn.as_deref(), false);
            }
            if let Ok(checks) = serde_json::to_value(&w.checks) {
                out.validate_reads(&checks, None, true);
            }
        }
        _ => {}
    }
    for (access, keys) in [
        (Access::Write, &declared.produces),
        (Access::Read, &declared.consumes),
    ] {
        for key in keys {
            if let Ok(key) = parse_asset_key(key) {
                out.push(access, key, AssetCounts::default(), None);
            }
        }
    }
    out.records
}

struct Recorder<'a> {
    conns: &'a Connections,
    records: Vec<AssetRecord>,
}

impl Recorder<'_> {
    /// Adds an event; a second one of the same asset and access merges into the first.
    fn push(&mut self, access: Access, key: String, counts: AssetCounts, details: Option<Value>) {
        if let Some(existing) = self
            .records
            .iter_mut()
            .find(|r| r.key == key && r.access == access)
        {
            if existing.counts == AssetCounts::default() {
                existing.counts = counts;
            }
            if existing.details.is_none() {
                existing.details = details;
            }
            return;
        }
        self.records.push(AssetRecord {
            key,
            access,
            counts,
            details,
        });
    }

    fn table(
        &mut self,
        access: Access,
        conn: &str,
        table: &str,
        counts: AssetCounts,
        details: Option<Value>,
    ) {
        let parts: Vec<(String, bool)> = split_name(table);
        if let Some(key) = self.table_key(conn, &parts) {
            self.push(access, key, counts, details);
        }
    }

    /// `conn.schema.table` from a table's name parts as written (quoted or not).
    fn table_key(&self, conn: &str, parts: &[(String, bool)]) -> Option<String> {
        let dialect = self.conns.dialect(conn).ok()?;
        // Postgres folds unquoted names to lower case; SQLite's names ignore case.
        let fold = |(name, quoted): &(String, bool)| match dialect {
            Dialect::Postgres if !quoted => name.to_lowercase(),
            Dialect::Sqlite => name.to_lowercase(),
            _ => name.clone(),
        };
        let (schema, table) = match parts {
            [table] => (self.conns.default_schema(conn)?, fold(table)),
            [.., schema, table] => (fold(schema), fold(table)),
            [] => return None,
        };
        Some(table_key(conn, &schema, &table))
    }

    fn location(
        &mut self,
        access: Access,
        written: &str,
        rendered: &str,
        counts: AssetCounts,
        details: Option<Value>,
    ) {
        let templated = weir_model::template::is_template(written);
        let key = location_key(if templated { written } else { rendered });
        let details = match (templated, details) {
            (true, None) => Some(serde_json::json!({ "location": rendered })),
            (_, d) => d,
        };
        if let Some(key) = key {
            self.push(access, key, counts, details);
        }
    }

    /// A URL read over HTTP: the asset is the URL without its query.
    fn url(&mut self, access: Access, url: &str) {
        if let Ok(mut u) = url::Url::parse(url) {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            self.push(access, u.to_string(), AssetCounts::default(), None);
        }
    }

    /// Every `table` (on its `conn`, else `conn`) and `file` named in a validate step's checks.
    fn validate_reads(&mut self, v: &Value, conn: Option<&str>, files: bool) {
        match v {
            Value::Object(o) => {
                let conn = o.get("conn").and_then(Value::as_str).or(conn);
                if let (false, Some(table), Some(conn)) =
                    (files, o.get("table").and_then(Value::as_str), conn)
                {
                    self.table(Access::Read, conn, table, AssetCounts::default(), None);
                }
                if let (true, Some(file)) = (files, o.get("file").and_then(Value::as_str)) {
                    self.location(Access::Read, file, file, AssetCounts::default(), None);
                }
                for child in o.values() {
                    self.validate_reads(child, conn, files);
                }
            }
            Value::Array(a) => {
                for child in a {
                    self.validate_reads(child, conn, files);
                }
            }
            _ => {}
        }
    }

    /// The tables a SQL text writes (with `writes`) and reads.
    fn sql(&mut self, conn: &str, text: &str, writes: bool) {
        let Ok(dialect) = self.conns.dialect(conn) else {
            return;
        };
        let Some((written, read)) = sql_tables(dialect, text) else {
            return;
        };
        if writes {
            for parts in &written {
                if let Some(key) = self.table_key(conn, parts) {
                    self.push(Access::Write, key, AssetCounts::default(), None);
                }
            }
        }
        for parts in read.iter().filter(|p| !written.contains(p)) {
            if let Some(key) = self.table_key(conn, parts) {
                self.push(Access::Read, key, AssetCounts::default(), None);
            }
        }
    }
}

/// A location's key: a URL as is, a local path made absolute; templates read as `*`.
fn location_key(text: &str) -> Option<String> {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{").or_else(|| rest.find("{%")) {
        plain.push_str(&rest[..start]);
        plain.push('*');
        let close = if rest[start..].starts_with("{{") {
            "}}"
        } else {
            "%}"
        };
        match rest[start..].find(close) {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = "";
            }
        }
    }
    plain.push_str(rest);
    if plain.contains("://") || plain.starts_with('/') {
        return parse_asset_key(&plain).ok();
    }
    let abs = std::env::current_dir().ok()?.join(&plain);
    parse_asset_key(&abs.to_string_lossy()).ok()
}

/// A table name's parts as written: `"My Schema".orders` → `[("My Schema", true), ("orders",
/// false)]`.
fn split_name(text: &str) -> Vec<(String, bool)> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    let mut current = String::new();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                quoted = true;
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                    current.push(d);
                }
            }
            '.' => {
                parts.push((std::mem::take(&mut current), quoted));
                quoted = false;
            }
            c => current.push(c),
        }
    }
    parts.push((current, quoted));
    parts.retain(|(p, _)| !p.is_empty());
    parts
}

type Names = Vec<Vec<(String, bool)>>;

/// The tables `text` writes and reads, or `None` when it does not parse in `dialect`.
fn sql_tables(dialect: Dialect, text: &str) -> Option<(Names, Names)> {
    use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect, SQLiteDialect};
    let statements = match dialect {
        Dialect::Postgres => sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, text),
        Dialect::MySql => sqlparser::parser::Parser::parse_sql(&MySqlDialect {}, text),
        Dialect::Sqlite => sqlparser::parser::Parser::parse_sql(&SQLiteDialect {}, text),
    }
    .ok()?;
    let mut written = Vec::new();
    for s in &statements {
        match s {
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    written.push(parts(n));
                }
            }
            Statement::Update(u) => {
                if let TableFactor::Table { name, .. } = &u.table.relation {
                    written.push(parts(name));
                }
            }
            Statement::Delete(d) => {
                let from = match &d.from {
                    sqlparser::ast::FromTable::WithFromKeyword(t)
                    | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
                };
                for t in from {
                    if let TableFactor::Table { name, .. } = &t.relation {
                        written.push(parts(name));
                    }
                }
            }
            Statement::Merge(m) => {
                if let TableFactor::Table { name, .. } = &m.table {
                    written.push(parts(name));
                }
            }
            Statement::CreateTable(c) if c.query.is_some() => written.push(parts(&c.name)),
            Statement::Truncate(t) => {
                for target in &t.table_names {
                    written.push(parts(&target.name));
                }
            }
            _ => {}
        }
    }
    let mut read = Vec::new();
    let _ = sqlparser::ast::visit_relations(&statements, |rel| {
        read.push(parts(rel));
        std::ops::ControlFlow::<()>::Continue(())
    });
    // Common table expressions are names, not tables.
    let ctes: BTreeSet<String> = statements
        .iter()
        .filter_map(|s| match s {
            Statement::Query(q) => q.with.as_ref(),
            _ => None,
        })
        .flat_map(|w| w.cte_tables.iter().map(|c| c.alias.name.value.clone()))
        .collect();
    read.retain(|p| !(p.len() == 1 && ctes.contains(&p[0].0)));
    read.dedup();
    Some((written, read))
}

fn parts(name: &ObjectName) -> Vec<(String, bool)> {
    name.0
        .iter()
        .filter_map(|p| match p {
            ObjectNamePart::Identifier(i) => Some((i.value.clone(), i.quote_style.is_some())),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &Names) -> Vec<String> {
        v.iter()
            .map(|p| {
                p.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }

    #[test]
    fn sql_targets_and_sources_are_found() {
        let (w, r) = sql_tables(
            Dialect::Postgres,
            "INSERT INTO mart.daily SELECT d, count(*) FROM raw.orders o JOIN customers c ON c.id = o.cid GROUP BY d;
             UPDATE \"Stats\" SET n = 1; CREATE TABLE snap AS SELECT * FROM raw.orders; DELETE FROM old_rows",
        )
        .expect("parses");
        assert_eq!(names(&w), ["mart.daily", "Stats", "snap", "old_rows"]);
        for t in ["raw.orders", "customers"] {
            assert!(names(&r).contains(&t.to_owned()), "{r:?}");
        }
        let (w, r) = sql_tables(
            Dialect::Postgres,
            "WITH recent AS (SELECT * FROM events) SELECT * FROM recent",
        )
        .expect("parses");
        assert!(w.is_empty());
        assert_eq!(names(&r), ["events"]);
        assert!(sql_tables(Dialect::Postgres, "this is not sql").is_none());
    }

    #[test]
    fn templated_locations_are_one_asset() {
        assert_eq!(
            location_key("s3://lake/{{ ds }}/orders-{{ params.n }}.parquet").as_deref(),
            Some("s3://lake/*/orders-*.parquet")
        );
        assert_eq!(
            location_key("/data/x.csv").as_deref(),
            Some("file:///data/x.csv")
        );
    }

    #[test]
    fn names_keep_their_quotes() {
        assert_eq!(
            split_name("\"My Schema\".orders"),
            [("My Schema".to_owned(), true), ("orders".to_owned(), false)]
        );
    }
}
