//! `weir.toml` (SPEC §4): read from `--config` or the working directory, then overridden by
//! `WEIR_*` environment variables, every key of it (layered by `figment`: the defaults, the
//! file, the environment). `${VAR}` in a value is replaced from the environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) database_url: String,
    pub(crate) dags_folder: PathBuf,
    pub(crate) web: WebConfig,
    pub(crate) worker: WorkerConfig,
    pub(crate) scheduler: SchedulerConfig,
    pub(crate) retention: RetentionConfig,
    pub(crate) pools: BTreeMap<String, u32>,
    pub(crate) connections: BTreeMap<String, ConnectionConfig>,
    pub(crate) notifiers: BTreeMap<String, NotifierConfig>,
    pub(crate) smtp: Option<SmtpConfig>,
    /// Environment variables templates may read as `env.NAME`.
    pub(crate) template_env: Vec<String>,
    /// A weir web server the CLI asks instead of the database.
    pub(crate) remote: RemoteConfig,
    /// Where OpenLineage events go.
    pub(crate) openlineage: OpenLineageConfig,
    /// Where `python` and `dbt` steps' environments are built.
    pub(crate) python: PythonConfig,
    /// The file the configuration was read from (none: defaults and the environment only).
    #[serde(skip)]
    pub(crate) origin: Option<PathBuf>,
    /// The keys the environment set, each with its variable (`retention.keep_runs` →
    /// `WEIR_RETENTION_KEEP_RUNS`), for messages about their values.
    #[serde(skip)]
    pub(crate) set_by_env: BTreeMap<String, String>,
}

/// `[openlineage]`: an HTTP endpoint taking OpenLineage events (Marquez, DataHub,
/// OpenMetadata; docs/assets.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OpenLineageConfig {
    /// The endpoint (`http://marquez:5000/api/v1/lineage`); none: no events.
    pub(crate) url: Option<String>,
    /// The namespace of weir's jobs (default `weir`).
    pub(crate) namespace: String,
    /// Sent as `Authorization: Bearer …` when set (a secret); `${VAR}` is expanded.
    pub(crate) api_key: Option<String>,
}

impl Default for OpenLineageConfig {
    fn default() -> Self {
        OpenLineageConfig {
            url: None,
            namespace: "weir".to_owned(),
            api_key: None,
        }
    }
}

/// `[python]`: the environments of `python` and `dbt` steps (docs/configuration.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PythonConfig {
    /// Folder of the environments, uv's download cache and weir's own uv (default
    /// `.weir/python`, next to the configuration file).
    pub(crate) cache_dir: PathBuf,
    /// A uv program to build with instead of the pinned one weir installs.
    pub(crate) uv: Option<PathBuf>,
}

impl Default for PythonConfig {
    fn default() -> Self {
        PythonConfig {
            cache_dir: PathBuf::from(".weir/python"),
            uv: None,
        }
    }
}

impl PythonConfig {
    /// The worker's form.
    pub(crate) fn setup(&self) -> weir_worker::step::python::env::PythonSetup {
        weir_worker::step::python::env::PythonSetup {
            cache_dir: self.cache_dir.clone(),
            uv: self.uv.clone(),
        }
    }
}

