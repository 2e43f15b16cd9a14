//! Checks of a decoded spec as a whole: ids, dates and bounds, params, dependencies, and
//! references to connections, pools and notifiers the configuration lacks.

use super::*;

pub(super) fn check_spec(
    spec: &DagSpec,
    places: Option<&Places<'_>>,
    known: Option<&Known>,
    out: &mut Vec<Diagnostic>,
) -> TaskGraph {
    let key = |k: &str| places.and_then(|p| p.key(k));
    let task_loc = |id: &str| places.and_then(|p| p.task(id));
    let task_key = |id: &str, k: &str| places.and_then(|p| p.task_key(id, k));

    if let Err(e) = check_id(&spec.id) {
        out.push(Diagnostic::error(key("id"), format!("DAG id {e}")));
    }
    let tz = spec.timezone.map_or(Tz::UTC, |t| t.0);
    // A `start_date` that failed to decode was reported already: no second message for it.
    let start_written = places.is_some_and(|p| p.root.get("start_date").is_some());
    let cron = spec
        .schedule
        .as_ref()
        .and_then(crate::asset::ScheduleSpec::cron);
    if cron.is_some() && spec.start_date.is_none() && !start_written {
        out.push(Diagnostic::error(
            key("schedule"),
            "a scheduled DAG needs a `start_date` (the first logical date)",
        ));
    }
    if let (Some(start), Some(end)) = (spec.start_date, spec.end_date)
        && end.resolve(tz) < start.resolve(tz)
    {
        out.push(Diagnostic::error(
            key("end_date"),
            format!("`end_date` {end} is before `start_date` {start}"),
        ));
    }
    if let Some(start) = spec.start_date {
        let start = start.resolve(tz);
        if cron.is_some() && chrono::Datelike::year(&start) > crate::schedule::LAST_SCHEDULED_YEAR {
            out.push(Diagnostic::error(
                key("start_date"),
                format!(
                    "`start_date` {} is after {}, the last year weir schedules in: the DAG would never run",
                    start.format("%Y-%m-%d"),
                    crate::schedule::LAST_SCHEDULED_YEAR
                ),
            ));
        }
        if chrono::Datelike::year(&start) < 1970 {
            out.push(Diagnostic::warning(
                key("start_date"),
                format!(
                    "`start_date` {} is before 1970: is the year a typo?",
                    start.format("%Y-%m-%d")
                ),
            ));
        }
        if spec.catchup
            && let Some(crate::Schedule::Cron(cron)) = cron
        {
            let limit = spec.max_catchup_runs as usize;
            let missed = crate::schedule::count_intervals(cron, tz, start, Utc::now(), limit + 1);
            if missed > limit {
                out.push(Diagnostic::warning(
                    key("catchup"),
                    format!(
                        "`catchup` from {} spans more than {limit} intervals: only the latest {limit} run (`max_catchup_runs`); raise it to run more, or backfill older days on purpose",
                        start.format("%Y-%m-%d")
                    ),
                ));
            }
        }
    }
    for (name, value) in [
        ("max_active_runs", spec.max_active_runs),
        ("max_catchup_runs", spec.max_catchup_runs),
        ("max_active_tasks", spec.max_active_tasks),
    ] {
        if value == 0 {
            out.push(Diagnostic::error(
                key(name),
                format!("`{name}` must be at least 1"),
            ));
        }
    }
    if let Some(b) = spec.defaults.retry_backoff {
        check_backoff(
            b,
            places
                .and_then(|p| p.root.get("defaults"))
                .and_then(|d| d.get("retry_backoff"))
                .map(|n| n.loc),
            "defaults",
            out,
        );
    }
    for (name, raw) in &spec.params {
        let at = places
            .and_then(|p| p.root.get("params"))
            .and_then(|p| p.get(name))
            .map(|n| n.loc)
            .or_else(|| key("params"));
        if !is_identifier(name) {
            out.push(Diagnostic::error(at, format!("param `{name}` must be a plain name ([A-Za-z_][A-Za-z0-9_]*) to be usable as `params.{name}`")));
        }
        if let Err(e) = crate::param::Param::parse(raw) {
            out.push(Diagnostic::error(at, format!("param `{name}`: {e}")));
        }
    }

    let ids: Vec<&str> = spec.tasks.keys().map(String::as_str).collect();
    for (id, task) in &spec.tasks {
        if let Err(e) = check_task_id(id) {
            out.push(Diagnostic::error(task_loc(id), format!("task id {e}")));
        }
        let mut seen = HashSet::new();
        for dep in &task.common.depends_on {
            let loc = places.and_then(|p| p.dependency(id, dep));
            if dep == id {
                out.push(Diagnostic::error(
                    loc,
                    format!("task `{id}` depends on itself"),
                ));
            } else if !spec.tasks.contains_key(dep) {
                let hint = did_you_mean(dep, ids.iter().copied().filter(|t| t != id))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                out.push(Diagnostic::error(
                    loc,
                    format!(
                        "task `{id}` depends on `{dep}`, which is not a task of this DAG{hint}"
                    ),
                ));
            } else if !seen.insert(dep) {
                out.push(Diagnostic::warning(
                    loc,
                    format!("task `{id}` lists `{dep}` twice in `depends_on`"),
                ));
            }
        }
        if let Some(b) = task.common.retry_backoff {
            check_backoff(
                b,
                task_key(id, "retry_backoff"),
                &format!("task `{id}`"),
                out,
            );
        }
        check_step(id, &task.step, &|k| task_key(id, k), out);
        for (field, keys) in [
            ("produces", &task.common.produces),
            ("consumes", &task.common.consumes),
        ] {
            for k in keys.iter().filter(|k| !crate::template::is_template(k)) {
                if let Err(e) = crate::asset::parse_asset_key(k) {
                    out.push(Diagnostic::error(
                        task_key(id, field),
                        format!("task `{id}`: `{field}`: {e}"),
                    ));
                }
            }
        }
        if let Some(known) = known {
            check_references(id, task, known, &|k| task_key(id, k), out);
        }
    }
    if let Some(known) = known {
        check_default_references(spec, known, places, out);
        for (field, names) in [
            ("on_failure", &spec.on_failure),
            ("on_success", &spec.on_success),
        ] {
            for n in names.iter().filter(|n| !known.notifiers.contains(*n)) {
                out.push(Diagnostic::warning(
                    key(field),
                    format!(
                        "notifier `{n}` is not in the configuration (it will fail at run time)"
                    ),
                ));
            }
        }
    }
    check_assets(spec, places, known, out);
    let graph = graph_of(spec);
    check_cycles(spec, &graph, places, out);
    graph
}

