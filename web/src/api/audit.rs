//! The audit log (admins).

use super::*;

#[utoipa::path(get, path = "/audit", tag = "admin", params(Paging),
    responses((status = 200, description = "OK", body = Vec<AuditEntry>), AdminRefusals))]
/// The audit log, newest first (admins only).
pub(super) async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<Response, WebError> {
    caller.require(Role::Admin)?;
    // One more than asked tells whether there is a next page.
    let rows = state
        .store
        .audit_log(i64::MAX, paging.offset(), paging.limit() + 1)
        .await?;
    let (items, more) = paging.split(rows, AuditEntry::from);
    Ok(page(items, more, "/audit", &paging, ""))
}

/// An audit log entry.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    pub(crate) id: i64,
    /// RFC 3339 UTC.
    pub(crate) at: String,
    pub(crate) user: String,
    pub(crate) action: String,
    pub(crate) target: String,
    #[schema(value_type = Object)]
    pub(crate) detail: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> AuditEntry {
        AuditEntry {
            id: r.id,
            at: view::rfc(r.at),
            user: r.user_name,
            action: r.action,
            target: r.target,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::String(r.detail)),
        }
    }
}
