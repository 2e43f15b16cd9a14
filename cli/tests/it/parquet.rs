//! Parquet end to end: a table with every column type exported to Parquet on a store and loaded
//! back compares equal, on every database; files written by pyarrow and DuckDB load with their
//! types; a file's schema types the table a load creates.

use weir_model::TaskState;
use weir_testkit::stores::{StoreKind, TestStore};
use weir_testkit::{DataBackend, TestDataDb, TestDb, per_backend};

use crate::data::query_text;
use crate::stores::engine_on;

/// The table of every type, per database (the same columns, each database's own types).
fn every_ddl(backend: DataBackend, table: &str) -> String {
    let [small, double, numeric, text, boolean, ts, tstz, json] = match backend {
        DataBackend::Postgres => [
            "smallint",
            "double precision",
            "numeric(12,3)",
            "text",
            "boolean",
            "timestamp",
            "timestamptz",
            "jsonb",
        ],
        DataBackend::MariaDb => [
            "smallint",
            "double",
            "decimal(12,3)",
            "varchar(200)",
            "boolean",
            "datetime(6)",
            "datetime(6)",
            "text",
        ],
        DataBackend::Sqlite => [
            "smallint",
            "double",
            "numeric(12,3)",
            "text",
            "boolean",
            "timestamp",
            "timestamptz",
            "json",
        ],
    };
    format!(
        "create table {table} (id integer primary key, small {small}, big bigint, ratio {double}, \
         amount {numeric}, name {text}, empty {text}, note {text}, flag {boolean}, day date, \
         at {ts}, at_tz {tstz}, doc {json})"
    )
}

fn every_rows(backend: DataBackend) -> String {
    let tz = match backend {
        DataBackend::Postgres => "'2024-06-01 10:00:00+02'",
        DataBackend::MariaDb => "'2024-06-01 08:00:00'",
        DataBackend::Sqlite => "'2024-06-01 08:00:00+00:00'",
    };
    format!(
        "insert into every (id, small, big, ratio, amount, name, empty, note, flag, day, at, at_tz, doc) values \
         (1, 7, 9007199254740993, 1.5, 1234.500, 'Zoë 🚀 naïve', '', 'line1\nline2, \"quoted\"', true, '2024-02-29', '2024-03-10 02:30:00.123456', {tz}, '{{\"a\": [1, 2], \"b\": null}}'), \
         (2, -32768, -1, -0.25, -0.001, 'Ωmega', '', 'x', false, '1970-01-01', '1999-12-31 23:59:59', {tz}, '[]'), \
         (3, null, null, null, null, null, null, null, null, null, null, null, null)"
    )
}

per_backend!(
    /// A table with every column type (NULLs, decimals, timestamps with a zone, unicode, empty
    /// strings) exported to Parquet in a bucket and loaded back into the same shape compares
    /// equal, value for value.
    a_table_round_trips_through_parquet, |backend: DataBackend| {
        let store = TestStore::new(StoreKind::S3);
        let meta = TestDb::sqlite().await;
        let data = TestDataDb::new(backend).await;
        let dag = format!(
            r#"id: trip
tasks:
  schema:
    kind: sql
    conn: wh
    sql:
      - "{every}"
      - "{back}"
      - "{rows}"
  out:
    kind: export
    depends_on: [schema]
    conn: wh
    table: every
    to: "{file}"
    compression: zstd
    row_group_size: 2
  back:
    kind: load
    depends_on: [out]
    source: {{file: "{file}"}}
    target: {{conn: wh, table: every_back, create: never}}
"#,
            every = every_ddl(backend, "every"),
            back = every_ddl(backend, "every_back"),
            rows = every_rows(backend).replace('"', "\\\"").replace('\n', "\\n"),
            file = store.at("lake/every.parquet"),
        );
        let mut engine = engine_on(&store, &data, &meta, &[("trip.yaml", &dag)]).await;
        let run = engine.trigger("trip", serde_json::json!({})).await;
        engine.drive(&run.run_id).await;
        let tis = engine.tasks(&run.run_id).await;
        for ti in &tis {
            assert_eq!(ti.state, TaskState::Success, "{backend:?} {}: {:?}", ti.task_id, tis.iter().map(|t| (&t.task_id, &t.error)).collect::<Vec<_>>());
        }
        let original = query_text(&data, "select * from every order by id").await;
        let back = query_text(&data, "select * from every_back order by id").await;
        assert_eq!(original.len(), 3, "{backend:?}");
        assert_eq!(back, original, "{backend:?}");
        // The nulls stayed nulls and the empty strings empty.
        assert_eq!(back[2][1..], vec![None; 12], "{backend:?}");
        assert_eq!(back[0][6].as_deref(), Some(""), "{backend:?}");
    }
);

