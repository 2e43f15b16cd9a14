//! One module per command group; each returns the process exit code.

pub(crate) mod assets;
mod backfill;
pub(crate) mod dags;
mod python;
mod rejects;
pub(crate) mod runs;
mod serve;
mod task_test;
mod users;

use std::process::ExitCode;

use anyhow::Result;

use crate::args::{
    AssetsCommand, Cli, Command, DagsCommand, DbCommand, PythonCommand, RunsCommand, TasksCommand,
    UsersCommand,
};
use crate::config::Config;

/// Success.
pub(crate) const EXIT_OK: u8 = 0;
/// The run or task failed (with `--wait`, `tasks test`).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Bad usage or an invalid DAG.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let code = runtime()?.block_on(run_async(&config, cli.command))?;
    Ok(ExitCode::from(code))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn run_async(config: &Config, command: Command) -> Result<u8> {
    if let Some(url) = config.remote.url.as_deref()
        && crate::remote::handles(&command)
    {
        let remote = crate::remote::Remote::new(url, config.remote.token.as_deref())?;
        if let Some(code) = crate::remote::run(&remote, &command).await {
            return code;
        }
    }
    Ok(match command {
        Command::Standalone { no_auth, bind } => {
            serve::standalone(&config.with_bind(bind), no_auth).await?
        }
        Command::Web { no_auth, bind } => serve::web(&config.with_bind(bind), no_auth).await?,
        Command::Scheduler { metrics_bind } => serve::scheduler(config, metrics_bind).await?,
        Command::Worker {
            queues,
            concurrency,
            metrics_bind,
        } => serve::worker(config, &queues, concurrency, metrics_bind).await?,
        Command::Db(DbCommand::Migrate) => serve::migrate(config).await?,
        Command::Db(DbCommand::Cleanup { older_than }) => {
            serve::cleanup(config, &older_than).await?
        }
        Command::Dags(DagsCommand::Validate { paths }) => dags::validate(config, &paths)?,
        Command::Dags(DagsCommand::Show { dag, format }) => dags::show(config, &dag, format)?,
        Command::Dags(DagsCommand::Schema) => dags::schema()?,
        Command::Dags(DagsCommand::List { json }) => dags::list(config, json).await?,
        Command::Dags(DagsCommand::Pause { dag }) => dags::set_paused(config, &dag, true).await?,
        Command::Dags(DagsCommand::Unpause { dag }) => {
            dags::set_paused(config, &dag, false).await?
        }
        Command::Trigger(args) => runs::trigger(config, &args).await?,
        Command::Backfill(args) if args.dry_run && !args.missing => {
            backfill::dry_run(config, &args)?
        }
        Command::Backfill(args) => runs::backfill(config, &args).await?,
        Command::Runs(RunsCommand::List {
            dag,
            state,
            page,
            json,
        }) => runs::list(config, dag.as_deref(), state.as_deref(), &page, json).await?,
        Command::Runs(RunsCommand::Show { run, json }) => runs::show(config, &run, json).await?,
        Command::Logs(args) => runs::logs(config, &args).await?,
        Command::Clear(args) => runs::clear(config, &args).await?,
        Command::Rejects(args) => rejects::show(config, &args).await?,
        Command::Tasks(TasksCommand::Test {
            dag,
            task,
            date,
            params,
            outputs,
            item,
            map_index,
        }) => {
            let given = task_test::Given {
                date,
                params,
                outputs,
                item,
                map_index,
            };
            task_test::test(config, &dag, &task, &given).await?
        }
        Command::Users(UsersCommand::Create {
            name,
            role,
            password_stdin,
        }) => users::create(config, &name, role, password_stdin).await?,
        Command::Users(UsersCommand::List) => users::list(config).await?,
        Command::Users(UsersCommand::Delete { name }) => users::delete(config, &name).await?,
        Command::Users(UsersCommand::Token { name }) => users::token(config, &name).await?,
        Command::Assets(AssetsCommand::List { json }) => assets::list(config, json).await?,
        Command::Assets(AssetsCommand::Touch(args)) => assets::touch(config, &args).await?,
        Command::Assets(AssetsCommand::Events { asset, limit, json }) => {
            assets::events(config, asset.as_deref(), limit, json).await?
        }
        Command::Python(PythonCommand::Env { dag, task }) => {
            python::env(config, &dag, &task).await?
        }
    })
}
