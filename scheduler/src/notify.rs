//! Sends the notifications of the outbox (`weir_notifications`): email over SMTP and JSON
//! webhooks (a Slack-compatible `text` field, the facts under `weir`).
//!
//! Rows are written by whoever changes the state (in the same transaction); any number of
//! [`Dispatcher`]s drain them, each claiming a batch. A send that fails is logged and retried
//! with backoff, up to [`MAX_ATTEMPTS`]; it never touches the run. Delivery is at least once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_model::TaskState;
use weir_model::clock::Clock;
use weir_store::{ClaimedNotification, Notice, NoticeEvent, Store, TaskInstanceRow};

use crate::error::Result;

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

/// A configured notifier.
#[derive(Debug, Clone)]
pub enum Notifier {
    /// Mail to these addresses through the configured SMTP relay.
    Email {
        /// Recipients.
        to: Vec<String>,
        /// Its own subject and body, if any.
        message: MessageTemplate,
    },
    /// A JSON `POST` to this URL.
    Webhook {
        /// The URL (a secret: Slack's carry the token).
        url: String,
        /// Its own subject and body (the `text` field), if any.
        message: MessageTemplate,
    },
}

impl Notifier {
    fn message(&self) -> &MessageTemplate {
        match self {
            Notifier::Email { message, .. } | Notifier::Webhook { message, .. } => message,
        }
    }
}

/// A notifier's own subject and body: tera templates over the notification's context (see
/// docs/notifications.md); `None`: weir's default.
#[derive(Debug, Clone, Default)]
pub struct MessageTemplate {
    /// The subject (an email's, the first line of a webhook's `text`).
    pub subject: Option<String>,
    /// The body.
    pub body: Option<String>,
}

/// How the SMTP relay is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with `STARTTLS` (required).
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// No encryption (local relays only).
    None,
}

/// The SMTP relay.
#[derive(Debug, Clone)]
pub struct Smtp {
    /// Host name (also the name its certificate must carry).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Encryption.
    pub tls: SmtpTls,
    /// Sender address.
    pub from: String,
    /// Login, when the relay wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// A PEM file of a private CA to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
}

/// Everything the dispatcher needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, Notifier>,
    /// The relay for email notifiers.
    pub smtp: Option<Smtp>,
    /// The web UI's address, for links in messages (`http://host:port`, no trailing slash).
    pub base_url: String,
}

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

