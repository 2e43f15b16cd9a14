//! Remote mode: with `[remote] url` (or `WEIR_API_URL`) and an API token (`[remote] token`
//! or `WEIR_API_TOKEN`), the commands that ask weir something go to a weir web server's API
//! instead of the database: `dags list|pause|unpause`, `trigger`, `backfill`, `runs list|show`,
//! `logs` and `clear`. Their `--json` output is the API's, which has the local shapes.
//! Everything else (services, `db`, `users`, `dags validate|show|schema`, `tasks test`)
//! stays local.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use weir_model::param::ParamType;
use weir_model::text::url_segment;

use crate::args::{
    AssetsCommand, BackfillArgs, ClearArgs, Command, DagsCommand, LogsArgs, RunsCommand, TouchArgs,
    TriggerArgs,
};
use crate::command::runs::{TaskLine, write_run};
use crate::command::{EXIT_FAILED, EXIT_OK};

/// How often `--wait` asks for the run again.
const POLL: Duration = Duration::from_secs(1);

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[error("{message} (the API answered {status})")]
pub(crate) struct ApiError {
    status: u16,
    message: String,
}

/// A weir web server's API, with a token.
pub(crate) struct Remote {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl Remote {
    /// The remote of the configuration, when one is set.
    pub(crate) fn new(url: &str, token: Option<&str>) -> Result<Remote> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            bail!(
                "remote mode ({url}) needs an API token: set WEIR_API_TOKEN or [remote] token (`weir users token NAME` mints one)"
            );
        };
        // reqwest is built without a default TLS provider (the workspace picks ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Remote {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .context("building the HTTP client")?,
            api: format!("{}/api/v1", url.trim_end_matches('/')),
            token: token.to_owned(),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the weir API at {}", self.api))?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(ApiError { status, message }.into())
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .send(reqwest::Method::GET, path, None)
            .await?
            .json()
            .await?)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self
            .send(reqwest::Method::POST, path, Some(body))
            .await?
            .json()
            .await?)
    }
}

/// Whether `command` goes to the API in remote mode.
pub(crate) fn handles(command: &Command) -> bool {
    matches!(
        command,
        Command::Dags(
            DagsCommand::List { .. } | DagsCommand::Pause { .. } | DagsCommand::Unpause { .. }
        ) | Command::Trigger(_)
            | Command::Backfill(_)
            | Command::Runs(_)
            | Command::Logs(_)
            | Command::Clear(_)
            | Command::Assets(AssetsCommand::Touch(_))
    )
}

/// Runs `command` against the API; `None` when it is a command that always runs locally.
pub(crate) async fn run(remote: &Remote, command: &Command) -> Option<Result<u8>> {
    Some(match command {
        Command::Dags(DagsCommand::List { json }) => dags_list(remote, *json).await,
        Command::Dags(DagsCommand::Pause { dag }) => pause(remote, dag, true).await,
        Command::Dags(DagsCommand::Unpause { dag }) => pause(remote, dag, false).await,
        Command::Trigger(args) => trigger(remote, args).await,
        Command::Backfill(args) => backfill(remote, args).await,
        Command::Runs(RunsCommand::List {
            dag,
            state,
            page,
            json,
        }) => runs_list(remote, dag.as_deref(), state.as_deref(), page, *json).await,
        Command::Runs(RunsCommand::Show { run, json }) => runs_show(remote, run, *json).await,
        Command::Logs(args) => logs(remote, args).await,
        Command::Clear(args) => clear(remote, args).await,
        Command::Assets(AssetsCommand::Touch(args)) => touch(remote, args).await,
        _ => return None,
    })
}

fn print_json(v: &Value) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(EXIT_OK)
}