/// `[remote]`: remote mode of the CLI (docs/web.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RemoteConfig {
    /// The web server's base URL (`WEIR_API_URL`).
    pub(crate) url: Option<String>,
    /// An API token (`WEIR_API_TOKEN`); `${VAR}` is expanded.
    pub(crate) token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://.weir/weir.db".to_owned(),
            dags_folder: PathBuf::from("dags"),
            web: WebConfig::default(),
            worker: WorkerConfig::default(),
            scheduler: SchedulerConfig::default(),
            retention: RetentionConfig::default(),
            pools: BTreeMap::new(),
            connections: BTreeMap::new(),
            notifiers: BTreeMap::new(),
            smtp: None,
            template_env: Vec::new(),
            remote: RemoteConfig::default(),
            openlineage: OpenLineageConfig::default(),
            python: PythonConfig::default(),
            origin: None,
            set_by_env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebConfig {
    pub(crate) bind: String,
    /// How users reach the web UI (links in notifications); default `http://<bind>`.
    pub(crate) base_url: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: "127.0.0.1:8080".to_owned(),
            base_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WorkerConfig {
    pub(crate) concurrency: u32,
    pub(crate) queues: Vec<String>,
    /// The worker's environment variables tasks see besides the base set (`PREFIX*` allowed).
    pub(crate) pass_env: Vec<String>,
    /// Environment variables whose values are secrets (`PREFIX*` allowed): masked in task
    /// logs and errors, whether a task reads them (`pass_env`) or a template (`template_env`).
    pub(crate) secret_env: Vec<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 8,
            queues: vec!["default".to_owned()],
            pass_env: Vec::new(),
            secret_env: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SchedulerConfig {
    pub(crate) heartbeat_timeout: String,
    /// The active scheduler's lease (Postgres): how long a cut-off leader keeps the role.
    pub(crate) leader_lease: String,
    /// Watch the dags folder for changes (else only the scan every second sees them).
    pub(crate) watch_dags: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_timeout: "30s".to_owned(),
            leader_lease: "5s".to_owned(),
            watch_dags: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetentionConfig {
    pub(crate) keep_runs: String,
    /// How long loads keep rows in their `<table>__rejects` (`forever`: no limit).
    pub(crate) keep_rejects: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_runs: "90d".to_owned(),
            keep_rejects: "90d".to_owned(),
        }
    }
}

/// A connection: a database (`url` alone), or a store (`url` an s3://, gs://, az:// or
/// sftp:// URL, with the store's options: endpoint, region, credentials; see
/// docs/configuration.md).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConnectionConfig {
    pub(crate) url: String,
    #[serde(flatten)]
    pub(crate) options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub(crate) enum NotifierConfig {
    /// `subject` and `body`: the notifier's own message, tera templates over the
    /// notification's context (docs/notifications.md); absent, weir's default.
    Email {
        to: Vec<String>,
        subject: Option<String>,
        body: Option<String>,
    },
    Webhook {
        url: String,
        subject: Option<String>,
        body: Option<String>,
    },
}

impl NotifierConfig {
    /// The notifier's own subject and body templates.
    pub(crate) fn message(&self) -> (Option<&String>, Option<&String>) {
        match self {
            NotifierConfig::Email { subject, body, .. }
            | NotifierConfig::Webhook { subject, body, .. } => (subject.as_ref(), body.as_ref()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmtpConfig {
    pub(crate) host: String,
    #[serde(default = "default_smtp_port")]
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) tls: SmtpTls,
    pub(crate) from: String,
    pub(crate) username: Option<String>,
    /// Default: `$SMTP_PASSWORD` when a username is set.
    pub(crate) password: Option<String>,
    /// A PEM file of a private CA the relay's certificate is signed by.
    pub(crate) ca_file: Option<PathBuf>,
}

fn default_smtp_port() -> u16 {
    587
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

impl Config {
    /// Loads the configuration: `path` (which must exist), else `./weir.toml` when present,
    /// else the defaults; then applies the environment.
    pub(crate) fn load(path: Option<&Path>) -> Result<Config> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading configuration {}", p.display()))?,
                Some(p.to_path_buf()),
            ),
            None if Path::new("weir.toml").exists() => (
                std::fs::read_to_string("weir.toml").context("reading weir.toml")?,
                Some(PathBuf::from("weir.toml")),
            ),
            None => (String::new(), None),
        };
        let shown = origin.clone().unwrap_or_else(|| PathBuf::from("weir.toml"));
        let mut config = Config::parse(&text, &shown, &env)?;
        config.origin = origin;
        Ok(config)
    }

    /// This configuration with the web server's address from `--bind`, when given.
    pub(crate) fn with_bind(&self, bind: Option<String>) -> Config {
        let mut config = self.clone();
        if let Some(bind) = bind {
            config.web.bind = bind;
        }
        config
    }

    /// Where the value of `key` (`retention.keep_runs`) came from, to begin a message about
    /// it: `WEIR_RETENTION_KEEP_RUNS (retention.keep_runs)` when a variable set it, else
    /// `weir.toml: retention.keep_runs` (the file read, or the default's name).
    pub(crate) fn place_of(&self, key: &str) -> String {
        match self.set_by_env.get(key) {
            Some(var) => format!("{var} ({key})"),
            None => format!(
                "{}: {key}",
                self.origin
                    .as_deref()
                    .unwrap_or(Path::new("weir.toml"))
                    .display()
            ),
        }
    }

    /// Where the database setting came from, for messages: ` from /srv/weir/weir.toml`.
    pub(crate) fn origin_note(&self) -> String {
        if std::env::var_os("WEIR_DATABASE_URL").is_some() {
            return " from WEIR_DATABASE_URL".to_owned();
        }
        match &self.origin {
            Some(p) => format!(" from {}", p.display()),
            None => " (the default: no weir.toml here)".to_owned(),
        }
    }

    /// Parses configuration text and applies `env` (`WEIR_*` overrides and `${VAR}` expansion).
    pub(crate) fn parse(
        text: &str,
        origin: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Config> {
        use figment::Figment;
        use figment::providers::{Format as _, Toml};
        let layers = Figment::new()
            .merge(Toml::string(text))
            .merge(EnvLayer::new(env));
        // Lossy: a number or a boolean given as text (every environment variable is text) is
        // read as one where the key wants one.
        let mut config: Config = layers.extract_lossy().map_err(|e| {
            // A mistake of the file alone is said with its line and column, as the `toml`
            // crate says it (figment knows keys, not lines).
            let in_file = e
                .clone()
                .into_iter()
                .all(|e| e.metadata.as_ref().is_none_or(|m| m.name != ENV_LAYER));
            match toml::from_str::<Config>(text) {
                Err(t) if in_file => anyhow::anyhow!("{}: {t}", origin.display()),
                _ => layer_error(e, origin),
            }
        })?;
        // The keys the environment set (the values EnvLayer gave), each with its variable.
        let set_by_env: BTreeMap<String, String> = env
            .keys()
            .filter_map(|name| {
                let path = name.strip_prefix("WEIR_").and_then(env_key)?;
                Some((path.join("."), name.clone()))
            })
            .collect();
        let from_env = |key: &str| set_by_env.contains_key(key);
        // Relative paths written in (or implied by) a configuration file are relative to its
        // folder, wherever weir runs from; the environment's are relative to the working
        // directory.
        let base = origin.parent().unwrap_or(Path::new(""));
        if !from_env("dags_folder") {
            config.dags_folder = relative_to(base, &config.dags_folder);
        }
        if !from_env("database_url") {
            config.database_url = sqlite_relative_to(base, &config.database_url);
        }
        if !from_env("python.cache_dir") {
            config.python.cache_dir = relative_to(base, &config.python.cache_dir);
        }
        // A bare name (`uv`) is looked up on PATH; a path is relative to the file.
        if !from_env("python.uv")
            && let Some(uv) = config
                .python
                .uv
                .as_mut()
                .filter(|p| p.components().count() > 1)
        {
            *uv = relative_to(base, uv);
        }
        if !from_env("smtp.ca_file")
            && let Some(ca) = config.smtp.as_mut().and_then(|s| s.ca_file.as_mut())
        {
            *ca = relative_to(base, ca);
        }
        config.remote.url = config.remote.url.filter(|u| !u.is_empty());
        if !from_env("remote.token")
            && let Some(t) = &config.remote.token
        {
            config.remote.token = Some(
                expand(t, env).with_context(|| format!("{}: [remote] token", origin.display()))?,
            );
        }
        if !from_env("openlineage.api_key")
            && let Some(k) = &config.openlineage.api_key
        {
            config.openlineage.api_key = Some(
                expand(k, env)
                    .with_context(|| format!("{}: [openlineage] api_key", origin.display()))?,
            );
        }
        config.openlineage.url = config.openlineage.url.filter(|u| !u.is_empty());
        for (name, conn) in &mut config.connections {
            conn.url = expand(&conn.url, env)
                .with_context(|| format!("{}: connection `{name}`", origin.display()))?;
            // A file's relative SQLite path, once `${VAR}`s are in: relative to the file.
            if !from_env(&format!("connections.{name}.url")) {
                conn.url = sqlite_relative_to(base, &conn.url);
            }
            for (key, value) in &mut conn.options {
                *value = expand(value, env)
                    .with_context(|| format!("{}: connection `{name}`: {key}", origin.display()))?;
            }
            if weir_storage::is_store_url(&conn.url) {
                weir_storage::StoreConn::new(name, &conn.url, conn.options.clone())
                    .map_err(|e| anyhow::anyhow!("{}: {}", origin.display(), e.message))?;
            } else if let Some(key) = conn.options.keys().next() {
                bail!(
                    "{}: connection `{name}`: `{key}` is not an option of a database connection (a database connection has only `url`; store options go with an s3://, gs://, az:// or sftp:// url)",
                    origin.display()
                );
            }
        }
        if let Some(smtp) = &mut config.smtp {
            match &smtp.password {
                Some(p) => {
                    smtp.password = Some(
                        expand(p, env)
                            .with_context(|| format!("{}: smtp password", origin.display()))?,
                    );
                }
                None if smtp.username.is_some() => {
                    smtp.password = env.get("SMTP_PASSWORD").cloned();
                }
                None => {}
            }
        }
        for (name, notifier) in &mut config.notifiers {
            if let NotifierConfig::Webhook { url, .. } = notifier {
                *url = expand(url, env)
                    .with_context(|| format!("{}: notifier `{name}`", origin.display()))?;
            }
            let (subject, body) = notifier.message();
            let mut checker = weir_model::template::TemplateChecker::default();
            for (field, text) in [("subject", subject), ("body", body)] {
                if let Some(text) = text
                    && let Err(e) = checker.check(text)
                {
                    bail!(
                        "{}: notifier `{name}`: {field} template, line {} column {}: {}",
                        origin.display(),
                        e.line,
                        e.col,
                        e.message
                    );
                }
            }
        }
        if config.worker.concurrency == 0 {
            bail!(
                "{}: worker.concurrency must be at least 1",
                origin.display()
            );
        }
        config.set_by_env = set_by_env;
        Ok(config)
    }

    /// The names DAG files may refer to, for validation warnings.
    /// Connection URLs by name, for workers.
    pub(crate) fn connection_urls(&self) -> BTreeMap<String, String> {
        self.connections
            .iter()
            .filter(|(_, c)| !weir_storage::is_store_url(&c.url))
            .map(|(name, c)| (name.clone(), c.url.clone()))
            .collect()
    }

    /// The storage connections (checked when the configuration was read).
    pub(crate) fn store_conns(&self) -> Vec<weir_storage::StoreConn> {
        self.connections
            .iter()
            .filter(|(_, c)| weir_storage::is_store_url(&c.url))
            .filter_map(|(name, c)| {
                weir_storage::StoreConn::new(name, &c.url, c.options.clone()).ok()
            })
            .collect()
    }

    /// Values never to show: the metadata database's password, the SMTP password and webhook
    /// URLs (a Slack webhook URL is a credential); connection passwords are added by the worker
    /// from the URLs.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .smtp
            .as_ref()
            .and_then(|s| s.password.clone())
            .into_iter()
            .collect();
        if let Some(password) = url::Url::parse(&self.database_url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty())
        {
            out.push(password);
        }
        for n in self.notifiers.values() {
            if let NotifierConfig::Webhook { url, .. } = n {
                out.push(url.clone());
            }
        }
        out.extend(self.openlineage.api_key.clone());
        out.extend(
            self.store_conns()
                .iter()
                .flat_map(weir_storage::StoreConn::secrets),
        );
        let named =
            |name: &str| weir_worker::step::shell::names_match(&self.worker.secret_env, name);
        out.extend(
            std::env::vars()
                .filter(|(k, v)| named(k) && !v.is_empty())
                .map(|(_, v)| v),
        );
        out
    }

    pub(crate) fn known(&self) -> weir_model::Known {
        weir_model::Known {
            conns: self.connections.keys().cloned().collect(),
            pools: self.pools.keys().cloned().collect(),
            notifiers: self.notifiers.keys().cloned().collect(),
        }
    }
}

/// The name of the environment's layer (figment's metadata): what tells a value from the
/// environment from one of the file.
const ENV_LAYER: &str = "WEIR_* environment variables";

/// Top-level keys of `weir.toml` (each section's keys follow its section's name).
const TOP_KEYS: [&str; 3] = ["database_url", "dags_folder", "template_env"];
/// Sections of `weir.toml`.
const SECTIONS: [&str; 11] = [
    "openlineage",
    "python",
    "web",
    "worker",
    "scheduler",
    "retention",
    "smtp",
    "remote",
    "pools",
    "connections",
    "notifiers",
];

/// `WEIR_*` environment variables as a configuration layer over the file: every key can be
/// set. `WEIR_KEY` sets a top-level key (`WEIR_DATABASE_URL`), `WEIR_SECTION_KEY` a
/// section's (`WEIR_WORKER_CONCURRENCY`, `WEIR_POOLS_WAREHOUSE`), and `__` separates levels
/// where names hold `_` themselves (`WEIR_NOTIFIERS__ON_CALL__URL`). Two shorthands stay:
/// `WEIR_CONN_NAME` (connection `name`'s URL) and `WEIR_API_URL` / `WEIR_API_TOKEN`
/// (`[remote]`). Other `WEIR_*` variables (a task's `WEIR_DS`) are not configuration and are
/// left alone. Values are text; a list is written `[a, b]`.
struct EnvLayer {
    values: figment::value::Dict,
}

impl EnvLayer {
    fn new(env: &BTreeMap<String, String>) -> EnvLayer {
        use figment::value::{Dict, Value};
        fn insert(dict: &mut Dict, path: &[String], value: Value) {
            match path {
                [] => {}
                [last] => {
                    dict.insert(last.clone(), value);
                }
                [first, rest @ ..] => {
                    let entry = dict
                        .entry(first.clone())
                        .or_insert_with(|| Value::from(Dict::new()));
                    if let Value::Dict(_, inner) = entry {
                        insert(inner, rest, value);
                    }
                }
            }
        }
        let mut values = Dict::new();
        for (name, text) in env {
            let Some(path) = name.strip_prefix("WEIR_").and_then(env_key) else {
                continue;
            };
            // A list (`worker.queues`) is written as one; anything else stays text, read as a
            // number or a boolean where the key wants one.
            let value = if text.trim_start().starts_with('[') {
                text.parse()
                    .unwrap_or_else(|e: std::convert::Infallible| match e {})
            } else {
                Value::from(text.clone())
            };
            insert(&mut values, &path, value);
        }
        EnvLayer { values }
    }
}

/// Figment's errors as weir's: each names the key, and the environment variable instead of
/// the file when the value came from one (`WEIR_WORKER_CONCURRENCY (worker.concurrency):
/// invalid type: ...`).
fn layer_error(errors: figment::Error, origin: &Path) -> anyhow::Error {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from_env = e.metadata.as_ref().is_some_and(|m| m.name == ENV_LAYER);
            match (from_env, key.is_empty()) {
                (true, _) => format!(
                    "WEIR_{} ({key}): {}",
                    e.path.join("_").to_uppercase(),
                    e.kind
                ),
                (false, false) => format!("{}: `{key}`: {}", origin.display(), e.kind),
                (false, true) => format!("{}: {}", origin.display(), e.kind),
            }
        })
        .collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

/// The key path a `WEIR_*` variable (without `WEIR_`) sets, if it sets one.
fn env_key(name: &str) -> Option<Vec<String>> {
    let name = name.to_lowercase();
    if name.contains("__") {
        let path: Vec<String> = name.split("__").map(str::to_owned).collect();
        let known = path.len() > 1 && SECTIONS.contains(&path[0].as_str())
            || path.len() == 1 && TOP_KEYS.contains(&path[0].as_str());
        return (known && path.iter().all(|p| !p.is_empty())).then_some(path);
    }
    if TOP_KEYS.contains(&name.as_str()) {
        return Some(vec![name]);
    }
    let shorthand = |section: &str, key: &str| Some(vec![section.to_owned(), key.to_owned()]);
    match name.as_str() {
        "api_url" => return shorthand("remote", "url"),
        "api_token" => return shorthand("remote", "token"),
        _ => {}
    }
    if let Some(conn) = name.strip_prefix("conn_").filter(|c| !c.is_empty()) {
        return Some(vec![
            "connections".to_owned(),
            conn.to_owned(),
            "url".to_owned(),
        ]);
    }
    let (section, key) = SECTIONS.iter().find_map(|s| {
        name.strip_prefix(s)
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|k| !k.is_empty())
            .map(|k| (*s, k))
    })?;
    shorthand(section, key)
}

