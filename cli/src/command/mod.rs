//! One module per command group; each returns the process exit code.

mod backfill;
mod dags;
mod standalone;

use std::process::ExitCode;

use anyhow::Result;

use crate::args::{Cli, Command, DagsCommand};
use crate::config::Config;

/// Success.
pub(crate) const EXIT_OK: u8 = 0;
/// Bad usage, invalid DAG, or a command that is not built yet.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let code = match cli.command {
        Command::Dags(DagsCommand::Validate { paths }) => dags::validate(&config, &paths)?,
        Command::Dags(DagsCommand::List { json }) => dags::list(&config, json)?,
        Command::Dags(DagsCommand::Show { dag, format }) => dags::show(&config, &dag, format)?,
        Command::Dags(DagsCommand::Schema) => dags::schema()?,
        Command::Backfill(args) if args.dry_run => backfill::dry_run(&config, &args)?,
        Command::Standalone => standalone::run(&config)?,
        other => not_built(&other),
    };
    Ok(ExitCode::from(code))
}

/// Commands whose engine is not built yet say so and exit 2: nothing pretends to work.
fn not_built(command: &Command) -> u8 {
    let name = match command {
        Command::Scheduler => "scheduler",
        Command::Worker { .. } => "worker",
        Command::Web => "web",
        Command::Db(_) => "db",
        Command::Dags(DagsCommand::Pause { .. }) => "dags pause",
        Command::Dags(DagsCommand::Unpause { .. }) => "dags unpause",
        Command::Trigger(_) => "trigger",
        Command::Backfill(_) => "backfill (without --dry-run)",
        Command::Tasks(_) => "tasks test",
        Command::Runs(_) => "runs",
        Command::Clear(_) => "clear",
        Command::Logs(_) => "logs",
        Command::Users(_) => "users",
        _ => "this command",
    };
    eprintln!(
        "weir {name}: not built yet. It needs the state store, scheduler and workers, which are the next milestone; see the README's status section."
    );
    EXIT_USAGE
}
