//! The YAML mirror of the kinds that run a data engineer's own code in an environment weir
//! builds: `python` and `dbt`.

use super::*;

/// `kind: python`: a script run by an interpreter in an environment built for its
/// requirements (cached by their hash, shared by tasks and runs on a worker).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PythonStep {
    /// The script, inline (or `file`). Not a template: it reads the run through its context
    /// (`main(ctx)`, or `weir.context()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// A `.py` file instead of `script` (relative to the DAG file; stored with the DAG version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Packages to install: a list of requirement lines (`pandas==2.3.3`), or a
    /// `requirements.txt` / `pyproject.toml` beside the DAG file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    /// The Python version (`"3.11"`, `"3.12.1"`: quoted, or YAML reads `3.10` as 3.1);
    /// default: the `python3` the worker finds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "python_version"
    )]
    pub python: Option<String>,
    /// Connections (configuration names) whose URLs the script receives in `ctx["conns"]`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub conns: Vec<String>,
    /// Extra environment variables (templated).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Text>,
}

/// A python or dbt step's packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Requirements {
    /// Requirement lines, as pip reads them (`pandas==2.3.3`, `requests>=2,<3`).
    List(Vec<String>),
    /// A `requirements.txt` or `pyproject.toml` (relative to the DAG file; stored with the DAG
    /// version).
    File(String),
}

/// `kind: dbt`: a dbt project run with dbt-core against a weir connection.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DbtStep {
    /// The project's folder (holding `dbt_project.yml`), relative to the DAG file; its files
    /// are stored with the DAG version (not `target/`, `logs/` or hidden ones).
    pub project: String,
    /// The connection dbt works on (Postgres, MySQL/MariaDB or SQLite): weir writes dbt's
    /// profile from it.
    pub conn: String,
    /// What dbt does (default `build`).
    #[serde(default)]
    pub command: DbtCommand,
    /// dbt's `--select`: node selectors (templated).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub select: Vec<String>,
    /// dbt's `--exclude` (templated).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "crate::schema::one_or_many_strings")]
    pub exclude: Vec<String>,
    /// dbt's `--vars` (templated: `ds: "{{ ds }}"`). weir adds `weir_ds`,
    /// `weir_data_interval_start`, `weir_data_interval_end`, `weir_run_id` and `weir_dag_id`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, serde_json::Value>,
    /// The schema models are built in (default: the connection's: `public` on Postgres, the
    /// URL's database on MySQL, `main` on SQLite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Models dbt builds at once (default 4; 1..=64).
    #[serde(default = "default_dbt_threads")]
    pub threads: u32,
    /// `--full-refresh`: incremental models and seeds are rebuilt from scratch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_refresh: bool,
    /// The packages of dbt's environment, instead of weir's pinned dbt-core and adapter for
    /// the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    /// The Python version of dbt's environment (quoted: `"3.11"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "python_version"
    )]
    pub python: Option<String>,
    /// Extra environment variables (templated), read by the project's `env_var()`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Text>,
}

/// A Python version is text: `3.10` unquoted is the number 3.1 to YAML, which would silently
/// ask for another Python; a number is refused with the way to write it.
fn python_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    match Written::deserialize(d)? {
        Written::Text(v) => Ok(Some(v)),
        Written::Number(n) => Err(serde::de::Error::custom(format!(
            "write the Python version in quotes (`python: \"3.12\"`): unquoted, YAML reads it as the number {n} (`3.10` becomes 3.1)"
        ))),
    }
}

fn default_dbt_threads() -> u32 {
    4
}

/// dbt commands a `dbt` step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DbtCommand {
    /// Seeds, models, snapshots and tests, in DAG order.
    #[default]
    Build,
    /// Models.
    Run,
    /// Tests.
    Test,
    /// Seeds.
    Seed,
    /// Snapshots.
    Snapshot,
}

impl DbtCommand {
    /// The command as dbt's command line writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DbtCommand::Build => "build",
            DbtCommand::Run => "run",
            DbtCommand::Test => "test",
            DbtCommand::Seed => "seed",
            DbtCommand::Snapshot => "snapshot",
        }
    }
}
