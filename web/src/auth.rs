//! Who is asking, and may they.
//!
//! - **Sessions**: logging in stores a row keyed by the SHA-256 of a random 256-bit id; the
//!   cookie `weir_session` carries the id (HttpOnly, SameSite=Lax, Secure behind https). Any
//!   web server finds the session in the database.
//! - **CSRF**: each session has its own random token. Every state-changing form carries it
//!   in a hidden `csrf` field, and a cookie-authenticated API call in the `X-CSRF-Token`
//!   header; a request without it is refused with 403 before anything changes.
//! - **API tokens** (`Authorization: Bearer weir_...`) are looked up by their SHA-256; they
//!   need no CSRF token (a browser never sends them by itself).
//! - **Roles**: viewer reads; operator also triggers, clears, marks, cancels, pauses and
//!   backfills; admin also sees the audit log. [`Caller::require`] is called by every handler
//!   that changes something, and the pages hide what the caller may not do.
//! - **Login rate limit**: password logins are counted per name and client address
//!   ([`LOGIN_FAILURES_ALLOWED`] in [`LOGIN_WINDOW`]), per name from anywhere
//!   ([`LOGIN_NAME_ALLOWED`]) and per address for any name ([`LOGIN_ADDRESS_ALLOWED`]); past a
//!   limit the answer is 429 until the window passes. The count and the new attempt are one
//!   transaction in the database (parallel attempts cannot all pass, and every web server
//!   sees the same count); a login that succeeds does not count. The limit stops password
//!   logins only: the owner's open sessions and API tokens keep working while a name is
//!   locked. An unknown name costs the same argon2 verification as a known one, so answer
//!   times do not tell which names exist.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::Duration;
use sha2::{Digest, Sha256};
use weir_store::{Role, Store, StoreError};

use crate::AppState;
use crate::error::WebError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "weir_session";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);
/// Failed logins of one name from one client address allowed in [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES_ALLOWED: i64 = 10;
/// Failed logins of one name from all addresses allowed in [`LOGIN_WINDOW`]: locking a name
/// out takes many addresses.
pub const LOGIN_NAME_ALLOWED: i64 = 100;
/// Failed logins from one client address, for any names, allowed in [`LOGIN_WINDOW`] (against
/// trying one password on many names).
pub const LOGIN_ADDRESS_ALLOWED: i64 = 50;
/// The login rate limit's window.
pub const LOGIN_WINDOW: Duration = Duration::minutes(5);
/// The name `standalone` gives the admin it creates on first start.
pub const FIRST_ADMIN: &str = "admin";

/// An argon2id PHC string of `password`, with a random salt.
///
/// # Errors
/// argon2's own failures (none for sane input).
pub fn hash_password(password: &str) -> Result<String, WebError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| WebError::internal(format_args!("hashing the password: {e}")))
}

/// A PHC string no password matches in practice (a hash of 32 random bytes, made once per
/// process with the same parameters as real ones), verified for unknown names.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_secret()).unwrap_or_default())
}

/// Whether `password` matches the stored PHC string.
#[must_use]
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// 64 hex characters: 256 bits from `rand`'s thread-local generator (ChaCha12, seeded and
/// reseeded from the operating system; fit for secrets).
#[must_use]
pub fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The SHA-256 of a secret (an API token, a session id), as stored: hex.
#[must_use]
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new API token: `weir_` and 64 hex characters.
#[must_use]
pub fn new_api_token() -> String {
    format!("weir_{}", random_secret())
}

