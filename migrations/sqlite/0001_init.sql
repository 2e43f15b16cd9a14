-- weir metadata schema (SQLite). Times are text (sqlx encodes chrono as RFC 3339 in UTC); JSON documents are text.

create table weir_dag_versions (
    id          integer primary key autoincrement,
    dag_id      text not null,
    hash        text not null,                 -- sha256 of the canonical JSON spec
    spec        text not null,                 -- the DagSpec as JSON: what runs pin
    created_at  text not null,
    unique (dag_id, hash)
);

create table weir_dags (
    dag_id       text primary key,
    file         text not null,
    paused       integer not null,
    version_id   bigint not null references weir_dag_versions (id),  -- last good version
    schedule     text,
    timezone     text not null,
    updated_at   text not null
);

create table weir_import_errors (
    file     text primary key,
    dag_id   text,                              -- when the id could be read
    message  text not null,
    at       text not null
);

create table weir_runs (
    run_id               text primary key,
    dag_id               text not null,
    version_id           bigint not null references weir_dag_versions (id),
    run_type             text not null check (run_type in ('scheduled', 'manual', 'backfill')),
    state                text not null check (state in ('queued', 'running', 'success', 'failed', 'cancelled')),
    logical_date         text not null,
    data_interval_start  text not null,
    data_interval_end    text not null,
    params               text not null,          -- JSON object: the DAG's params with overrides
    created_at           text not null,
    started_at           text,
    ended_at             text,
    unique (dag_id, logical_date)
);
-- The scheduler only ever looks at unfinished runs: keep that lookup small whatever the history.
create index weir_runs_active on weir_runs (dag_id, logical_date) where state in ('queued', 'running');
create index weir_runs_by_dag on weir_runs (dag_id, logical_date desc);
create index weir_runs_ended on weir_runs (ended_at) where ended_at is not null;

create table weir_task_instances (
    id                integer primary key autoincrement,
    run_id            text not null references weir_runs (run_id) on delete cascade,
    dag_id            text not null,
    task_id           text not null,
    map_index         integer not null default -1,  -- -1: not mapped (or a foreach not yet expanded)
    map_item          text,                         -- foreach: this instance's item, as JSON
    state             text not null check (state in ('scheduled', 'queued', 'running', 'success', 'failed',
                                                     'up_for_retry', 'upstream_failed', 'skipped', 'removed')),
    try_number        integer not null default 0,   -- the try running or last run; 0 before the first
    max_tries         integer not null,             -- retries + 1
    queue             text not null,
    pool              text,
    priority          integer not null default 0,
    due_at            text,                  -- up_for_retry: when it may be queued again
    queued_at         text,
    started_at        text,
    ended_at          text,
    worker_id         text,
    lease_expires_at  text,                  -- running: the worker must heartbeat before this
    outputs           text,                         -- JSON object
    error             text,
    unique (run_id, task_id, map_index)
);
-- The claim path: queued instances of a queue, best priority first.
create index weir_ti_claim on weir_task_instances (queue, priority desc, id) where state = 'queued';
create index weir_ti_leases on weir_task_instances (lease_expires_at) where state = 'running';
create index weir_ti_retry on weir_task_instances (due_at) where state = 'up_for_retry';
create index weir_ti_pool on weir_task_instances (pool) where state in ('queued', 'running');

create table weir_task_logs (
    id           integer primary key autoincrement,
    ti_id        bigint not null references weir_task_instances (id) on delete cascade,
    try_number   integer not null,
    stream       text not null check (stream in ('stdout', 'stderr', 'weir')),
    line         text not null,
    at           text not null
);
create index weir_task_logs_by_try on weir_task_logs (ti_id, try_number, id);

create table weir_workers (
    worker_id     text primary key,
    hostname      text not null,
    queues        text not null,                    -- JSON list
    concurrency   integer not null,
    started_at    text not null,
    heartbeat_at  text not null,
    stopped_at    text
);

create table weir_incremental (
    dag_id   text not null,
    task_id  text not null,
    cursor   text not null,
    at       text not null,
    primary key (dag_id, task_id)
);
