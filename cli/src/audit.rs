//! The audit log's entries for what an operator does with the CLI on the database directly
//! (remote mode goes through the API, which records them itself): who is the operating-system
//! user and host, since the CLI has no weir login.

use anyhow::Result;
use weir_store::Store;

/// Who did it, as the audit log shows it: `cli:USER@HOST`.
pub(crate) fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        format!("cli:{user}")
    } else {
        format!("cli:{user}@{host}")
    }
}

/// Records one CLI action in the audit log.
pub(crate) async fn record(
    store: &Store,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let now = crate::engine::clock().now();
    store.audit(&actor(), action, target, &detail, now).await?;
    Ok(())
}