/// Creates the first admin when there are no users at all; returns its password (to print
/// once) when it did.
///
/// # Errors
/// Database failures.
pub async fn ensure_first_admin(
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, WebError> {
    if !store.users().await?.is_empty() {
        return Ok(None);
    }
    let password = random_secret()[..24].to_owned();
    match store
        .create_user(FIRST_ADMIN, Role::Admin, &hash_password(&password)?, now)
        .await
    {
        Ok(()) => Ok(Some(password)),
        // Another process created it at the same moment: theirs stands.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A session cookie; `csrf` is the session's token.
    Session {
        /// The token state-changing requests must carry.
        csrf: String,
    },
    /// An API token.
    Token,
    /// `--no-auth`: everyone is an admin.
    NoAuth,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// How they authenticated.
    pub via: Via,
}

impl Caller {
    /// Refuses (403) a caller whose role is below `role`.
    ///
    /// # Errors
    /// [`WebError::forbidden`].
    pub fn require(&self, role: Role) -> Result<(), WebError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(WebError::forbidden(format!(
                "`{}` is {}: this needs the {} role",
                self.name,
                self.role.as_str(),
                role.as_str()
            )))
        }
    }

    /// Refuses (403) a session-authenticated request whose CSRF token is missing or wrong.
    ///
    /// # Errors
    /// [`WebError::csrf`].
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), WebError> {
        match &self.via {
            Via::Session { csrf } => match given {
                Some(g) if same(g.as_bytes(), csrf.as_bytes()) => Ok(()),
                _ => Err(WebError::csrf()),
            },
            Via::Token | Via::NoAuth => Ok(()),
        }
    }

    /// Refuses a state-changing request unless the caller is an operator (or admin) and, on a
    /// cookie session, `csrf` is the session's token: the check every form and API call that
    /// changes something makes first.
    ///
    /// # Errors
    /// [`WebError::forbidden`], then [`WebError::csrf`].
    pub fn operate(&self, csrf: Option<&str>) -> Result<(), WebError> {
        self.require(Role::Operator)?;
        self.check_csrf(csrf)
    }

    /// The CSRF token forms must carry (empty when none is needed).
    #[must_use]
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf } => csrf,
            Via::Token | Via::NoAuth => "",
        }
    }

    /// Whether the caller may trigger, clear, pause...
    #[must_use]
    pub fn can_operate(&self) -> bool {
        self.role >= Role::Operator
    }
}

/// Compares in time independent of where the inputs differ (`subtle`).
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

/// A cookie's value from the request headers (`Cookie` headers parsed by the `cookie` crate).
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value_raw())
}

