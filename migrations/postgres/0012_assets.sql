-- Assets (issue #17): the tables and locations steps write and read, their updates, and the
-- DAGs that run when they are updated.

-- Runs created because assets were updated or files arrived.
alter table weir_runs drop constraint weir_runs_run_type_check;
alter table weir_runs add constraint weir_runs_run_type_check
    check (run_type in ('scheduled', 'manual', 'backfill', 'assets', 'files'));
-- What made the run: the asset events or the files (a JSON list), for its template context.
alter table weir_runs add column triggered_by text;

-- Every asset weir has seen, by key: `connection.schema.table` or a location URL.
create table weir_assets (
    asset_key   text primary key,
    first_seen  timestamptz not null
);

-- Each write (an update) and read of an asset: by a task's try, or recorded from outside
-- (the API, the CLI). Kept when the run is deleted: an asset's history outlives its runs.
create table weir_asset_events (
    id              bigserial primary key,
    asset_key       text not null,
    access          text not null check (access in ('write', 'read')),
    source          text not null check (source in ('task', 'api', 'cli')),
    dag_id          text,
    run_id          text,
    task_id         text,
    map_index       integer,
    try_number      integer,
    interval_start  timestamptz,
    interval_end    timestamptz,
    rows_written    bigint,
    rows_inserted   bigint,
    rows_updated    bigint,
    bytes           bigint,
    files           bigint,
    details         text,                    -- JSON object: locations, versions, the caller's note
    created_at      timestamptz not null
);
create index weir_asset_events_by_asset on weir_asset_events (asset_key, id);
create index weir_asset_events_by_run on weir_asset_events (run_id);
-- A DAG's lineage (its page): the distinct assets it wrote and read.
create index weir_asset_events_by_dag on weir_asset_events (dag_id, asset_key, access);

-- The assets each DAG scheduled on assets waits for (from its current version).
create table weir_asset_subscriptions (
    dag_id     text not null,
    asset_key  text not null,
    primary key (dag_id, asset_key)
);
create index weir_asset_subscriptions_by_asset on weir_asset_subscriptions (asset_key);

-- Updates not yet consumed by a subscribed DAG's run: written in the transaction that records
-- the event, deleted in the one that creates the run.
create table weir_asset_queue (
    dag_id     text not null,
    event_id   bigint not null,
    asset_key  text not null,
    primary key (dag_id, event_id)
);
