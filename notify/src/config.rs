//! What the configuration says about notifiers: each one's kind, address and own message
//! templates, and the SMTP relay.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
    pub(crate) fn message(&self) -> &MessageTemplate {
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
