//! `weir rejects DAG TASK`: the rows a load rejected, read from its target's
//! `<table>__rejects`. Every run appends its rejects (a rerun of the same file rejects the same
//! lines again), so by default each source line is shown once, with its newest reject; `--run`
//! shows one run's.

use anyhow::{Context, Result, bail};
use weir_model::Step;
use weir_scheduler::folder::{find_dag, load_dag_files};
use weir_worker::conn::Connections;
use weir_worker::step::sqltext::text_rows;

use super::EXIT_OK;
use crate::args::RejectsArgs;
use crate::config::Config;

pub(crate) async fn show(config: &Config, args: &RejectsArgs) -> Result<u8> {
    let files = load_dag_files(
        std::slice::from_ref(&config.dags_folder),
        Some(&config.known()),
    )?;
    let (_, dag) = find_dag(&files, &args.dag)?;
    let Some(task) = dag.tasks.get(&args.task) else {
        bail!("DAG `{}` has no task `{}`", args.dag, args.task);
    };
    let Step::Load(load) = &task.step else {
        bail!(
            "task `{}` is a `{}` step; only loads reject rows",
            args.task,
            task.step.kind()
        );
    };
    let table = match &args.table {
        Some(t) => t.clone(),
        None if weir_model::template::is_template(&load.target.table) => bail!(
            "the target table of `{}` is a template (`{}`): name it with --table",
            args.task,
            load.target.table
        ),
        None => load.target.table.clone(),
    };
    let conns = Connections::new(config.connection_urls());
    let pool = conns
        .pool(&load.target.conn)
        .await
        .with_context(|| format!("connection `{}`", load.target.conn))?;
    let d = pool.dialect();
    let text = |v: &str| d.literal(&serde_json::Value::String(v.to_owned()));
    let rejects = d
        .ident(&format!("{table}__rejects"))
        .map_err(anyhow::Error::msg)?;
    let task_id = text(&args.task).map_err(anyhow::Error::msg)?;
    let columns = "run_id, source_file, line_number, reason, raw_row, rejected_at";
    let sql = match &args.run {
        Some(run) => format!(
            "SELECT {columns} FROM {rejects} WHERE task_id = {task_id} AND run_id = {} ORDER BY source_file, line_number",
            text(run).map_err(anyhow::Error::msg)?
        ),
        None => format!(
            "SELECT {columns} FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY source_file, line_number \
             ORDER BY rejected_at DESC, run_id DESC) AS weir_n FROM {rejects} r WHERE task_id = {task_id}) x \
             WHERE weir_n = 1 ORDER BY source_file, line_number"
        ),
    };
    let rows = text_rows(&pool, &sql, args.limit.saturating_add(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "reading {table}__rejects: {}",
                weir_worker::conn::db_error(&e)
            )
        })?;
    let more = rows.len() > args.limit;
    let rows: Vec<_> = rows.into_iter().take(args.limit).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(EXIT_OK);
    }
    let field = |r: &serde_json::Map<String, serde_json::Value>, k: &str| {
        r.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    println!(
        "{} rejected line(s) of {}.{} in {table}__rejects ({}){}",
        rows.len(),
        args.dag,
        args.task,
        args.run.as_ref().map_or_else(
            || "the newest reject of each line".to_owned(),
            |r| format!("run {r}")
        ),
        if more {
            ", more not shown (--limit)"
        } else {
            ""
        }
    );
    for r in &rows {
        println!(
            "{}:{}: {} [run {}]",
            field(r, "source_file"),
            field(r, "line_number"),
            field(r, "reason"),
            field(r, "run_id")
        );
        println!("    {}", field(r, "raw_row"));
    }
    Ok(EXIT_OK)
}
