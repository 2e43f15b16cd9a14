//! Storage connections: the `[connections.<name>]` of weir.toml whose `url` is a bucket, a
//! container or an SFTP server, with the options each store takes (endpoint, region,
//! credentials). Option names are weir's, checked here, so that a typo is an error naming the
//! connection rather than a credential silently not used.

use std::collections::BTreeMap;

use crate::{Location, Scheme, StorageError};

/// One storage connection.
#[derive(Debug, Clone)]
pub struct StoreConn {
    /// Its name in the configuration.
    pub name: String,
    /// What it covers: a bucket (and optionally a prefix in it), a container, a server.
    pub at: Location,
    /// Options by weir's name, checked against [`options_of`].
    pub options: BTreeMap<String, String>,
}

/// An option of a store: weir's name, the name OpenDAL's configuration gives it, and whether it
/// is a secret (masked wherever weir writes text).
pub struct StoreOption {
    /// The key in weir.toml.
    pub name: &'static str,
    /// OpenDAL's key.
    pub opendal: &'static str,
    /// A credential.
    pub secret: bool,
}

const fn opt(name: &'static str, opendal: &'static str, secret: bool) -> StoreOption {
    StoreOption {
        name,
        opendal,
        secret,
    }
}

const S3: &[StoreOption] = &[
    opt("endpoint", "endpoint", false),
    opt("region", "region", false),
    opt("access_key_id", "access_key_id", false),
    opt("secret_access_key", "secret_access_key", true),
    opt("session_token", "session_token", true),
    opt("role_arn", "role_arn", false),
    opt("external_id", "external_id", false),
    opt("anonymous", "allow_anonymous", false),
    opt("virtual_host_style", "enable_virtual_host_style", false),
    opt("server_side_encryption", "server_side_encryption", false),
    opt("storage_class", "default_storage_class", false),
];

const GCS: &[StoreOption] = &[
    opt("endpoint", "endpoint", false),
    opt("credential", "credential", true),
    opt("credential_path", "credential_path", false),
    opt("service_account", "service_account", false),
    opt("token", "token", true),
    opt("anonymous", "allow_anonymous", false),
];

const AZURE: &[StoreOption] = &[
    opt("endpoint", "endpoint", false),
    opt("account_name", "account_name", false),
    opt("account_key", "account_key", true),
    opt("sas_token", "sas_token", true),
];

const SFTP: &[StoreOption] = &[
    opt("user", "user", false),
    opt("key", "key", false),
    opt("known_hosts", "known_hosts_strategy", false),
];

/// The options a store takes.
pub fn options_of(scheme: Scheme) -> &'static [StoreOption] {
    match scheme {
        Scheme::S3 => S3,
        Scheme::Gcs => GCS,
        Scheme::Azure => AZURE,
        Scheme::Sftp => SFTP,
        Scheme::Local => &[],
    }
}

/// Whether a connection URL names a store rather than a database.
pub fn is_store_url(url: &str) -> bool {
    Location::parse(url).is_ok_and(|l| !l.is_local())
}

impl StoreConn {
    /// A storage connection from its configuration.
    ///
    /// # Errors
    /// A URL that is not a store's, an option the store does not take (with those it does),
    /// or a bad `known_hosts` value.
    pub fn new(
        name: &str,
        url: &str,
        options: BTreeMap<String, String>,
    ) -> Result<StoreConn, StorageError> {
        let at = Location::parse(url)
            .map_err(|e| StorageError::invalid(format!("connection `{name}`: {}", e.message)))?;
        if at.is_local() {
            return Err(StorageError::invalid(format!(
                "connection `{name}`: `{url}` is not an s3://, gs://, az:// or sftp:// URL"
            )));
        }
        let known = options_of(at.scheme);
        for key in options.keys() {
            if !known.iter().any(|o| o.name == key) {
                return Err(StorageError::invalid(format!(
                    "connection `{name}`: `{key}` is not an option of {} connections (they take {})",
                    at.scheme.prefix().trim_end_matches("://"),
                    known.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if let Some(k) = options.get("known_hosts")
            && !matches!(k.as_str(), "strict" | "accept" | "add")
        {
            return Err(StorageError::invalid(format!(
                "connection `{name}`: known_hosts is `{k}`; it is strict (the default: the host must be in known_hosts), add (a new host is added, a changed key refused) or accept (any key: tests only)"
            )));
        }
        Ok(StoreConn {
            name: name.to_owned(),
            at,
            options,
        })
    }

    /// Its credentials, to mask.
    pub fn secrets(&self) -> Vec<String> {
        let known = options_of(self.at.scheme);
        self.options
            .iter()
            .filter(|(k, v)| !v.is_empty() && known.iter().any(|o| o.name == *k && o.secret))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether this connection covers `loc`: the same store and root, and a path under its
    /// prefix. An SFTP connection matches by host and port (the location's user wins).
    pub fn covers(&self, loc: &Location) -> bool {
        let host = |root: &str| root.rsplit('@').next().unwrap_or(root).to_owned();
        let same_root = match loc.scheme {
            Scheme::Sftp => host(&self.at.root) == host(&loc.root),
            _ => self.at.root == loc.root,
        };
        let prefix = self.at.path.trim_end_matches('/');
        self.at.scheme == loc.scheme
            && same_root
            && (prefix.is_empty()
                || loc.path == prefix
                || loc.path.starts_with(&format!("{prefix}/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_and_secrets_known() {
        let opts = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let c = StoreConn::new(
            "lake",
            "s3://landing/hr",
            opts(&[
                ("endpoint", "http://127.0.0.1:9000"),
                ("secret_access_key", "s3cr3t"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.secrets(), vec!["s3cr3t".to_owned()]);
        assert!(c.covers(&Location::parse("s3://landing/hr/a.csv").expect("loc")));
        assert!(!c.covers(&Location::parse("s3://landing/hrx/a.csv").expect("loc")));
        assert!(!c.covers(&Location::parse("s3://other/hr/a.csv").expect("loc")));
        let err = StoreConn::new("lake", "s3://b", opts(&[("secret_key", "x")])).unwrap_err();
        assert!(
            err.message.contains("`secret_key` is not an option of s3"),
            "{}",
            err.message
        );
        assert!(StoreConn::new("db", "postgres://h/d", BTreeMap::new()).is_err());
        let s = StoreConn::new("f", "sftp://files:2222", BTreeMap::new()).expect("sftp");
        assert!(s.covers(&Location::parse("sftp://etl@files:2222/in/a.csv").expect("loc")));
    }
}
