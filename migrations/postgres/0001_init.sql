-- weir metadata schema (Postgres). Times are timestamptz; JSON documents are text.

create table weir_dag_versions (
    id          bigserial primary key,
    dag_id      text not null,
    hash        text not null,                 -- sha256 of the canonical JSON spec
    spec        text not null,                 -- the DagSpec as JSON: what runs pin
    created_at  timestamptz not null,
    unique (dag_id, hash)
);

create table weir_dags (
    dag_id       text primary key,
    file         text not null,
    paused       boolean not null,
    version_id   bigint not null references weir_dag_versions (id),  -- last good version
    schedule     text,
    timezone     text not null,
    updated_at   timestamptz not null
);

create table weir_import_errors (
    file     text primary key,
    dag_id   text,                              -- when the id could be read
    message  text not null,
    at       timestamptz not null
);

create table weir_runs (
    run_id               text primary key,
    dag_id               text not null,
    version_id           bigint not null references weir_dag_versions (id),
    run_type             text not null check (run_type in ('scheduled', 'manual', 'backfill')),
    state                text not null check (state in ('queued', 'running', 'success', 'failed', 'cancelled')),
    logical_date         timestamptz not null,
    data_interval_start  timestamptz not null,
    data_interval_end    timestamptz not null,
    params               text not null,          -- JSON object: the DAG's params with overrides
    created_at           timestamptz not null,
    started_at           timestamptz,
    ended_at             timestamptz,
    unique (dag_id, logical_date)
);
-- The scheduler only ever looks at unfinished runs: keep that lookup small whatever the history.
create index weir_runs_active on weir_runs (dag_id, logical_date) where state in ('queued', 'running');
create index weir_runs_by_dag on weir_runs (dag_id, logical_date desc);
create index weir_runs_ended on weir_runs (ended_at) where ended_at is not null;

create table weir_task_instances (
    id                bigserial primary key,
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
    due_at            timestamptz,                  -- up_for_retry: when it may be queued again
    queued_at         timestamptz,
    started_at        timestamptz,
    ended_at          timestamptz,
    worker_id         text,
    lease_expires_at  timestamptz,                  -- running: the worker must heartbeat before this
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
    id           bigserial primary key,
    ti_id        bigint not null references weir_task_instances (id) on delete cascade,
    try_number   integer not null,
    stream       text not null check (stream in ('stdout', 'stderr', 'weir')),
    line         text not null,
    at           timestamptz not null
);
create index weir_task_logs_by_try on weir_task_logs (ti_id, try_number, id);

create table weir_workers (
    worker_id     text primary key,
    hostname      text not null,
    queues        text not null,                    -- JSON list
    concurrency   integer not null,
    started_at    timestamptz not null,
    heartbeat_at  timestamptz not null,
    stopped_at    timestamptz
);

create table weir_incremental (
    dag_id   text not null,
    task_id  text not null,
    cursor   text not null,
    at       timestamptz not null,
    primary key (dag_id, task_id)
);