async fn dags_list(remote: &Remote, json: bool) -> Result<u8> {
    let dags = remote.get("/dags?limit=1000").await?;
    if json {
        return print_json(&dags);
    }
    let mut out = std::io::stdout().lock();
    let list: Vec<&serde_json::Value> = dags.as_array().into_iter().flatten().collect();
    let width = list
        .iter()
        .filter_map(|d| d["dag_id"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:<width$}  {:<16}  {:<20}  {:<7}  FILE",
        "DAG ID", "SCHEDULE", "TIMEZONE", "STATE"
    )?;
    for d in list {
        writeln!(
            out,
            "{:<width$}  {:<16}  {:<20}  {:<7}  {}{}",
            d["dag_id"].as_str().unwrap_or(""),
            d["schedule"].as_str().unwrap_or("(manual)"),
            d["timezone"].as_str().unwrap_or(""),
            crate::command::dags::dag_state(d["paused"] == true, d["removed_at"].is_string()),
            d["file"].as_str().unwrap_or(""),
            crate::command::dags::dag_note(d["import_error"].is_string(), d["removed_at"].as_str()),
        )?;
    }
    Ok(EXIT_OK)
}

async fn pause(remote: &Remote, dag: &str, paused: bool) -> Result<u8> {
    let action = if paused { "pause" } else { "unpause" };
    let answer = remote
        .post(&format!("/dags/{}/{action}", url_segment(dag)), &json!({}))
        .await?;
    let word = if paused { "paused" } else { "unpaused" };
    let already = if answer["changed"] == false {
        "was already "
    } else {
        ""
    };
    println!("{dag} {already}{word}");
    Ok(EXIT_OK)
}

/// The type of param `name` of a DAG read from the API (`None`: no such param; `Some(None)`:
/// any type).
fn param_type(dag: &Value, name: &str) -> Option<Option<ParamType>> {
    dag["params"].get(name)?;
    Some(
        dag["param_declarations"][name]["type"]
            .as_str()
            .and_then(ParamType::from_name),
    )
}

