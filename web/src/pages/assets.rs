//! The assets pages: every asset with its last update and freshness, the lineage graph of
//! DAGs and assets, and one asset's page (who writes and reads it, rows over time, the runs
//! that touched it, intervals made stale by an upstream rewrite).

use super::*;

fn asset_href(key: &str) -> String {
    format!("/assets/{}", url_segment(key))
}

/// What a DAG declares of an asset (`assets:` in its file), if a current DAG does.
async fn declared(
    state: &AppState,
    key: &str,
) -> Result<Option<(String, weir_model::asset::AssetSpec)>, WebError> {
    for row in state.store.list_dags().await? {
        if row.removed_at.is_some() {
            continue;
        }
        let version = state.versions.get(&state.store, row.version_id).await?;
        if let Some(spec) = version.dag.spec.assets.get(key) {
            return Ok(Some((row.dag_id, spec.clone())));
        }
    }
    Ok(None)
}

pub(super) async fn assets_page(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let caller = caller_or_login!(state, headers, "/assets");
    let now = state.clock.now();
    let (assets, freshness, edges) = tokio::try_join!(
        state.store.assets(),
        state.store.freshness(),
        state.store.lineage(weir_store::LineageOf::All)
    )?;
    let rows: Vec<Value> = assets
        .iter()
        .map(|a| {
            let fresh = freshness.iter().find(|f| f.asset_key == a.asset_key);
            let by = |access: &str| -> Vec<&str> {
                edges
                    .iter()
                    .filter(|e| e.asset_key == a.asset_key && e.access == access)
                    .map(|e| e.dag_id.as_str())
                    .collect()
            };
            serde_json::json!({
                "key": a.asset_key,
                "href": asset_href(&a.asset_key),
                "last_update": a.last_update.map(rfc),
                "ago": a.last_update.map(|t| view::ago(now, t)),
                "updates": a.updates,
                "state": match fresh {
                    Some(f) if f.stale_since.is_some() => "stale",
                    Some(_) => "fresh",
                    None => "",
                },
                "stale_since": fresh.and_then(|f| f.stale_since).map(rfc),
                "writers": by("write"),
                "readers": by("read"),
                "triggers": by("trigger"),
            })
        })
        .collect();
    let svg = graph::lineage_svg(&edges, &|is_dag, name| {
        if is_dag {
            format!("/dags/{}", url_segment(name))
        } else {
            asset_href(name)
        }
    });
    let mut ctx = tera::Context::new();
    ctx.insert("assets", &rows);
    ctx.insert("svg", &svg);
    ctx.insert("has_lineage", &!edges.is_empty());
    render(&state, Some(&caller), "assets.html", ctx)
}

pub(super) async fn asset_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> PageResult {
    let caller = caller_or_login!(state, headers, &asset_href(&key));
    let now = state.clock.now();
    let (events, stale, freshness, edges) = tokio::try_join!(
        state.store.asset_events(Some(&key), 200),
        state.store.stale_intervals(&key),
        state.store.freshness(),
        state.store.lineage(weir_store::LineageOf::Asset(&key))
    )?;
    // An asset's row is written with its first event: no event, no asset.
    if events.is_empty() {
        return Err(WebError::not_found(format!(
            "asset `{key}`: weir has not seen it (`weir assets list` shows those it has)"
        ))
        .into());
    }
    let fresh = freshness.iter().find(|f| f.asset_key == key);
    let declared = declared(&state, &key).await?;
    let mut points: Vec<(chrono::DateTime<chrono::Utc>, i64)> = events
        .iter()
        .filter(|e| e.access == "write")
        .filter_map(|e| e.rows_written.map(|r| (e.created_at, r)))
        .take(40)
        .collect();
    points.reverse();
    let rows: Vec<Value> = events
        .iter()
        .take(50)
        .map(|e| {
            serde_json::json!({
                "at": rfc(e.created_at),
                "access": e.access,
                "source": e.source,
                "dag_id": e.dag_id,
                "run_id": e.run_id,
                "run_href": e.run_id.as_deref().map(|r| format!("/runs/{}", url_segment(r))),
                "task_id": e.task_id,
                "try_number": e.try_number,
                "interval": e.interval_start.map(|s| format!("{} .. {}", rfc(s), e.interval_end.map(rfc).unwrap_or_default())),
                "rows": e.rows_written,
                "inserted": e.rows_inserted,
                "updated": e.rows_updated,
                "bytes": e.bytes,
                "files": e.files,
            })
        })
        .collect();
    let dags = |access: &str| -> Vec<String> {
        edges
            .iter()
            .filter(|e| e.access == access)
            .map(|e| e.dag_id.clone())
            .collect()
    };
    let stale: Vec<Value> = stale
        .iter()
        .map(|s| {
            serde_json::json!({
                "interval_start": rfc(s.interval_start),
                "interval_end": s.interval_end.map(rfc),
                "written_at": rfc(s.written_at),
                "upstream": s.upstream,
                "upstream_href": asset_href(&s.upstream),
                "upstream_at": rfc(s.upstream_at),
            })
        })
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("key", &key);
    ctx.insert(
        "description",
        &declared.as_ref().and_then(|(_, s)| s.description.clone()),
    );
    ctx.insert("declared_by", &declared.as_ref().map(|(d, _)| d.clone()));
    ctx.insert(
        "freshness",
        &declared
            .as_ref()
            .and_then(|(_, s)| s.freshness)
            .map(|f| f.to_string()),
    );
    ctx.insert(
        "state",
        &fresh.map(|f| {
            if f.stale_since.is_some() {
                "stale"
            } else {
                "fresh"
            }
        }),
    );
    ctx.insert("stale_since", &fresh.and_then(|f| f.stale_since).map(rfc));
    ctx.insert(
        "last_update",
        &events
            .iter()
            .find(|e| e.access == "write")
            .map(|e| view::ago(now, e.created_at)),
    );
    ctx.insert("writers", &dags("write"));
    ctx.insert("readers", &dags("read"));
    ctx.insert("triggers", &dags("trigger"));
    ctx.insert(
        "chart",
        &(!points.is_empty()).then(|| graph::rows_chart(&points)),
    );
    ctx.insert("events", &rows);
    ctx.insert("stale", &stale);
    render(&state, Some(&caller), "asset.html", ctx)
}
