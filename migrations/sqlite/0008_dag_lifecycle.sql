-- A DAG whose file is gone (or no longer claims its id) is removed: no new scheduled runs, no
-- triggers; its history stays, and it is active again when a file defines it again.
alter table weir_dags add column removed_at text;

-- A run's dates are rendered in its DAG's time zone (ds is the day the user means); the zone
-- is fixed when the run is created. Runs created before this use their DAG's current zone.
alter table weir_runs add column timezone text not null default 'UTC';
update weir_runs set timezone = coalesce((select d.timezone from weir_dags d where d.dag_id = weir_runs.dag_id), 'UTC');

-- The DAG version an instance's latest try ran (a clear may move a run to a newer version).
alter table weir_task_instances add column version_id bigint;

-- Tries lost with their worker (its lease expired): retried without using up the task's
-- retries, up to a few times (a task that kills its worker each time still ends).
alter table weir_task_instances add column lost_tries integer not null default 0;

-- A worker's process, for noticing its death at once instead of when its leases expire:
-- its pid on its machine (hostname, boot and pid namespace), and whether it holds a
-- session-level lock on Postgres (its session ends the moment the process dies).
alter table weir_workers add column pid integer;
alter table weir_workers add column machine text;
alter table weir_workers add column session_lock boolean not null default false;
