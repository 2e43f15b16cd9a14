-- Freshness of the assets DAGs declare with `freshness`, and runs' deadlines (issue #17).

-- One row per declared asset: since when it is stale (null: fresh), and the staleness that was
-- told (the asset's last update, or 'never'), so that each stale spell notifies once.
create table weir_asset_freshness (
    asset_key    text primary key,
    dag_id       text not null,
    freshness_s  bigint not null,
    declared_at  timestamptz not null,
    stale_since  timestamptz,
    told_for     text,
    checked_at   timestamptz not null
);

-- When a run was found past its deadline (told once).
alter table weir_runs add column deadline_missed_at timestamptz;
