-- Limits are enforced when a worker claims (issue #19): the scheduler queues every ready
-- instance at once, and a claim takes an instance only while its DAG has fewer running
-- instances than its `max_active_tasks` and its pool fewer than its slots. One row per limit:
-- kind 'dag' (name: the DAG id, slots: its current version's max_active_tasks) or 'pool'
-- (name: the pool, slots: the active scheduler's configuration). Claims of the same DAG or
-- pool lock its row, so two workers never both take its last slot.
create table weir_limits (
    kind   text not null,
    name   text not null,
    slots  bigint not null,
    primary key (kind, name)
);
-- Existing DAGs get the default until the scheduler writes their versions' values at start.
insert into weir_limits (kind, name, slots) select 'dag', dag_id, 16 from weir_dags;

-- The claim's counts (running instances per DAG and pool) and each DAG's next queued rows.
create index weir_ti_running on weir_task_instances (dag_id, pool) where state = 'running';
create index weir_ti_queued_by_dag on weir_task_instances (dag_id, priority desc, id) where state = 'queued';
