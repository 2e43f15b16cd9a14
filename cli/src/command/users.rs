//! `weir users create|list|delete|token`: the web UI's and API's users, in the metadata
//! database. Passwords are stored as argon2id hashes, API tokens as their SHA-256; both are
//! shown once, when made, and never again.

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use weir_store::Role;
use weir_web::auth::{digest, hash_password, new_api_token, random_secret};

use crate::args::Role as RoleArg;
use crate::config::Config;
use crate::engine::{clock, create_store, open_store};

/// The shortest password `users create` accepts.
const MIN_PASSWORD: usize = 8;

fn role(r: RoleArg) -> Role {
    match r {
        RoleArg::Viewer => Role::Viewer,
        RoleArg::Operator => Role::Operator,
        RoleArg::Admin => Role::Admin,
    }
}

/// `weir users create NAME --role R [--password-stdin]`: without `--password-stdin`, a random
/// password is made and printed once.
pub(crate) async fn create(
    config: &Config,
    name: &str,
    r: RoleArg,
    password_stdin: bool,
) -> Result<u8> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("a user name must be non-empty, without spaces");
    }
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if password.chars().count() < MIN_PASSWORD {
            bail!("the password must have at least {MIN_PASSWORD} characters");
        }
        (password, false)
    } else {
        (random_secret()[..32].to_owned(), true)
    };
    let store = create_store(config).await?;
    store
        .create_user(name, role(r), &hash_password(&password)?, clock().now())
        .await?;
    crate::audit::record(
        &store,
        "user_create",
        name,
        serde_json::json!({"role": role(r).as_str()}),
    )
    .await?;
    println!("created user {name} ({})", role(r).as_str());
    if generated {
        println!("password (shown once): {password}");
    }
    Ok(0)
}

/// `weir users list`.
pub(crate) async fn list(config: &Config) -> Result<u8> {
    let store = open_store(config).await?;
    let users = store.users().await?;
    if users.is_empty() {
        println!("no users (`weir users create NAME --role admin` makes one)");
        return Ok(0);
    }
    println!("{:<24} {:<9} {:<20} tokens", "name", "role", "created");
    for u in users {
        println!(
            "{:<24} {:<9} {:<20} {}",
            u.name,
            u.role.as_str(),
            u.created_at.format("%Y-%m-%d %H:%M UTC"),
            u.tokens
        );
    }
    Ok(0)
}

/// `weir users delete NAME` (their API tokens go too).
pub(crate) async fn delete(config: &Config, name: &str) -> Result<u8> {
    let store = open_store(config).await?;
    if !store.delete_user(name).await? {
        bail!("no user named `{name}`");
    }
    crate::audit::record(&store, "user_delete", name, serde_json::json!({})).await?;
    println!("deleted user {name} and their API tokens");
    Ok(0)
}

/// `weir users token NAME`: mints an API token, printed once.
pub(crate) async fn token(config: &Config, name: &str) -> Result<u8> {
    let store = open_store(config).await?;
    let token = new_api_token();
    store
        .add_token(name, &digest(&token), clock().now())
        .await?;
    crate::audit::record(&store, "token_create", name, serde_json::json!({})).await?;
    println!("{token}");
    eprintln!("API token for {name}: shown once; send it as `Authorization: Bearer TOKEN`");
    Ok(0)
}
