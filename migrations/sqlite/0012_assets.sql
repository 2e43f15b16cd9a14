-- no-transaction
-- Assets (issue #17): the tables and locations steps write and read, their updates, and the
-- DAGs that run when they are updated.
--
-- SQLite cannot change a CHECK constraint: `weir_runs` is rebuilt (SQLite's documented
-- procedure), with foreign keys off so that dropping the old table does not cascade into the
-- task instances. Safe to run again if the process died before the migration was recorded.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
create table weir_runs_rebuilt (
    run_id               text primary key,
    dag_id               text not null,
    version_id           bigint not null references weir_dag_versions (id),
    run_type             text not null check (run_type in ('scheduled', 'manual', 'backfill', 'assets', 'files')),
    state                text not null check (state in ('queued', 'running', 'success', 'failed', 'cancelled')),
    logical_date         text not null,
    data_interval_start  text not null,
    data_interval_end    text not null,
    params               text not null,
    created_at           text not null,
    started_at           text,
    ended_at             text,
    timezone             text not null default 'UTC',
    triggered_by         text,
    unique (dag_id, logical_date)
);
insert into weir_runs_rebuilt (run_id, dag_id, version_id, run_type, state, logical_date,
    data_interval_start, data_interval_end, params, created_at, started_at, ended_at, timezone)
select run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
    data_interval_end, params, created_at, started_at, ended_at, timezone
from weir_runs;
drop table weir_runs;
alter table weir_runs_rebuilt rename to weir_runs;
create index weir_runs_active on weir_runs (dag_id, logical_date) where state in ('queued', 'running');
create index weir_runs_by_dag on weir_runs (dag_id, logical_date desc);
create index weir_runs_ended on weir_runs (ended_at) where ended_at is not null;

create table if not exists weir_assets (
    asset_key   text primary key,
    first_seen  text not null
);

create table if not exists weir_asset_events (
    id              integer primary key autoincrement,
    asset_key       text not null,
    access          text not null check (access in ('write', 'read')),
    source          text not null check (source in ('task', 'api', 'cli')),
    dag_id          text,
    run_id          text,
    task_id         text,
    map_index       integer,
    try_number      integer,
    interval_start  text,
    interval_end    text,
    rows_written    integer,
    rows_inserted   integer,
    rows_updated    integer,
    bytes           integer,
    files           integer,
    details         text,
    created_at      text not null
);
create index if not exists weir_asset_events_by_asset on weir_asset_events (asset_key, id);
create index if not exists weir_asset_events_by_run on weir_asset_events (run_id);
create index if not exists weir_asset_events_by_dag on weir_asset_events (dag_id, asset_key, access);

create table if not exists weir_asset_subscriptions (
    dag_id     text not null,
    asset_key  text not null,
    primary key (dag_id, asset_key)
);
create index if not exists weir_asset_subscriptions_by_asset on weir_asset_subscriptions (asset_key);

create table if not exists weir_asset_queue (
    dag_id     text not null,
    event_id   integer not null,
    asset_key  text not null,
    primary key (dag_id, event_id)
);
COMMIT;
PRAGMA foreign_keys = ON;
