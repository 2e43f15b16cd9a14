-- Objects that triggered a run of a DAG scheduled on files (`schedule: {files: ...}`): one row
-- per object version, written in the transaction that creates the run, so that each arrival
-- makes one run across restarts and schedulers.
create table weir_file_triggers (
    dag_id    text not null,
    location  text not null,
    version   text not null,
    run_id    text not null,
    seen_at   timestamptz not null,
    primary key (dag_id, location, version)
);
