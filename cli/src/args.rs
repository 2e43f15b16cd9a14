//! The command line (SPEC §5), declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// weir: a workflow orchestrator for data teams.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Configuration file (default: ./weir.toml when present).
    #[arg(long, global = true, env = "WEIR_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Scheduler, worker and web server in one process (embedded SQLite by default).
    Standalone {
        /// Serve the web UI and API without login, everyone an admin (loopback only).
        #[arg(long)]
        no_auth: bool,
        /// The web UI's address (default `[web] bind`, 127.0.0.1:8080), e.g. 0.0.0.0:9090.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
    /// Runs the scheduler.
    Scheduler {
        /// Also serve `/metrics` and `/health` on this address (e.g. 127.0.0.1:9101).
        #[arg(long, value_name = "ADDR")]
        metrics_bind: Option<std::net::SocketAddr>,
    },
    /// Runs a worker.
    Worker {
        /// Queues to take tasks from (comma-separated).
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// Task instances run at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Also serve `/metrics` and `/health` on this address (this worker's task durations
        /// and loaded rows, with the database's gauges).
        #[arg(long, value_name = "ADDR")]
        metrics_bind: Option<std::net::SocketAddr>,
    },
    /// Runs the web server.
    Web {
        /// Serve without login, everyone an admin (local development; loopback only).
        #[arg(long)]
        no_auth: bool,
        /// The address to listen on (default `[web] bind`, 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
    /// Metadata database commands.
    #[command(subcommand)]
    Db(DbCommand),
    /// The rows a load task rejected: the newest reject of each source line, or one run's.
    Rejects(RejectsArgs),
    /// DAG commands.
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Creates a manual run.
    Trigger(TriggerArgs),
    /// Creates runs for the intervals of a date range.
    Backfill(BackfillArgs),
    /// Task commands.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Run commands.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Resets task instances of a run so the scheduler runs them again.
    Clear(ClearArgs),
    /// Prints a task's log.
    Logs(LogsArgs),
    /// Web users and API tokens.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Assets: the tables and files steps write and read.
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// The environments of `python` and `dbt` tasks.
    #[command(subcommand)]
    Python(PythonCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum PythonCommand {
    /// Prints the folder of a `python` or `dbt` task's environment, building it first when
    /// this machine has none yet (`source "$(weir python env DAG TASK)/bin/activate"`).
    Env {
        /// The DAG.
        dag: String,
        /// The task.
        task: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AssetsCommand {
    /// Lists the assets weir has seen, with their latest update.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Records an update of an asset made outside weir: the DAGs scheduled on it run.
    Touch(TouchArgs),
    /// Lists an asset's events (writes and reads), newest first.
    Events {
        /// The asset (`connection.schema.table` or a location URL); all assets when absent.
        asset: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct TouchArgs {
    /// The asset: `connection.schema.table` or a location URL.
    pub(crate) asset: String,
    /// The data interval it covers: its start (a date or RFC 3339), with `--interval-end`.
    #[arg(long, value_name = "TIME", requires = "interval_end")]
    pub(crate) interval_start: Option<String>,
    /// The data interval's end.
    #[arg(long, value_name = "TIME", requires = "interval_start")]
    pub(crate) interval_end: Option<String>,
    /// Rows written.
    #[arg(long)]
    pub(crate) rows: Option<i64>,
    /// Anything else, a JSON object kept with the event.
    #[arg(long, value_name = "JSON")]
    pub(crate) details: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Applies the metadata schema migrations.
    Migrate,
    /// Deletes old runs with their task instances and logs.
    Cleanup {
        /// Age of the oldest run kept, e.g. `30d`.
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DagsCommand {
    /// Lists DAGs and import errors.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Checks DAG files; prints each problem as FILE:LINE:COL: message; exits 2 if any is invalid.
    Validate {
        /// Files or folders (default: the configured dags folder).
        paths: Vec<PathBuf>,
    },
    /// Shows a DAG's tasks and graph.
    Show {
        /// DAG id.
        dag: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Pauses a DAG: no new scheduled runs.
    Pause {
        /// DAG id.
        dag: String,
    },
    /// Unpauses a DAG.
    Unpause {
        /// DAG id.
        dag: String,
    },
    /// Prints the JSON Schema of the DAG format (for editors).
    Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ShowFormat {
    /// Readable levels view.
    Text,
    /// Graphviz.
    Dot,
    /// JSON.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    /// DAG id.
    pub(crate) dag: String,
    /// Parameter override `key=value` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub(crate) params: Vec<String>,
    /// Logical date (in the DAG's time zone; default: now).
    #[arg(long)]
    pub(crate) logical_date: Option<String>,
    /// Rerun when a run with this logical date exists.
    #[arg(long)]
    pub(crate) rerun: bool,
    /// Waits for the run to finish; exits 1 if it failed.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// DAG id.
    pub(crate) dag: String,
    /// First day (inclusive, in the DAG's time zone): 2024-03-01.
    #[arg(long)]
    pub(crate) from: String,
    /// Last day (inclusive).
    #[arg(long)]
    pub(crate) to: String,
    /// Parameter override `key=value` for every run (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub(crate) params: Vec<String>,
    /// Reruns runs of the range that failed.
    #[arg(long, conflicts_with = "rerun_all")]
    pub(crate) rerun_failed: bool,
    /// Reruns every run of the range.
    #[arg(long)]
    pub(crate) rerun_all: bool,
    /// Runs of the backfill active at once.
    #[arg(long)]
    pub(crate) max_active_runs: Option<u32>,
    /// Only the intervals the DAG never materialized: no run of it there succeeded (failed
    /// runs among them are rerun).
    #[arg(long, conflicts_with_all = ["rerun_all", "rerun_failed"])]
    pub(crate) missing: bool,
    /// Lists the intervals without creating runs.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Waits for the runs to finish.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RejectsArgs {
    /// DAG id.
    pub(crate) dag: String,
    /// The load task.
    pub(crate) task: String,
    /// Only this run's rejects.
    #[arg(long)]
    pub(crate) run: Option<String>,
    /// The target table, when the task's is a template (`schema.table`).
    #[arg(long)]
    pub(crate) table: Option<String>,
    /// Rows shown at most.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Runs one task locally; writes no state.
    Test {
        /// DAG id.
        dag: String,
        /// Task id.
        task: String,
        /// Logical date (default: today).
        #[arg(long)]
        date: Option<String>,
        /// Parameter override `key=value` (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// An upstream task's output the task reads, `task.key=value` (repeatable); a value
        /// that reads as JSON (`10`, `true`, `[1, 2]`) is that value, anything else is text.
        #[arg(long = "output", value_name = "TASK.KEY=VALUE")]
        outputs: Vec<String>,
        /// For a `foreach` task: the item (JSON, or plain text for a string).
        #[arg(long, conflicts_with = "map_index")]
        item: Option<String>,
        /// For a `foreach` task: the item at this index of its list (default 0).
        #[arg(long)]
        map_index: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Lists runs.
    List {
        /// Only this DAG's runs.
        dag: Option<String>,
        /// Only runs in this state.
        #[arg(long)]
        state: Option<String>,
        /// Which runs of the list.
        #[command(flatten)]
        page: Page,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Shows one run with its task instances.
    Show {
        /// Run id.
        run: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Which page of a list to show.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Page {
    /// At most this many, newest logical date first.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
    /// Skips this many first (the next page: `--offset 50`).
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ClearArgs {
    /// DAG id.
    pub(crate) dag: String,
    /// Run id.
    #[arg(long)]
    pub(crate) run: String,
    /// Only this task (default: all).
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Also the task's downstream tasks.
    #[arg(long)]
    pub(crate) downstream: bool,
    /// Only failed task instances.
    #[arg(long)]
    pub(crate) failed_only: bool,
    /// Rerun on the DAG's current version (default: the version the run pinned when it was
    /// created; the run moves to the current one, with its new tasks and without dropped ones).
    #[arg(long)]
    pub(crate) latest_version: bool,
    /// Also forgets incremental load cursors.
    #[arg(long)]
    pub(crate) reset_state: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Run id.
    pub(crate) run: String,
    /// Task id.
    pub(crate) task: String,
    /// Try number (default: the latest).
    #[arg(long = "try")]
    pub(crate) try_number: Option<u32>,
    /// Only this instance of a `foreach` task (default: every instance).
    #[arg(long)]
    pub(crate) map_index: Option<i32>,
    /// Keeps printing as the log grows.
    #[arg(long)]
    pub(crate) follow: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Creates a user.
    Create {
        /// User name.
        name: String,
        /// Role.
        #[arg(long, value_enum)]
        role: Role,
        /// Reads the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists users.
    List,
    /// Deletes a user.
    Delete {
        /// User name.
        name: String,
    },
    /// Mints an API token (printed once).
    Token {
        /// User name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Role {
    /// Reads.
    Viewer,
    /// Triggers, clears, pauses, backfills.
    Operator,
    /// Manages users.
    Admin,
}
