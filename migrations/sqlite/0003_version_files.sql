-- Files a DAG version reads (a `sql` step's `file`, a `migrate` step's folder), by the path
-- written in the DAG, as a JSON object path -> text. Stored with the version (and covered by
-- its hash) so workers on any host run exactly what the run pinned, without the dags folder.
alter table weir_dag_versions add column files text not null default '{}';
