//! dbt's profile written from a weir connection: the user keeps no profiles.yml, and the
//! password is not written anywhere: the profile reads it with `env_var('WEIR_DBT_PASSWORD')`.

use serde_json::{Value, json};
use weir_model::sql::Dialect;

/// The variable the profile reads the password from.
pub const PASSWORD_VAR: &str = "WEIR_DBT_PASSWORD";

/// The profile's and target's name, given to dbt with `--profile` and `--target` (the
/// project's own `profile:` is not looked up).
pub const NAME: &str = "weir";

/// The pinned packages of dbt's environment for a connection of `dialect`: the newest dbt-core
/// and adapter that install from PyPI alone (dbt-core 1.12 needs a parser downloaded from
/// GitHub at build time; dbt-mysql's newest release targets dbt-core 1.7).
pub fn default_requirements(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Postgres => &["dbt-core==1.11.16", "dbt-postgres==1.11.0"],
        Dialect::MySql => &["dbt-core==1.7.20", "dbt-mysql==1.7.0"],
        Dialect::Sqlite => &["dbt-core==1.11.16", "dbt-sqlite==1.10.0"],
    }
}

/// The profile (`profiles.yml`, written as JSON, which YAML reads) for connection `url` and
/// the password to pass in [`PASSWORD_VAR`].
///
/// # Errors
/// A URL that does not parse, or names no database where dbt needs one.
pub fn profile(url: &str, schema: &str, threads: u32) -> Result<(Value, String), String> {
    let dialect = Dialect::of_url(url)
        .ok_or_else(|| "dbt runs on Postgres, MySQL/MariaDB or SQLite connections".to_owned())?;
    let password_ref = format!("{{{{ env_var('{PASSWORD_VAR}', '') }}}}");
    let (target, password) = match dialect {
        Dialect::Sqlite => {
            let file = weir_store::sqlite_file(url)
                .ok_or_else(|| "the SQLite connection names no file".to_owned())?;
            let file = std::path::absolute(&file).unwrap_or(file);
            let folder = file
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (
                json!({
                    "type": "sqlite", "threads": 1, "database": "main", "schema": "main",
                    "schemas_and_paths": { "main": file.display().to_string() },
                    "schema_directory": folder,
                }),
                String::new(),
            )
        }
        Dialect::Postgres | Dialect::MySql => {
            let parsed = url::Url::parse(url).map_err(|e| format!("the connection's URL: {e}"))?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(parsed.username());
            let password = parsed.password().map(decode).unwrap_or_default();
            let query = |key: &str| {
                parsed
                    .query_pairs()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.into_owned())
            };
            let host = query("host")
                .or_else(|| parsed.host_str().map(str::to_owned))
                .unwrap_or_else(|| "localhost".to_owned());
            let database = decode(parsed.path().trim_start_matches('/'));
            let target = if dialect == Dialect::Postgres {
                let mut t = json!({
                    "type": "postgres", "host": host, "port": parsed.port().unwrap_or(5432),
                    "user": if user.is_empty() { "postgres".to_owned() } else { user },
                    "password": password_ref, "dbname": if database.is_empty() { "postgres".to_owned() } else { database },
                    "schema": schema, "threads": threads,
                });
                if let Some(mode) = query("sslmode") {
                    t["sslmode"] = mode.into();
                }
                t
            } else {
                json!({
                    "type": if parsed.scheme() == "mariadb" { "mariadb" } else { "mysql" },
                    "server": host, "port": parsed.port().unwrap_or(3306),
                    "username": user, "password": password_ref,
                    "schema": schema, "threads": threads,
                })
            };
            (target, password)
        }
    };
    Ok((
        json!({ NAME: { "target": NAME, "outputs": { NAME: target } } }),
        password,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_profile_reads_its_password_from_the_environment() {
        let (profile, password) = profile(
            "postgres://etl:p%40ss@db.example:6432/warehouse?sslmode=require",
            "analytics",
            4,
        )
        .unwrap();
        let target = &profile["weir"]["outputs"]["weir"];
        assert_eq!(target["type"], "postgres");
        assert_eq!(target["host"], "db.example");
        assert_eq!(target["port"], 6432);
        assert_eq!(target["user"], "etl");
        assert_eq!(target["dbname"], "warehouse");
        assert_eq!(target["schema"], "analytics");
        assert_eq!(target["sslmode"], "require");
        assert_eq!(password, "p@ss");
        assert!(!profile.to_string().contains("p@ss"));
        assert_eq!(target["password"], "{{ env_var('WEIR_DBT_PASSWORD', '') }}");
    }

    #[test]
    fn mariadb_and_sqlite_get_their_adapters() {
        let (p, _) = profile("mariadb://root@127.0.0.1/test", "test", 2).unwrap();
        assert_eq!(p["weir"]["outputs"]["weir"]["type"], "mariadb");
        assert_eq!(p["weir"]["outputs"]["weir"]["port"], 3306);
        let (p, _) = profile("sqlite:///tmp/w.db", "main", 2).unwrap();
        assert_eq!(p["weir"]["outputs"]["weir"]["type"], "sqlite");
        assert_eq!(
            p["weir"]["outputs"]["weir"]["schemas_and_paths"]["main"],
            "/tmp/w.db"
        );
    }
}
