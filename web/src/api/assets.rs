//! Asset routes: the assets weir has seen, their events, and updates recorded from outside
//! (an external system saying "the table landed").

use super::*;

/// An update of an asset, recorded from outside weir.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAssetEvent {
    /// The asset: `connection.schema.table` or a location URL.
    asset: String,
    /// The data interval it covers (RFC 3339), with `interval_end`.
    interval_start: Option<chrono::DateTime<chrono::Utc>>,
    /// The data interval's end.
    interval_end: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows written.
    rows: Option<i64>,
    /// Rows inserted.
    inserted: Option<i64>,
    /// Rows updated.
    updated: Option<i64>,
    /// Bytes written.
    bytes: Option<i64>,
    /// Files written.
    files: Option<i64>,
    /// Anything else (a JSON object), kept with the event.
    #[schema(value_type = Object)]
    details: Option<serde_json::Value>,
}

/// The recorded event.
#[derive(Serialize, ToSchema)]
pub(super) struct EventRecorded {
    event_id: i64,
}

#[utoipa::path(post, path = "/assets/events", tag = "assets", request_body = NewAssetEvent,
    responses((status = 201, description = "Recorded", body = EventRecorded), WriteRefusals))]
/// Records an update of an asset (operators): the DAGs scheduled on it run as after a task's
/// update.
pub(super) async fn record_asset_event(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewAssetEvent>,
) -> Result<Response, WebError> {
    operator(&caller, &headers)?;
    let interval = match (body.interval_start, body.interval_end) {
        (Some(s), Some(e)) => Some((s, e)),
        (None, None) => None,
        _ => {
            return Err(WebError::bad_request(
                "`interval_start` and `interval_end` go together",
            ));
        }
    };
    let event = weir_store::ExternalEvent {
        key: body.asset,
        source: "api",
        interval,
        counts: weir_store::AssetCounts {
            rows: body.rows,
            inserted: body.inserted,
            updated: body.updated,
            bytes: body.bytes,
            files: body.files,
        },
        details: body.details,
    };
    let id = weir_ops::operator::touch_asset(
        &state.store,
        weir_ops::operator::Actor(&caller.name),
        event,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(EventRecorded { event_id: id })).into_response())
}

/// An asset and its latest update.
#[derive(Serialize, ToSchema)]
pub(super) struct AssetInfo {
    asset: String,
    /// RFC 3339 UTC.
    first_seen: String,
    /// RFC 3339 UTC, if it was ever updated.
    last_update: Option<String>,
    updates: i64,
}

#[utoipa::path(get, path = "/assets", tag = "assets", params(Paging),
    responses((status = 200, description = "OK", body = Vec<AssetInfo>), Unauthenticated))]
/// Every asset weir has seen, by key.
pub(super) async fn list_assets(
    State(state): State<AppState>,
    _caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, WebError> {
    let rows = state.store.assets().await?;
    let rows: Vec<_> = rows
        .into_iter()
        .skip(usize::try_from(paging.offset()).unwrap_or(usize::MAX))
        .take(usize::try_from(paging.limit() + 1).unwrap_or(usize::MAX))
        .collect();
    let (items, more) = paging.split(rows, |a| AssetInfo {
        asset: a.asset_key,
        first_seen: view::rfc(a.first_seen),
        last_update: a.last_update.map(view::rfc),
        updates: a.updates,
    });
    Ok(page(items, more, "/assets", &paging, ""))
}

/// Which events to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventQuery {
    /// Only this asset's.
    asset: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/assets/events", tag = "assets", params(EventQuery),
    responses((status = 200, description = "OK", body = Vec<Object>), Unauthenticated))]
/// Asset events (writes and reads), newest first.
pub(super) async fn list_asset_events(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<EventQuery>,
) -> Result<Json<Vec<serde_json::Value>>, WebError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.asset_events(q.asset.as_deref(), limit).await?;
    Ok(Json(
        rows.iter()
            .map(weir_store::AssetEventRow::to_json)
            .collect(),
    ))
}
