-- Exactly-once writing steps: a try that committed its writes but whose outcome was never
-- recorded leaves a marker in the target (weir_commits); the next try of the same instance
-- adopts it instead of writing again. A clear starts a new series of tries that must run, so
-- an instance remembers the try number it was cleared at: markers at or below it are old.
alter table weir_task_instances add column cleared_try integer not null default 0;
