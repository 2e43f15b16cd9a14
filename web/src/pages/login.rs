//! Signing in and out: the login page and form (with where to go next), and logout.

use super::*;

/// The login page's query: only where to go next. (An `error` text from the URL was shown
/// once: anyone could put words in weir's mouth on its own login page.)
#[derive(Deserialize)]
pub(super) struct LoginQuery {
    pub(super) next: Option<String>,
}

/// Only same-site paths are followed after login (no open redirect).
pub(super) fn safe_next(next: Option<&str>) -> String {
    // Parsed as the browser will parse it (the WHATWG URL standard: tabs and newlines dropped,
    // backslashes read as slashes, percent-decoding where browsers do), relative to this
    // server: only a result on this server's origin is kept, as its normalised path.
    let Ok(here) = url::Url::parse("http://weir.invalid/") else {
        return "/".to_owned();
    };
    match next.map(|n| here.join(n)) {
        Some(Ok(target)) if target.origin() == here.origin() => {
            let mut path = target.path().to_owned();
            if let Some(q) = target.query() {
                path.push('?');
                path.push_str(q);
            }
            path
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_server() {
        for (next, kept) in [
            (Some("/dags/etl?tab=runs"), "/dags/etl?tab=runs"),
            (Some("runs"), "/runs"),
            (None, "/"),
            (Some("//evil.example"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/\t/evil.example"), "/"),
            (Some("/\r\n/evil.example"), "/"),
            (Some("\t//evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/%2F/evil.example"), "/%2F/evil.example"),
        ] {
            assert_eq!(safe_next(next), kept, "{next:?}");
        }
    }
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> PageResult {
    let mut ctx = tera::Context::new();
    ctx.insert("next", &safe_next(q.next.as_deref()));
    ctx.insert("error", &None::<String>);
    ctx.insert("name", "");
    render(&state, None, "login.html", ctx)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    pub(super) name: String,
    pub(super) password: String,
    pub(super) next: Option<String>,
}

pub(super) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let next = safe_next(form.next.as_deref());
    match auth::log_in(
        &state,
        form.name.trim(),
        &form.password,
        &peer.ip().to_string(),
    )
    .await
    {
        Ok(id) => Ok((
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    auth::session_cookie(Some(&id), state.config.secure_cookies()),
                ),
                (header::LOCATION, next),
            ],
        )
            .into_response()),
        Err(e)
            if e.status == StatusCode::UNAUTHORIZED
                || e.status == StatusCode::TOO_MANY_REQUESTS =>
        {
            let mut ctx = tera::Context::new();
            ctx.insert("next", &next);
            ctx.insert("error", &e.message);
            ctx.insert("name", form.name.trim());
            let mut res = render(&state, None, "login.html", ctx)?;
            *res.status_mut() = e.status;
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    caller.check_csrf(form.csrf.as_deref())?;
    auth::log_out(&state, &headers).await?;
    state
        .store
        .audit(
            &caller.name,
            "logout",
            &caller.name,
            &serde_json::json!({}),
            state.clock.now(),
        )
        .await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                auth::session_cookie(None, state.config.secure_cookies()),
            ),
            (header::LOCATION, "/login".to_owned()),
        ],
    )
        .into_response())
}
