//! OpenLineage events of a try (spec 2-0-2): `START` when it starts, then `COMPLETE` or
//! `FAIL` with its input and output datasets (the assets it read and wrote) and their counts
//! (`outputStatistics`). A try is an OpenLineage run of the job `dag_id.task_id`, whose parent
//! is the DAG run (job `dag_id`). Datasets are named by OpenLineage's conventions where weir
//! knows them: `postgres://host:port` + `db.schema.table`, `mysql://host:port` + `db.table`,
//! `s3://bucket` + the key, `file` + the path.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weir_store::{Access, AssetRecord, RunRow, TaskInstanceRow};

use crate::conn::Connections;

/// The producer URI every event and facet names.
pub const PRODUCER: &str = "https://github.com/weir-orchestrator/weir";
const SPEC: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// A stable UUID for a name (the same try gets the same run id in each of its events).
fn uuid_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn facet(schema: &str) -> Value {
    json!({
        "_producer": PRODUCER,
        "_schemaURL": format!("https://openlineage.io/spec/facets/{schema}"),
    })
}

fn with(mut base: Value, fields: Value) -> Value {
    if let (Some(b), Some(f)) = (base.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// The event of a try's state: `START`, `COMPLETE` or `FAIL`.
#[allow(clippy::too_many_arguments)]
pub fn event(
    namespace: &str,
    event_type: &str,
    at: DateTime<Utc>,
    run: &RunRow,
    ti: &TaskInstanceRow,
    error: Option<&str>,
    assets: &[AssetRecord],
    conns: &Connections,
) -> String {
    let try_id = uuid_of(&[
        &run.run_id,
        &ti.task_id,
        &ti.map_index.to_string(),
        &ti.try_number.to_string(),
    ]);
    let mut run_facets = serde_json::Map::new();
    run_facets.insert(
        "parent".into(),
        with(
            facet("1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"),
            json!({
                "run": {"runId": uuid_of(&[&run.run_id])},
                "job": {"namespace": namespace, "name": run.dag_id},
            }),
        ),
    );
    run_facets.insert(
        "nominalTime".into(),
        with(
            facet("1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet"),
            json!({
                "nominalStartTime": rfc(run.data_interval_start),
                "nominalEndTime": rfc(run.data_interval_end),
            }),
        ),
    );
    if let Some(e) = error {
        run_facets.insert(
            "errorMessage".into(),
            with(
                facet("1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"),
                json!({"message": e, "programmingLanguage": "weir"}),
            ),
        );
    }
    // A mapped instance's tries are runs of the task's job, told apart by their run ids.
    let job_name = format!("{}.{}", run.dag_id, ti.task_id);
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for a in assets {
        let (ns, name) = dataset(&a.key, conns);
        match a.access {
            Access::Read => inputs.push(json!({"namespace": ns, "name": name})),
            Access::Write => {
                let mut stats = serde_json::Map::new();
                if let Some(n) = a.counts.rows {
                    stats.insert("rowCount".into(), n.into());
                }
                if let Some(n) = a.counts.bytes {
                    stats.insert("size".into(), n.into());
                }
                if let Some(n) = a.counts.files {
                    stats.insert("fileCount".into(), n.into());
                }
                let mut out = json!({"namespace": ns, "name": name});
                if !stats.is_empty() {
                    out["outputFacets"] = json!({
                        "outputStatistics": with(
                            facet("1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet"),
                            Value::Object(stats),
                        )
                    });
                }
                outputs.push(out);
            }
        }
    }
    let doc = json!({
        "eventType": event_type,
        "eventTime": rfc(at),
        "producer": PRODUCER,
        "schemaURL": SPEC,
        "run": {"runId": try_id, "facets": run_facets},
        "job": {
            "namespace": namespace,
            "name": job_name,
            "facets": {
                "jobType": with(
                    facet("2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"),
                    json!({"processingType": "BATCH", "integration": "WEIR", "jobType": "TASK"}),
                )
            }
        },
        "inputs": inputs,
        "outputs": outputs,
    });
    doc.to_string()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An asset key as an OpenLineage dataset: `(namespace, name)`.
fn dataset(key: &str, conns: &Connections) -> (String, String) {
    if let Some((scheme, rest)) = key.split_once("://") {
        if scheme == "file" {
            return ("file".into(), rest.to_owned());
        }
        let (root, path) = rest.split_once('/').unwrap_or((rest, ""));
        return (format!("{scheme}://{root}"), path.to_owned());
    }
    let mut parts = key.splitn(3, '.');
    let (Some(conn), Some(schema), Some(table)) = (parts.next(), parts.next(), parts.next()) else {
        return ("weir".into(), key.to_owned());
    };
    match conns.url(conn).and_then(|u| url::Url::parse(u).ok()) {
        Some(u) if u.scheme().starts_with("postgres") => {
            let db = u.path().trim_start_matches('/');
            (
                format!(
                    "postgres://{}:{}",
                    u.host_str().unwrap_or("localhost"),
                    u.port().unwrap_or(5432)
                ),
                format!("{db}.{schema}.{table}"),
            )
        }
        Some(u) if matches!(u.scheme(), "mysql" | "mariadb") => (
            format!(
                "mysql://{}:{}",
                u.host_str().unwrap_or("localhost"),
                u.port().unwrap_or(3306)
            ),
            format!("{schema}.{table}"),
        ),
        Some(u) if u.scheme() == "sqlite" => {
            let file = u
                .as_str()
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            ("sqlite".into(), format!("{file}.{table}"))
        }
        _ => (format!("weir://{conn}"), format!("{schema}.{table}")),
    }
}