fn http_client() -> std::result::Result<reqwest::Client, String> {
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

/// A notice as words: a one-line title and a body of `field: value` lines, the run's load
/// counts and a link; or the notifier's own templates over the same facts.
struct Rendered {
    title: String,
    body: String,
    url: String,
    /// The run's tasks, for the webhook's JSON.
    tasks: serde_json::Value,
}

impl Rendered {
    fn new(
        n: &Notice,
        base_url: &str,
        tasks: &[TaskInstanceRow],
        template: &MessageTemplate,
    ) -> Rendered {
        let task = n.task_id.as_deref().map(|t| match n.map_index {
            Some(i) => format!("{t}[{i}]"),
            None => t.to_owned(),
        });
        let tries = match (n.try_number, n.max_tries) {
            (Some(t), Some(m)) => format!("try {t} of {m}"),
            _ => "before its first try".to_owned(),
        };
        let title = match (n.event, &task) {
            (NoticeEvent::RunFailed, _) => format!("weir: {} failed ({})", n.dag_id, n.ds),
            (NoticeEvent::RunSucceeded, _) => format!("weir: {} succeeded ({})", n.dag_id, n.ds),
            (NoticeEvent::TaskFailed, Some(t)) => {
                format!("weir: task {t} of {} failed, {tries} ({})", n.dag_id, n.ds)
            }
            (NoticeEvent::TaskRetry, Some(t)) => {
                format!(
                    "weir: task {t} of {} will retry after {tries} ({})",
                    n.dag_id, n.ds
                )
            }
            (_, None) => format!("weir: {} {} ({})", n.dag_id, n.event.as_str(), n.ds),
        };
        let path = match (&n.task_id, n.try_number) {
            (Some(t), Some(try_number)) => format!(
                "/runs/{}/tasks/{}?try={try_number}",
                weir_model::text::url_segment(&n.run_id),
                weir_model::text::url_segment(t)
            ),
            _ => format!("/runs/{}", weir_model::text::url_segment(&n.run_id)),
        };
        let url = format!("{base_url}{path}");
        let loads = load_counts(tasks);
        let mut body = String::new();
        let _ = writeln!(body, "DAG:   {}", n.dag_id);
        let _ = writeln!(body, "Run:   {}", n.run_id);
        let _ = writeln!(body, "ds:    {}", n.ds);
        if let Some(t) = &task {
            let _ = writeln!(body, "Task:  {t} ({tries})");
        }
        let _ = writeln!(
            body,
            "When:  {}",
            n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(e) = &n.error {
            let _ = writeln!(body, "Error: {}", e.replace('\n', "\n       "));
        }
        if !loads.is_empty() {
            let _ = writeln!(body, "Loads:");
            for l in &loads {
                let _ = writeln!(body, "  {}", l.line);
            }
        }
        let _ = writeln!(body, "Log:   {url}");
        let task_facts = task_facts(tasks);
        let mut rendered = Rendered {
            title,
            body,
            url,
            tasks: task_facts,
        };
        if template.subject.is_some() || template.body.is_some() {
            let context = rendered.context(n, &loads);
            let render = |text: &str| weir_model::template::render_json(text, &context);
            // A template that fails to render must not cost the message: weir's own goes, saying
            // why.
            let mut broken = Vec::new();
            if let Some(subject) = &template.subject {
                match render(subject) {
                    // A subject is one line.
                    Ok(text) => {
                        rendered.title = text
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ");
                    }
                    Err(e) => broken.push(format!("subject: {e}")),
                }
            }
            if let Some(body) = &template.body {
                match render(body) {
                    Ok(text) => rendered.body = text,
                    Err(e) => broken.push(format!("body: {e}")),
                }
            }
            for b in broken {
                tracing::warn!(run_id = %n.run_id, error = %b, "a notifier's template failed; sending the default");
                let _ = writeln!(
                    rendered.body,
                    "(The notifier's {b}; this part is weir's default.)"
                );
            }
        }
        rendered
    }

    /// What a notifier's templates read: the notice's facts, `url`, the run's `tasks` (state,
    /// error, outputs; a mapped task's `outputs` a list), `loads` (each load's counts and
    /// totals), `failed` (the failed tasks) and the default `title` and `body`.
    fn context(&self, n: &Notice, loads: &[LoadLine]) -> serde_json::Value {
        let failed: Vec<serde_json::Value> = self
            .tasks
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(id, t)| {
                let instances = t["instances"].as_array().cloned().unwrap_or_default();
                instances
                    .into_iter()
                    .filter(|i| i["state"] == "failed" || i["state"] == "upstream_failed")
                    .map(move |i| {
                        serde_json::json!({"task_id": id, "map_index": i["map_index"], "state": i["state"], "error": i["error"]})
                    })
            })
            .collect();
        let sum = |key: &str| -> u64 {
            loads
                .iter()
                .map(|l| l.counts.get(key).copied().unwrap_or(0))
                .sum()
        };
        let mut context = self.facts(n);
        context.extend(serde_json::json!({
            "failed": failed,
            "loads": loads.iter().map(|l| serde_json::json!({"task_id": l.task, "counts": l.counts})).collect::<Vec<_>>(),
            "totals": {
                "rows_read": sum("rows_read"),
                "rows_loaded": sum("rows_loaded"),
                "rows_inserted": sum("rows_inserted"),
                "rows_updated": sum("rows_updated"),
                "rows_unchanged": sum("rows_unchanged"),
                "rows_rejected": sum("rows_rejected"),
            },
            "title": self.title,
            "body": self.body,
        }).as_object().cloned().unwrap_or_default());
        serde_json::Value::Object(context)
    }

    /// The event's facts, the link and the run's tasks (the webhook's `weir` object).
    fn facts(&self, n: &Notice) -> serde_json::Map<String, serde_json::Value> {
        let facts = serde_json::json!({
            "event": n.event.as_str(),
            "dag_id": n.dag_id,
            "run_id": n.run_id,
            "ds": n.ds,
            "logical_date": n.logical_date,
            "task_id": n.task_id,
            "map_index": n.map_index,
            "try_number": n.try_number,
            "max_tries": n.max_tries,
            "error": n.error,
            "at": n.at,
            "url": self.url,
            "tasks": self.tasks,
        });
        facts.as_object().cloned().unwrap_or_default()
    }

    /// The webhook's JSON: Slack's `text`, and the facts under `weir`.
    fn webhook_body(&self, n: &Notice) -> serde_json::Value {
        serde_json::json!({
            "text": format!("{}\n{}", self.title, self.body.trim_end()),
            "weir": self.facts(n),
        })
    }
}

/// A load's counts, and the line the default body gives it.
struct LoadLine {
    task: String,
    counts: BTreeMap<String, u64>,
    line: String,
}

/// The counts of every task of the run that loaded rows (outputs with `rows_loaded`).
fn load_counts(tasks: &[TaskInstanceRow]) -> Vec<LoadLine> {
    let mut out = Vec::new();
    for t in tasks {
        let Some(outputs) = t.outputs.as_ref().and_then(|o| o.as_object()) else {
            continue;
        };
        if !outputs.contains_key("rows_loaded") {
            continue;
        }
        let counts: BTreeMap<String, u64> = outputs
            .iter()
            .filter(|(k, _)| k.starts_with("rows_"))
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
        let name = if t.map_index >= 0 {
            format!("{}[{}]", t.task_id, t.map_index)
        } else {
            t.task_id.clone()
        };
        let n = |k: &str| counts.get(k).copied().unwrap_or(0);
        let line = format!(
            "{name}: {} inserted, {} updated, {} unchanged, {} rejected (of {} read)",
            n("rows_inserted"),
            n("rows_updated"),
            n("rows_unchanged"),
            n("rows_rejected"),
            n("rows_read")
        );
        out.push(LoadLine {
            task: name,
            counts,
            line,
        });
    }
    out
}

/// The run's tasks by id: `state`, `error`, `try_number` and `outputs` of an unmapped task; a
/// mapped task's `outputs` is the list of its instances' (in map-index order) and its `state`
/// the worst of theirs. Every task also lists its `instances`.
fn task_facts(tasks: &[TaskInstanceRow]) -> serde_json::Value {
    let mut by_id: BTreeMap<&str, Vec<&TaskInstanceRow>> = BTreeMap::new();
    for t in tasks {
        by_id.entry(t.task_id.as_str()).or_default().push(t);
    }
    let mut out = serde_json::Map::new();
    for (id, mut list) in by_id {
        list.sort_by_key(|t| t.map_index);
        let instance = |t: &TaskInstanceRow| {
            serde_json::json!({
                "map_index": t.map_index,
                "state": t.state.as_str(),
                "error": t.error,
                "try_number": t.try_number,
                "outputs": t.outputs.clone().unwrap_or_else(|| serde_json::json!({})),
            })
        };
        let instances: Vec<serde_json::Value> = list.iter().map(|t| instance(t)).collect();
        let entry = match list.as_slice() {
            [one] if one.map_index < 0 => {
                let mut e = instance(one);
                e["instances"] = serde_json::Value::Array(instances);
                e
            }
            _ => {
                let worst = list
                    .iter()
                    .map(|t| t.state)
                    .find(|s| *s != TaskState::Success)
                    .unwrap_or(TaskState::Success);
                serde_json::json!({
                    "state": worst.as_str(),
                    "outputs": instances.iter().map(|i| i["outputs"].clone()).collect::<Vec<_>>(),
                    "instances": instances,
                })
            }
        };
        out.insert(id.to_owned(), entry);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: NoticeEvent) -> Notice {
        Notice {
            event,
            dag_id: "hr".into(),
            run_id: "hr__2024-01-02T00:00:00Z".into(),
            logical_date: "2024-01-02T00:00:00Z".parse().unwrap(),
            ds: "2024-01-02".into(),
            task_id: Some("load".into()),
            map_index: None,
            try_number: Some(2),
            max_tries: Some(3),
            error: Some("exit code 1\nsecond line".into()),
            at: "2024-01-02T06:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_retry_names_the_task_try_error_and_log_link() {
        let r = Rendered::new(
            &notice(NoticeEvent::TaskRetry),
            "http://weir.example:8080",
            &[],
            &MessageTemplate::default(),
        );
        assert_eq!(
            r.title,
            "weir: task load of hr will retry after try 2 of 3 (2024-01-02)"
        );
        assert!(
            r.body.contains("Error: exit code 1\n       second line\n"),
            "{}",
            r.body
        );
        assert_eq!(
            r.url,
            "http://weir.example:8080/runs/hr__2024-01-02T00%3A00%3A00Z/tasks/load?try=2"
        );
        let body = r.webhook_body(&notice(NoticeEvent::TaskRetry));
        assert_eq!(body["weir"]["event"], "task_retry");
        assert!(body["text"].as_str().unwrap().starts_with(&r.title));
    }

    #[test]
    fn a_task_that_failed_before_running_says_so() {
        let mut n = notice(NoticeEvent::TaskFailed);
        n.try_number = None;
        n.map_index = Some(4);
        let r = Rendered::new(&n, "http://w", &[], &MessageTemplate::default());
        assert_eq!(
            r.title,
            "weir: task load[4] of hr failed, before its first try (2024-01-02)"
        );
        assert_eq!(r.url, "http://w/runs/hr__2024-01-02T00%3A00%3A00Z");
    }

    #[test]
    fn backoff_grows_then_gives_up() {
        let now: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let waits: Vec<Option<i64>> = (1..=MAX_ATTEMPTS)
            .map(|a| retry_at(a, now).map(|t| (t - now).num_seconds()))
            .collect();
        assert_eq!(waits, [Some(10), Some(60), Some(300), Some(1800), None]);
    }
}
