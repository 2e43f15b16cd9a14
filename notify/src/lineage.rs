//! Posting OpenLineage events from the outbox to the configured endpoint (Marquez, DataHub,
//! OpenMetadata): in order, each at least once, retried with backoff for a day; an endpoint that
//! is down delays lineage, never a run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_store::{ClaimedLineage, Store, StoreError};

/// `[openlineage]`: where events go.
#[derive(Debug, Clone)]
pub struct LineageEndpoint {
    /// The URL events are posted to (`…/api/v1/lineage`).
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
}

/// Attempts before an event is given up (about a day of retries).
pub const LINEAGE_ATTEMPTS: i32 = 50;
const BATCH: i64 = 50;
const LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(15);

/// Drains the lineage outbox.
pub struct LineageSender {
    store: Store,
    clock: Arc<dyn Clock>,
    endpoint: LineageEndpoint,
    http: std::result::Result<reqwest::Client, String>,
}

impl LineageSender {
    /// A sender to `endpoint`.
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>, endpoint: LineageEndpoint) -> LineageSender {
        LineageSender {
            store,
            clock,
            endpoint,
            http: crate::dispatch::http_client(),
        }
    }

    /// Runs until `shutdown`, draining every two seconds.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "reading the lineage outbox failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Sends what is due, in order, until nothing is or a send fails (the rest wait, so the
    /// endpoint sees a try's START before its COMPLETE); returns how many were sent.
    ///
    /// # Errors
    /// Store failures.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut sent = 0;
        loop {
            let lease = chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::MAX);
            let batch = self
                .store
                .claim_lineage(self.clock.now(), lease, BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(sent);
            }
            for (i, row) in batch.iter().enumerate() {
                match self.send(row).await {
                    Ok(()) => {
                        self.store.lineage_sent(row.id, self.clock.now()).await?;
                        sent += 1;
                    }
                    Err(error) => {
                        let now = self.clock.now();
                        let retry = retry_at(row.attempts, now);
                        tracing::warn!(attempt = row.attempts, error = %error, retry_at = ?retry, "OpenLineage event not sent");
                        self.store.lineage_failed(row.id, &error, retry).await?;
                        // The rest of the batch waits for this one: hand their leases back.
                        for later in &batch[i + 1..] {
                            self.store
                                .lineage_failed(
                                    later.id,
                                    "waiting for an earlier event",
                                    Some(retry.unwrap_or(now)),
                                )
                                .await?;
                        }
                        return Ok(sent);
                    }
                }
            }
        }
    }

    async fn send(&self, row: &ClaimedLineage) -> std::result::Result<(), String> {
        let http = self.http.as_ref().map_err(Clone::clone)?;
        let mut req = http
            .post(&self.endpoint.url)
            .timeout(TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(row.payload.clone());
        if let Some(key) = &self.endpoint.api_key {
            req = req.bearer_auth(key);
        }
        // The URL may carry a token: keep it out of the error.
        let res = req
            .send()
            .await
            .map_err(|e| format!("openlineage: {}", e.without_url()))?;
        let status = res.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("openlineage: the endpoint answered {status}"))
        }
    }
}

/// When to try again after `attempts` failures (`None`: give up).
fn retry_at(attempts: i32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wait = match attempts {
        ..=1 => 10,
        2 => 60,
        3 => 300,
        a if a < LINEAGE_ATTEMPTS => 1800,
        _ => return None,
    };
    Some(now + chrono::Duration::seconds(wait))
}
