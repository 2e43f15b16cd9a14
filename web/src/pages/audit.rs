//! The audit log's page (admins).

use super::*;

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    pub(super) before: Option<i64>,
}

pub(super) async fn audit_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    const PER_PAGE: i64 = 100;
    let caller = caller_or_login!(state, headers, "/audit");
    caller.require(Role::Admin)?;
    let rows = state
        .store
        .audit_log(q.before.unwrap_or(i64::MAX), 0, PER_PAGE)
        .await?;
    let next = (rows.len() as i64 == PER_PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| serde_json::json!({"at": rfc(r.at), "user": r.user_name, "action": r.action, "target": r.target, "detail": r.detail}))
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("entries", &entries);
    ctx.insert("next", &next);
    render(&state, Some(&caller), "audit.html", ctx)
}