async fn trigger(remote: &Remote, args: &TriggerArgs) -> Result<u8> {
    let dag = remote
        .get(&format!("/dags/{}", url_segment(&args.dag)))
        .await?;
    let params = weir_ops::runs::parse_param_pairs(|k| param_type(&dag, k), &args.params)?;
    let body = json!({"params": params, "logical_date": args.logical_date, "rerun": args.rerun});
    let run = match remote
        .post(&format!("/dags/{}/runs", url_segment(&args.dag)), &body)
        .await
    {
        Ok(run) => run,
        Err(e) => match e.downcast_ref::<ApiError>() {
            Some(a) if a.status == 409 => bail!("{}: pass --rerun to run it again", a.message),
            _ => return Err(e),
        },
    };
    let run_id = run["run_id"]
        .as_str()
        .context("the API's run has no run_id")?
        .to_owned();
    if !args.json {
        eprintln!(
            "triggered {run_id} (logical date {})",
            run["logical_date"].as_str().unwrap_or("")
        );
    }
    let run = if args.wait {
        wait_for(remote, &run_id).await?
    } else {
        run
    };
    if args.json {
        print_json(&run)?;
    } else if args.wait {
        print_run(&run)?;
    }
    Ok(if args.wait && run["state"] != "success" {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

async fn wait_for(remote: &Remote, run_id: &str) -> Result<Value> {
    loop {
        let run = remote
            .get(&format!("/runs/{}", url_segment(run_id)))
            .await?;
        if matches!(
            run["state"].as_str(),
            Some("success" | "failed" | "cancelled")
        ) {
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An RFC 3339 time of the API's JSON.
fn time(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Prints a run of the API as the local CLI does (the same function writes both).
fn print_run(run: &Value) -> Result<()> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let tasks = run["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| TaskLine {
            label: crate::command::runs::label(
                &s(&t["task_id"]),
                t["map_index"]
                    .as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .unwrap_or(-1),
            ),
            task_id: s(&t["task_id"]),
            state: s(&t["state"]),
            try_number: t["try_number"].as_i64().unwrap_or(0),
            started: time(&t["started_at"]),
            ended: time(&t["ended_at"]),
            error: t["error"].as_str().map(str::to_owned),
        })
        .collect();
    let header = crate::command::runs::RunHeader {
        run_id: s(&run["run_id"]),
        state: s(&run["state"]),
        dag_id: s(&run["dag_id"]),
        run_type: s(&run["run_type"]),
        logical_date: time(&run["logical_date"]).unwrap_or_default(),
        timezone: run["timezone"].as_str().unwrap_or("UTC").to_owned(),
        started: time(&run["started_at"]),
        ended: time(&run["ended_at"]),
    };
    write_run(&header, tasks)
}

async fn backfill(remote: &Remote, args: &BackfillArgs) -> Result<u8> {
    if args.max_active_runs.is_some() {
        bail!(
            "--max-active-runs is not available in remote mode (the API creates every run at once)"
        );
    }
    let rerun = if args.rerun_all {
        "all"
    } else if args.rerun_failed {
        "failed"
    } else {
        "none"
    };
    let (from, to) = crate::command::runs::backfill_days(args)?;
    let dag = remote
        .get(&format!("/dags/{}", url_segment(&args.dag)))
        .await?;
    let params = weir_ops::runs::parse_param_pairs(|k| param_type(&dag, k), &args.params)?;
    let body =
        json!({"from": from, "to": to, "dry_run": args.dry_run, "rerun": rerun, "params": params});
    let answer = remote
        .post(
            &format!("/dags/{}/backfills", url_segment(&args.dag)),
            &body,
        )
        .await?;
    if args.dry_run {
        if args.json {
            return print_json(&answer);
        }
        for i in answer.as_array().into_iter().flatten() {
            println!("{}", i["logical_date"].as_str().unwrap_or(""));
        }
        return Ok(EXIT_OK);
    }
    eprintln!(
        "backfill of `{}`: {} run(s) created, {} rerun, {} existing kept",
        args.dag, answer["created"], answer["rerun"], answer["kept"]
    );
    if !args.wait && !args.json {
        return Ok(EXIT_OK);
    }
    // Each run as it is now, or, with --wait, once it has finished.
    let mut runs = Vec::new();
    for id in answer["run_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        runs.push(if args.wait {
            wait_for(remote, id).await?
        } else {
            remote.get(&format!("/runs/{}", url_segment(id))).await?
        });
    }
    if !args.wait {
        return print_json(&Value::Array(runs));
    }
    let failed = runs.iter().filter(|r| r["state"] != "success").count();
    if args.json {
        print_json(&Value::Array(runs.clone()))?;
    }
    eprintln!("{} run(s) finished, {failed} failed", runs.len());
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

async fn runs_list(
    remote: &Remote,
    dag: Option<&str>,
    state: Option<&str>,
    page: &crate::args::Page,
    json: bool,
) -> Result<u8> {
    let Some(dag) = dag else {
        bail!("in remote mode `runs list` needs a DAG: weir runs list DAG");
    };
    let limit = page.limit.max(1);
    // One more than shown: whether a next page exists.
    let mut path = format!(
        "/dags/{}/runs?limit={}&offset={}",
        url_segment(dag),
        limit + 1,
        page.offset
    );
    if let Some(s) = state {
        path.push_str(&format!("&state={}", url_segment(s)));
    }
    let mut runs: Vec<Value> = remote
        .get(&path)
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default();
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    if json {
        print_json(&Value::Array(runs.clone()))?;
    } else {
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let rows: Vec<crate::command::runs::RunListLine> = runs
            .iter()
            .map(|r| crate::command::runs::RunListLine {
                run_id: s(&r["run_id"]),
                state: s(&r["state"]),
                run_type: s(&r["run_type"]),
                logical: crate::command::runs::logical(
                    time(&r["logical_date"]).unwrap_or_default(),
                    r["timezone"].as_str().unwrap_or("UTC"),
                ),
                started: s(&r["started_at"]),
                took: crate::command::runs::took(time(&r["started_at"]), time(&r["ended_at"])),
            })
            .collect();
        crate::command::runs::write_run_list(&mut std::io::stdout().lock(), &rows)?;
    }
    let shown = runs.len() as i64;
    // The API does not count: a next page is known to exist, or not.
    let total = i64::from(page.offset) + shown + i64::from(more);
    if more {
        let last = i64::from(page.offset) + shown;
        eprintln!(
            "runs {}-{last}, newest first; more follow: --offset {last}",
            i64::from(page.offset) + 1
        );
    } else {
        crate::command::runs::say_page(runs.len(), total, page);
    }
    Ok(EXIT_OK)
}

async fn runs_show(remote: &Remote, run: &str, json: bool) -> Result<u8> {
    let run = remote.get(&format!("/runs/{}", url_segment(run))).await?;
    if json {
        return print_json(&run);
    }
    print_run(&run)?;
    Ok(EXIT_OK)
}

async fn clear(remote: &Remote, args: &ClearArgs) -> Result<u8> {
    if args.reset_state {
        bail!("--reset-state is not available in remote mode (run it where the database is)");
    }
    let run = remote
        .get(&format!("/runs/{}", url_segment(&args.run)))
        .await?;
    if run["dag_id"] != args.dag.as_str() {
        bail!(
            "run {} belongs to DAG `{}`, not `{}`",
            args.run,
            run["dag_id"].as_str().unwrap_or(""),
            args.dag
        );
    }
    let body = json!({"task_ids": args.task.iter().collect::<Vec<_>>(), "downstream": args.downstream, "failed_only": args.failed_only, "latest_version": args.latest_version});
    let answer = remote
        .post(&format!("/runs/{}/clear", url_segment(&args.run)), &body)
        .await?;
    println!(
        "cleared {} task instance(s) of {}",
        answer["changed"], args.run
    );
    Ok(EXIT_OK)
}

/// Prints a try's log; with `--follow`, reads the live stream the web UI reads (Server-Sent
/// Events) until the try ends.
async fn logs(remote: &Remote, args: &LogsArgs) -> Result<u8> {
    let mut query: Vec<String> = Vec::new();
    if let Some(n) = args.try_number {
        query.push(format!("try={n}"));
    }
    if let Some(m) = args.map_index {
        query.push(format!("map_index={m}"));
    }
    let try_q = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let path = format!(
        "/runs/{}/tasks/{}/logs{try_q}",
        url_segment(&args.run),
        url_segment(&args.task)
    );
    let mut res = remote.send(reqwest::Method::GET, &path, None).await?;
    let mut out = std::io::stdout();
    let mut lines = 0_i64;
    while let Some(chunk) = res.chunk().await? {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as i64;
        out.write_all(&chunk)?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(EXIT_OK);
    }
    // The live stream sends the lines after a line id; the text answer has none, so follow
    // from the start and skip the lines already printed.
    let base = remote.api.trim_end_matches("/api/v1");
    let sep = if try_q.is_empty() { '?' } else { '&' };
    let url = format!(
        "{base}/live/runs/{}/tasks/{}/log{try_q}{sep}after=0",
        url_segment(&args.run),
        url_segment(&args.task)
    );
    let res = remote
        .http
        .get(&url)
        .bearer_auth(&remote.token)
        .timeout(Duration::from_secs(24 * 3600))
        .send()
        .await?
        .error_for_status()?;
    // The body's chunks, read as Server-Sent Events by `eventsource-stream` (events split
    // across chunks, CRLF or LF line ends, a UTF-8 character split between two chunks).
    let chunks = futures_util::stream::unfold(res, |mut res| async move {
        match res.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), res)),
            Ok(None) => None,
            Err(e) => Some((Err(e), res)),
        }
    });
    let mut events = std::pin::pin!(eventsource_stream::Eventsource::eventsource(chunks));
    let mut skip = lines;
    while let Some(event) = futures_util::StreamExt::next(&mut events).await {
        let event = event.map_err(|e| anyhow::anyhow!("reading the log stream: {e}"))?;
        match event.event.as_str() {
            "lines" => {
                let batch: Vec<Value> = serde_json::from_str(&event.data)?;
                for l in batch {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    writeln!(out, "{}", l["line"].as_str().unwrap_or(""))?;
                }
                out.flush()?;
            }
            "end" => return Ok(EXIT_OK),
            "error" => bail!("the log stream failed: {}", event.data),
            _ => {}
        }
    }
    Ok(EXIT_OK)
}

async fn touch(remote: &Remote, args: &TouchArgs) -> Result<u8> {
    let event = crate::command::assets::touch_event(args, "api")?;
    let mut body =
        json!({ "asset": event.key, "rows": event.counts.rows, "details": event.details });
    if let Some((start, end)) = event.interval {
        body["interval_start"] = json!(start);
        body["interval_end"] = json!(end);
    }
    let answer = remote.post("/assets/events", &body).await?;
    println!(
        "recorded an update of {} (event {})",
        args.asset, answer["event_id"]
    );
    Ok(EXIT_OK)
}