/// Runs the venv's Python on `script` with `args`.
fn python(script: &str, args: &[&str]) {
    let out = std::process::Command::new(weir_testkit::stores::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python (run scripts/test: it installs pyarrow and duckdb into target/test-tools)");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PYARROW: &str = r#"
import datetime, decimal, sys
import pyarrow as pa, pyarrow.parquet as pq
utc = datetime.timezone.utc
t = pa.table({
    "id": pa.array([1, 2, 3], pa.int32()),
    "big": pa.array([2**53 + 1, None, -5], pa.int64()),
    "ratio": pa.array([0.5, None, -1.25], pa.float32()),
    "amount": pa.array([decimal.Decimal("10.25"), None, decimal.Decimal("-0.50")], pa.decimal128(10, 2)),
    "name": pa.array(["Zoë", "", None], pa.string()),
    "flag": pa.array([True, None, False]),
    "day": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1970, 1, 1)], pa.date32()),
    "at": pa.array([datetime.datetime(2024, 1, 1, 12, 0, 0, 123456), None, datetime.datetime(2000, 1, 1)], pa.timestamp("us")),
    "at_utc": pa.array([datetime.datetime(2024, 1, 1, 12, 0, tzinfo=utc), None, None], pa.timestamp("ms", tz="UTC")),
    "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
    "info": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}], pa.struct([("a", pa.int64()), ("b", pa.string())])),
})
pq.write_table(t, sys.argv[1], row_group_size=2)
"#;

const DUCKDB: &str = r#"
import sys, duckdb
duckdb.sql(f"""COPY (
    SELECT i AS id, 'row ' || i AS label, DATE '2024-01-01' + CAST(i AS INTEGER) AS day,
           TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_hours(i) AS at,
           [i, i + 1] AS pair, {{'k': i}} AS obj, CAST(i AS DECIMAL(18, 4)) AS amount
    FROM range(1, 1001) t(i)
) TO '{sys.argv[1]}' (FORMAT parquet, ROW_GROUP_SIZE 300)""")
"#;

/// Files written by pyarrow (every common type, nested ones, row groups of 2) and DuckDB load
/// into Postgres, typed from their schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_written_by_pyarrow_and_duckdb_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let arrow_file = dir.path().join("pyarrow.parquet");
    let duck_file = dir.path().join("duckdb.parquet");
    python(PYARROW, &[&arrow_file.display().to_string()]);
    python(DUCKDB, &[&duck_file.display().to_string()]);
    let store = TestStore::new(StoreKind::S3);
    let s = crate::stores::stores(&store);
    let mut w = s
        .create(&crate::stores::loc(&store.at("in/duck.parquet")))
        .await
        .expect("create");
    w.write(std::fs::read(&duck_file).expect("duckdb file"))
        .await
        .expect("write");
    w.commit().await.expect("commit");
    let meta = TestDb::sqlite().await;
    let data = TestDataDb::new(DataBackend::Postgres).await;
    let dag = format!(
        r#"id: interop
tasks:
  arrow:
    kind: load
    source: {{file: "{arrow}"}}
    target: {{conn: wh, table: from_arrow}}
  duck:
    kind: load
    source: {{file: "{duck}"}}
    target: {{conn: wh, table: from_duck}}
"#,
        arrow = arrow_file.display(),
        duck = store.at("in/duck.parquet"),
    );
    let mut engine = engine_on(&store, &data, &meta, &[("interop.yaml", &dag)]).await;
    let run = engine.trigger("interop", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    for ti in engine.tasks(&run.run_id).await {
        assert_eq!(
            ti.state,
            TaskState::Success,
            "{}: {:?}",
            ti.task_id,
            ti.error
        );
    }
    let types = query_text(
        &data,
        "select data_type from information_schema.columns where table_name = 'from_arrow' order by ordinal_position",
    )
    .await;
    assert_eq!(
        types
            .iter()
            .map(|r| r[0].clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "integer",
            "bigint",
            "double precision",
            "numeric",
            "text",
            "boolean",
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
            "jsonb",
            "jsonb",
        ]
    );
    let rows = query_text(
        &data,
        "select id, big, ratio, amount, name, flag, day, at, to_char(at_utc at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'), tags, info from from_arrow order by id",
    )
    .await;
    let some = |v: &str| Some(v.to_owned());
    assert_eq!(
        rows,
        vec![
            vec![
                some("1"),
                some("9007199254740993"),
                some("0.5"),
                some("10.25"),
                some("Zoë"),
                some("t"),
                some("2024-02-29"),
                some("2024-01-01 12:00:00.123456"),
                some("2024-01-01 12:00:00"),
                some("[1, 2]"),
                some(r#"{"a": 1, "b": "x"}"#),
            ],
            vec![
                some("2"),
                None,
                None,
                None,
                some(""),
                None,
                None,
                None,
                None,
                some("[]"),
                None
            ],
            vec![
                some("3"),
                some("-5"),
                some("-1.25"),
                some("-0.50"),
                None,
                some("f"),
                some("1970-01-01"),
                some("2000-01-01 00:00:00"),
                None,
                None,
                some(r#"{"a": null, "b": "y"}"#),
            ],
        ]
    );
    let duck = query_text(
        &data,
        "select count(*), sum(id), max(label), min(day), max(amount), to_char(max(at) at time zone 'UTC', 'YYYY-MM-DD HH24:MI'), (select pair::text || ' ' || obj::text from from_duck where id = 1000) from from_duck",
    )
    .await;
    assert_eq!(
        duck,
        vec![vec![
            some("1000"),
            some("500500"),
            some("row 999"),
            some("2024-01-02"),
            some("1000.0000"),
            some("2024-02-11 16:00"),
            some(r#"[1000, 1001] {"k": 1000}"#),
        ]]
    );
}