/// The caller behind a request, if any.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Caller>, WebError> {
    if state.config.no_auth {
        return Ok(Some(Caller {
            name: "local".to_owned(),
            role: Role::Admin,
            via: Via::NoAuth,
        }));
    }
    let now = state.clock.now();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| WebError::unauthorized("Authorization must be `Bearer <API token>`"))?;
        return match state.store.user_by_token(&digest(token.trim()), now).await {
            Ok(user) => Ok(Some(Caller {
                name: user.name,
                role: user.role,
                via: Via::Token,
            })),
            Err(StoreError::NotFound(_)) => Err(WebError::unauthorized("unknown API token")),
            Err(e) => Err(e.into()),
        };
    }
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    match state.store.session(&digest(id), now).await {
        Ok(s) => Ok(Some(Caller {
            name: s.user.name,
            role: s.user.role,
            via: Via::Session { csrf: s.csrf_token },
        })),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, WebError> {
        authenticate(state, &parts.headers).await?.ok_or_else(|| {
            WebError::unauthorized("log in, or send `Authorization: Bearer <API token>`")
        })
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Caller>, WebError> {
        authenticate(state, &parts.headers).await
    }
}

/// Whether a browser's `Origin` is this server's: `[web] base_url`'s origin (scheme, host and
/// port), or, when that is plain `http` (weir serves HTTP itself), `http://` and the request's
/// `Host`. The scheme counts: a page served over plain HTTP (which anyone on the path can
/// alter) must not act on a weir served over HTTPS.
fn same_site(origin: &str, host: Option<&str>, base_url: &str) -> bool {
    let Ok(origin) = url::Url::parse(origin).map(|u| u.origin()) else {
        return false;
    };
    let base = url::Url::parse(base_url).ok();
    if base.as_ref().is_some_and(|b| b.origin() == origin) {
        return true;
    }
    let plain = base.as_ref().is_none_or(|b| b.scheme() == "http");
    plain
        && host
            .and_then(|h| url::Url::parse(&format!("http://{h}")).ok())
            .is_some_and(|u| u.origin() == origin)
}

/// Refuses a state-changing request that a browser sent from another site (its `Origin`
/// is not this server's: see [`same_site`]): a second line behind the
/// CSRF token, which also covers the login form. Requests without `Origin` (API clients,
/// scripts) pass to the handlers' own checks.
pub(crate) async fn same_origin(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if let (false, Some(origin)) = (safe, origin) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !same_site(origin, host, &state.config.base_url) {
            return WebError {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "csrf",
                message: format!("a request from {origin} to this server is refused (cross-site)"),
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// The `Set-Cookie` value of a new session (or, with `None`, of its removal).
pub(crate) fn session_cookie(id: Option<&str>, secure: bool) -> String {
    let max_age = match id {
        Some(_) => cookie::time::Duration::seconds(SESSION_LIFETIME.num_seconds()),
        None => cookie::time::Duration::ZERO,
    };
    cookie::Cookie::build((SESSION_COOKIE, id.unwrap_or_default()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(max_age)
        .secure(secure)
        .build()
        .to_string()
}

/// Checks a name and password, within the rate limit; on success stores a new session and
/// returns its id (for the cookie). Every attempt is audited.
pub(crate) async fn log_in(
    state: &AppState,
    name: &str,
    password: &str,
    ip: &str,
) -> Result<String, WebError> {
    let now = state.clock.now();
    let store = &state.store;
    let limits = [
        (format!("name+ip:{name}\n{ip}"), LOGIN_FAILURES_ALLOWED),
        (format!("name:{name}"), LOGIN_NAME_ALLOWED),
        (format!("ip:{ip}"), LOGIN_ADDRESS_ALLOWED),
    ];
    let attempt = match store.begin_login(&limits, now - LOGIN_WINDOW, now).await? {
        weir_store::LoginAttempt::Allowed(ids) => ids,
        weir_store::LoginAttempt::Refused(_) => {
            return Err(WebError::too_many(format!(
                "too many failed logins for `{name}` or from this address: wait {} minutes",
                LOGIN_WINDOW.num_minutes()
            )));
        }
    };
    let detail = serde_json::json!({ "ip": ip });
    let user = match store.user(name).await {
        Ok(u) => Some(u),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // An unknown name is verified against a hash of nothing: the same work as a known one.
    let phc: &str = match &user {
        Some(u) => &u.password_hash,
        None => dummy_hash(),
    };
    let matches = verify_password(phc, password);
    if !(matches && user.is_some()) {
        store
            .audit(name, "login_failed", name, &detail, now)
            .await?;
        return Err(WebError::unauthorized("wrong user name or password"));
    }
    store.login_succeeded(&attempt).await?;
    let id = random_secret();
    store
        .create_session(
            &digest(&id),
            name,
            &random_secret(),
            now,
            now + SESSION_LIFETIME,
        )
        .await?;
    // Expired sessions go at each login (no digest is empty: only expired rows match).
    store.delete_session("", now).await?;
    store.audit(name, "login", name, &detail, now).await?;
    Ok(id)
}

/// Ends the session behind the request's cookie.
pub(crate) async fn log_out(state: &AppState, headers: &HeaderMap) -> Result<(), WebError> {
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        state
            .store
            .delete_session(&digest(id), state.clock.now())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert!(!verify_password("not a phc string", "x"));
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; weir_session=abc; b=2".parse().expect("header"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "weir"), None);
    }

    #[test]
    fn secrets_are_64_hex_and_differ() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.clone().as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
    }
}