/// The DAG's `assets:` entries, and a schedule on assets the DAG itself declares it writes
/// (which would run it again after each of its own runs).
fn check_assets(
    spec: &DagSpec,
    places: Option<&Places<'_>>,
    known: Option<&Known>,
    out: &mut Vec<Diagnostic>,
) {
    let at = |name: &str| {
        places
            .and_then(|p| p.root.get("assets"))
            .and_then(|a| a.get(name).or(Some(a)))
            .map(|n| n.loc)
    };
    for (name, asset) in &spec.assets {
        match crate::asset::parse_asset_key(name) {
            Err(e) => out.push(Diagnostic::error(at(name), format!("`assets`: {e}"))),
            Ok(key) if key != *name => out.push(Diagnostic::error(
                at(name),
                format!("`assets`: write `{name}` as a URL (`file://{name}`)"),
            )),
            Ok(_) => {}
        }
        if asset
            .freshness
            .is_some_and(|f| f.0 < std::time::Duration::from_secs(60))
        {
            out.push(Diagnostic::error(
                at(name),
                format!("asset `{name}`: `freshness` is at least 1m"),
            ));
        }
        if let (Some(known), Some(names)) = (known, &asset.notify) {
            for n in names.iter().filter(|n| !known.notifiers.contains(*n)) {
                out.push(Diagnostic::warning(
                    at(name),
                    format!("asset `{name}`: notifier `{n}` is not in the configuration (it will fail at run time)"),
                ));
            }
        }
    }
    if let (Some(known), Some(names)) = (
        known,
        spec.deadline.as_ref().and_then(|d| d.notify.as_ref()),
    ) {
        for n in names.iter().filter(|n| !known.notifiers.contains(*n)) {
            out.push(Diagnostic::warning(
                places.and_then(|p| p.root.get("deadline")).map(|n| n.loc),
                format!("`deadline`: notifier `{n}` is not in the configuration (it will fail at run time)"),
            ));
        }
    }
    if let Some(condition) = spec
        .schedule
        .as_ref()
        .and_then(crate::asset::ScheduleSpec::assets)
    {
        let own: HashSet<&str> = spec
            .tasks
            .values()
            .flat_map(|t| t.common.produces.iter().map(String::as_str))
            .collect();
        if let Some(k) = condition.keys().iter().find(|k| own.contains(k.as_str())) {
            out.push(Diagnostic::error(
                places.and_then(|p| p.root.get("schedule")).map(|n| n.loc),
                format!("the DAG is scheduled on asset `{k}`, which its own tasks produce: each run would start the next"),
            ));
        }
    }
}

