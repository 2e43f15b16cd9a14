//! Notifications, in one place: the rules that say which notices a state change writes to the
//! outbox, and their delivery. The outbox itself is a table of the store
//! (`weir_store::Notice`), written in the transaction of the change it tells about.
//!
//! # Layout
//! - [`rules`]: a try's end and a run's end → the notices to write;
//! - [`config`]: the notifiers and the SMTP relay the configuration names;
//! - [`dispatch`]: the [`Dispatcher`] that drains the outbox (claim, send, mark), with retries;
//! - `message`: a notice as a title, a body and a webhook's JSON.

pub mod config;
pub mod dispatch;
mod lineage;
mod message;
pub mod rules;

pub use config::{MessageTemplate, Notifier, NotifyConfig, Smtp, SmtpTls};
pub use dispatch::{Dispatcher, MAX_ATTEMPTS};
pub use lineage::{LINEAGE_ATTEMPTS, LineageEndpoint, LineageSender};
pub use rules::{run_notifications, try_notifications};
