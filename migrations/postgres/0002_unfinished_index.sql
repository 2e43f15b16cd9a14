-- The scheduler asks, on every pass and for every running run, whether any task instance
-- waits for a decision or is unfinished. This index holds only those (few, live) rows, so the
-- question is two index probes whatever the run's size or the table's history.
create index weir_ti_unfinished on weir_task_instances (run_id, state)
    where state in ('scheduled', 'queued', 'running', 'up_for_retry');