pub(super) fn check_backoff(
    value: f64,
    loc: Option<Loc>,
    context: &str,
    out: &mut Vec<Diagnostic>,
) {
    if !value.is_finite() || value < 1.0 {
        out.push(Diagnostic::error(loc, format!("{context}: `retry_backoff` must be a number >= 1 (1 keeps the delay constant), found {value}")));
    }
}

pub(super) fn check_references(
    id: &str,
    task: &TaskSpec,
    known: &Known,
    at: &dyn Fn(&str) -> Option<Loc>,
    out: &mut Vec<Diagnostic>,
) {
    let mut warn = |k: &str, msg: String| {
        out.push(Diagnostic::warning(
            at(k),
            format!("task `{id}`: {msg} (it will fail at run time)"),
        ))
    };
    for conn in step_conns(&task.step) {
        if !known.conns.contains(conn) && !crate::template::is_template(conn) {
            warn(
                "conn",
                format!("connection `{conn}` is not in the configuration"),
            );
        }
    }
    warn_unknown_pool_and_notifiers(
        task.common.pool.as_ref(),
        [
            ("on_failure", &task.common.on_failure),
            ("on_retry", &task.common.on_retry),
        ],
        known,
        &mut warn,
    );
}

/// Warns once about names in `defaults` that the configuration lacks.
pub(super) fn check_default_references(
    spec: &DagSpec,
    known: &Known,
    places: Option<&Places<'_>>,
    out: &mut Vec<Diagnostic>,
) {
    let at = |k: &str| {
        places
            .and_then(|p| p.root.get("defaults"))
            .and_then(|d| d.get(k))
            .map(|n| n.loc)
    };
    let mut warn = |k: &str, msg: String| {
        out.push(Diagnostic::warning(
            at(k),
            format!("defaults: {msg} (it will fail at run time)"),
        ))
    };
    warn_unknown_pool_and_notifiers(
        spec.defaults.pool.as_ref(),
        [
            ("on_failure", &spec.defaults.on_failure),
            ("on_retry", &spec.defaults.on_retry),
        ],
        known,
        &mut warn,
    );
}

/// Warns (through `warn(field, message)`) about a pool and notifiers the configuration lacks:
/// the same check for a task's own fields and for `defaults`.
pub(super) fn warn_unknown_pool_and_notifiers(
    pool: Option<&String>,
    notifiers: [(&str, &Option<Vec<String>>); 2],
    known: &Known,
    warn: &mut dyn FnMut(&str, String),
) {
    if let Some(pool) = pool.filter(|p| !known.pools.contains(*p)) {
        warn("pool", format!("pool `{pool}` is not in the configuration"));
    }
    for (field, names) in notifiers {
        for name in names
            .iter()
            .flatten()
            .filter(|n| !known.notifiers.contains(*n))
        {
            warn(
                field,
                format!("notifier `{name}` is not in the configuration"),
            );
        }
    }
}

/// Every connection a step names.
pub fn step_conns(step: &Step) -> Vec<&String> {
    let mut conns = Vec::new();
    match step {
        Step::Sql(s) => conns.push(&s.conn),
        Step::Migrate(m) => conns.push(&m.conn),
        Step::Load(l) => {
            conns.push(&l.target.conn);
            conns.extend(l.source.conn.as_ref());
        }
        Step::Export(e) => conns.push(&e.conn),
        Step::WaitFor(w) => conns.extend(w.conn.as_ref()),
        Step::Validate(v) => {
            conns.extend(v.conn.as_ref());
            for c in &v.checks {
                match c {
                    Check::RowCount(c) => conns.extend(c.conn.as_ref()),
                    Check::NotNull(c) | Check::Unique(c) => conns.extend(c.conn.as_ref()),
                    Check::AcceptedValues(c) => conns.extend(c.conn.as_ref()),
                    Check::Range(c) => conns.extend(c.conn.as_ref()),
                    Check::Freshness(c) => conns.extend(c.conn.as_ref()),
                    Check::Sql(c) => conns.extend(c.conn.as_ref()),
                    Check::CompareCount(c) => {
                        conns.extend(c.source.conn.iter().chain(&c.target.conn))
                    }
                    Check::CompareChecksum(c) => {
                        conns.extend(c.source.conn.iter().chain(&c.target.conn))
                    }
                }
            }
        }
        Step::Python(p) => conns.extend(&p.conns),
        Step::Dbt(d) => conns.push(&d.conn),
        Step::Noop(_) | Step::Shell(_) | Step::Http(_) | Step::Transfer(_) => {}
    }
    conns
}

pub(super) fn check_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, `_`, `.` and `-`"
        ))
    }
}

pub(super) fn check_task_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, `_` and `-` (no dots: templates read `tasks.<id>.outputs`)"
        ))
    }
}

pub(super) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
