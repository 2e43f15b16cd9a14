//! Sends the notifications of the outbox (`weir_notifications`): email over SMTP and JSON
//! webhooks (a Slack-compatible `text` field, the facts under `weir`).
//!
//! Rows are written by whoever changes the state (in the same transaction); any number of
//! [`Dispatcher`]s drain them, each claiming a batch. A send that fails is logged and retried
//! with backoff, up to [`MAX_ATTEMPTS`]; it never touches the run. Delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_model::clock::Clock;
use weir_store::{ClaimedNotification, Store, StoreError};

use crate::config::{Notifier, NotifyConfig, Smtp, SmtpTls};
use crate::message::Rendered;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attempts per notification before it is given up (and kept, with its last error).
pub const MAX_ATTEMPTS: i32 = 5;
/// Time limit of one send (connect included).
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a claim holds a row: past it, another dispatcher may send it again.
const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// Rows claimed at once.
const CLAIM_BATCH: i64 = 20;
/// The dispatcher looks at the outbox at least this often, wake-ups or not.
const POLL: Duration = Duration::from_secs(2);

/// Drains the outbox.
pub struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    cfg: NotifyConfig,
    mailer: std::result::Result<Option<AsyncSmtpTransport<Tokio1Executor>>, String>,
    http: std::result::Result<reqwest::Client, String>,
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher for `cfg`. A relay that cannot be set up (a bad CA file) is reported on
    /// every email it fails to send, not here: the scheduler still starts.
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>, cfg: NotifyConfig) -> Dispatcher {
        let mailer = cfg.smtp.as_ref().map(mailer).transpose();
        Dispatcher {
            store,
            clock,
            cfg,
            mailer,
            http: http_client(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A handle that makes the dispatcher look at the outbox now.
    #[must_use]
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Runs until `shutdown`: drains the outbox whenever woken, at least every few seconds.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.drain().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sent_or_failed = n, "notifications handled"),
                Err(e) => tracing::warn!(error = %e, "reading the notification outbox failed"),
            }
            let wait = match self.store.next_notification_due().await {
                Ok(Some(due)) => (due - self.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(POLL),
                _ => POLL,
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims and sends what is due, until nothing is; returns how many rows were handled.
    ///
    /// # Errors
    /// Store failures (a failed send is recorded on its row, not returned).
    pub async fn drain(&self) -> Result<usize> {
        let mut handled = 0;
        loop {
            let lease = chrono::Duration::from_std(CLAIM_LEASE).unwrap_or(chrono::Duration::MAX);
            let batch = self
                .store
                .claim_notifications(self.clock.now(), lease, CLAIM_BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(handled);
            }
            handled += batch.len();
            let sends = batch.iter().map(|n| async move { (n, self.send(n).await) });
            for (n, sent) in futures_util::future::join_all(sends).await {
                self.settle(n, sent).await?;
            }
        }
    }

    async fn settle(
        &self,
        n: &ClaimedNotification,
        sent: std::result::Result<(), String>,
    ) -> Result<()> {
        let now = self.clock.now();
        match sent {
            Ok(()) => {
                tracing::info!(notifier = %n.notifier, event = n.notice.event.as_str(), run_id = %n.notice.run_id, "notification sent");
                self.store.notification_sent(n.id, now).await?;
            }
            Err(error) => {
                let retry_at = retry_at(n.attempts, now);
                tracing::warn!(
                    notifier = %n.notifier,
                    event = n.notice.event.as_str(),
                    run_id = %n.notice.run_id,
                    attempt = n.attempts,
                    retry_at = ?retry_at,
                    error = %error,
                    "notification not sent"
                );
                self.store
                    .notification_failed(n.id, &error, retry_at)
                    .await?;
            }
        }
        Ok(())
    }

    async fn send(&self, n: &ClaimedNotification) -> std::result::Result<(), String> {
        let Some(notifier) = self.cfg.notifiers.get(&n.notifier) else {
            return Err(format!(
                "notifier `{}` is not in the configuration of this scheduler (add it under [notifiers])",
                n.notifier
            ));
        };
        // The run's tasks as the database has them now (a finished run's are final); without
        // them the message still goes, with the notice's own facts.
        let tasks = match self.store.task_instances(&n.notice.run_id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(run_id = %n.notice.run_id, error = %e, "reading the run's tasks for a notification failed");
                Vec::new()
            }
        };
        let message = Rendered::new(&n.notice, &self.cfg.base_url, &tasks, notifier.message());
        match notifier {
            Notifier::Webhook { url, .. } => {
                let http = self.http.as_ref().map_err(Clone::clone)?;
                let response = http
                    .post(url)
                    .timeout(SEND_TIMEOUT)
                    .json(&message.webhook_body(&n.notice))
                    .send()
                    .await
                    // The URL is a secret: keep it out of the error.
                    .map_err(|e| format!("webhook: {}", e.without_url()))?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("webhook answered {status}"))
                }
            }
            Notifier::Email { to, .. } => {
                // The relay that could not be set up (a bad CA file) is said on each send.
                let mailer = self.mailer.as_ref().map_err(Clone::clone)?;
                let (Some(smtp), Some(mailer)) = (&self.cfg.smtp, mailer) else {
                    return Err("email notifier without an [smtp] section".to_owned());
                };
                let mail = email(smtp, to, &message)?;
                mailer
                    .send(mail)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("smtp {}:{}: {e}", smtp.host, smtp.port))
            }
        }
    }
}

/// When to try a failed send again (`None`: give up).
fn retry_at(attempts: i32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wait = match attempts {
        ..=1 => 10,
        2 => 60,
        3 => 300,
        a if a < MAX_ATTEMPTS => 1800,
        _ => return None,
    };
    Some(now + chrono::Duration::seconds(wait))
}

pub(crate) fn http_client() -> std::result::Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; ring is the one in the tree.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(SEND_TIMEOUT)
        .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

fn mailer(smtp: &Smtp) -> std::result::Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = |smtp: &Smtp| -> std::result::Result<TlsParameters, String> {
        let mut params = TlsParameters::builder(smtp.host.clone());
        if let Some(path) = &smtp.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("reading [smtp] ca_file {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("[smtp] ca_file {}: {e}", path.display()))?;
            params = params.add_root_certificate(cert);
        }
        params
            .build_rustls()
            .map_err(|e| format!("setting up TLS for {}: {e}", smtp.host))
    };
    let tls = match smtp.tls {
        SmtpTls::Starttls => Tls::Required(tls(smtp)?),
        SmtpTls::Tls => Tls::Wrapper(tls(smtp)?),
        SmtpTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if let Some(user) = &smtp.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            smtp.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

fn email(smtp: &Smtp, to: &[String], message: &Rendered) -> std::result::Result<Message, String> {
    let mailbox = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| format!("address `{a}`: {e}"))
    };
    // A MIME message: MIME-Version, Content-Type text/plain with its charset, a
    // Content-Transfer-Encoding fit for the text, Date and Message-ID.
    let mut builder = Message::builder()
        .from(mailbox(&smtp.from)?)
        .subject(&message.title)
        .date_now()
        .message_id(None);
    for a in to {
        builder = builder.to(mailbox(a)?);
    }
    builder
        .singlepart(lettre::message::SinglePart::plain(message.body.clone()))
        .map_err(|e| format!("building the email: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn backoff_grows_then_gives_up() {
        let now: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let waits: Vec<Option<i64>> = (1..=MAX_ATTEMPTS)
            .map(|a| retry_at(a, now).map(|t| (t - now).num_seconds()))
            .collect();
        assert_eq!(waits, [Some(10), Some(60), Some(300), Some(1800), None]);
    }
}