impl figment::Provider for EnvLayer {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(ENV_LAYER)
    }

    fn data(
        &self,
    ) -> std::result::Result<
        figment::value::Map<figment::Profile, figment::value::Dict>,
        figment::Error,
    > {
        Ok(figment::Profile::Default.collect(self.values.clone()))
    }
}

/// `path` read from a file in folder `base`.
fn relative_to(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base.as_os_str().is_empty() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// A `sqlite://PATH` URL read from a file in folder `base` (other URLs as they are).
fn sqlite_relative_to(base: &Path, url: &str) -> String {
    match weir_store::sqlite_file(url) {
        Some(file) if file.is_relative() && !base.as_os_str().is_empty() => {
            let query = url
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("sqlite://{}{query}", base.join(file).display())
        }
        _ => url.to_owned(),
    }
}

/// Replaces `${VAR}` with the variable's value; a missing variable is an error naming it.
fn expand(text: &str, env: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            bail!("unclosed `${{` in a value")
        };
        let name = &after[..end];
        let Some(value) = env.get(name) else {
            bail!("environment variable `{name}` is not set")
        };
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = Config::parse("", Path::new("weir.toml"), &env(&[])).expect("defaults");
        assert_eq!(c.database_url, "sqlite://.weir/weir.db");
        assert_eq!(c.dags_folder, PathBuf::from("dags"));
        assert_eq!(c.worker.concurrency, 8);
    }

    #[test]
    fn relative_paths_of_a_file_are_relative_to_its_folder() {
        let origin = Path::new("/srv/weir/weir.toml");
        let c = Config::parse("", origin, &env(&[])).expect("defaults");
        assert_eq!(c.dags_folder, PathBuf::from("/srv/weir/dags"));
        assert_eq!(c.database_url, "sqlite:///srv/weir/.weir/weir.db");
        let c = Config::parse(
            "database_url = \"sqlite://state/w.db?mode=rwc\"\ndags_folder = \"/abs/dags\"\n[connections.wh]\nurl = \"postgres://h/db\"\n",
            origin,
            &env(&[]),
        )
        .expect("parse");
        assert_eq!(c.database_url, "sqlite:///srv/weir/state/w.db?mode=rwc");
        assert_eq!(c.dags_folder, PathBuf::from("/abs/dags"));
        assert_eq!(c.connections["wh"].url, "postgres://h/db");
        // `${VAR}` first, then the file's folder; an absolute expansion stays as it is.
        let c = Config::parse(
            "[connections.a]\nurl = \"sqlite://${D}/a.db\"\n[connections.b]\nurl = \"sqlite://b.db\"\n",
            origin,
            &env(&[("D", "/data"), ("WEIR_CONN_C", "sqlite://c.db")]),
        )
        .expect("parse");
        assert_eq!(c.connections["a"].url, "sqlite:///data/a.db");
        assert_eq!(c.connections["b"].url, "sqlite:///srv/weir/b.db");
        assert_eq!(c.connections["c"].url, "sqlite://c.db");
        // The environment's values are the working directory's.
        let c = Config::parse(
            "",
            origin,
            &env(&[
                ("WEIR_DATABASE_URL", "sqlite://here.db"),
                ("WEIR_DAGS_FOLDER", "d"),
            ]),
        )
        .expect("parse");
        assert_eq!(c.database_url, "sqlite://here.db");
        assert_eq!(c.dags_folder, PathBuf::from("d"));
        // ./weir.toml: relative to the working directory, which is its folder.
        let c = Config::parse("", Path::new("weir.toml"), &env(&[])).expect("parse");
        assert_eq!(c.database_url, "sqlite://.weir/weir.db");
    }

    #[test]
    fn variables_are_expanded_and_env_overrides_win() {
        let text = "[connections.warehouse]\nurl = \"postgres://etl:${PW}@db/wh\"\n";
        let c = Config::parse(
            text,
            Path::new("weir.toml"),
            &env(&[
                ("PW", "s3cret"),
                ("WEIR_CONN_LEGACY", "mysql://x"),
                ("WEIR_DATABASE_URL", "postgres://p"),
            ]),
        )
        .expect("parse");
        assert_eq!(
            c.connections["warehouse"].url,
            "postgres://etl:s3cret@db/wh"
        );
        assert_eq!(c.connections["legacy"].url, "mysql://x");
        assert_eq!(c.database_url, "postgres://p");
    }

    #[test]
    fn a_missing_variable_and_an_unknown_key_are_errors() {
        let err = Config::parse(
            "[connections.w]\nurl = \"${NOPE}\"\n",
            Path::new("weir.toml"),
            &env(&[]),
        )
        .expect_err("missing var");
        assert!(format!("{err:#}").contains("NOPE"), "{err:#}");
        let err = Config::parse("databse_url = \"x\"\n", Path::new("weir.toml"), &env(&[]))
            .expect_err("typo");
        assert!(format!("{err:#}").contains("databse_url"), "{err:#}");
    }

    #[test]
    fn notifier_secrets_come_from_the_environment_and_are_masked() {
        let text = "[smtp]\nhost = \"mail\"\nfrom = \"w@x\"\nusername = \"weir\"\n\n\
                    [notifiers.slack]\nkind = \"webhook\"\nurl = \"https://hooks/${HOOK_TOKEN}\"\n";
        let c = Config::parse(
            text,
            Path::new("weir.toml"),
            &env(&[("SMTP_PASSWORD", "pw1"), ("HOOK_TOKEN", "T0K")]),
        )
        .expect("parse");
        let smtp = c.smtp.as_ref().expect("smtp");
        assert_eq!(smtp.password.as_deref(), Some("pw1"));
        assert_eq!(smtp.port, 587);
        assert!(matches!(smtp.tls, SmtpTls::Starttls));
        assert!(
            matches!(&c.notifiers["slack"], NotifierConfig::Webhook { url, .. } if url == "https://hooks/T0K")
        );
        assert_eq!(c.secrets(), ["pw1", "https://hooks/T0K"]);
    }

    #[test]
    fn every_key_can_be_set_from_the_environment() {
        let text = "[worker]\nconcurrency = 2\n[pools]\nsmall = 1\n";
        let c = Config::parse(
            text,
            Path::new("/srv/weir/weir.toml"),
            &env(&[
                ("WEIR_WORKER_CONCURRENCY", "16"),
                ("WEIR_WORKER_QUEUES", "[etl, reports]"),
                ("WEIR_SCHEDULER_HEARTBEAT_TIMEOUT", "45s"),
                ("WEIR_RETENTION_KEEP_RUNS", "30d"),
                ("WEIR_WEB_BASE_URL", "https://weir.example.com"),
                ("WEIR_POOLS_WAREHOUSE", "4"),
                ("WEIR_TEMPLATE_ENV", "[REGION]"),
                ("WEIR_SMTP_HOST", "mail.example.com"),
                ("WEIR_SMTP_FROM", "weir@example.com"),
                ("WEIR_SMTP_PORT", "2525"),
                ("WEIR_NOTIFIERS__ON_CALL__KIND", "webhook"),
                ("WEIR_NOTIFIERS__ON_CALL__URL", "https://hooks/x"),
                ("WEIR_API_TOKEN", "1234"),
                // Not configuration: a task's variable, left alone.
                ("WEIR_DS", "2024-01-01"),
            ]),
        )
        .expect("parse");
        assert_eq!(c.worker.concurrency, 16);
        assert_eq!(c.worker.queues, ["etl", "reports"]);
        assert_eq!(c.scheduler.heartbeat_timeout, "45s");
        assert_eq!(c.retention.keep_runs, "30d");
        assert_eq!(c.web.base_url.as_deref(), Some("https://weir.example.com"));
        assert_eq!(c.pools["small"], 1);
        assert_eq!(c.pools["warehouse"], 4);
        assert_eq!(c.template_env, ["REGION"]);
        let smtp = c.smtp.as_ref().expect("smtp from the environment");
        assert_eq!((smtp.host.as_str(), smtp.port), ("mail.example.com", 2525));
        assert!(
            matches!(&c.notifiers["on_call"], NotifierConfig::Webhook { url, .. } if url == "https://hooks/x")
        );
        // Digits stay text where the key is text.
        assert_eq!(c.remote.token.as_deref(), Some("1234"));
        // A value that does not fit its key names the key and where it came from.
        let err = Config::parse(
            "",
            Path::new("weir.toml"),
            &env(&[("WEIR_WORKER_CONCURRENCY", "many")]),
        )
        .expect_err("not a number");
        let message = format!("{err:#}");
        assert!(
            message.contains("WEIR_WORKER_CONCURRENCY (worker.concurrency)"),
            "{message}"
        );
    }
}
