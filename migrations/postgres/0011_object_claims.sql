-- Objects on a store (a bucket, a container, an SFTP server) claimed by a load's task
-- instance (`source.claim`): one row per object version, so that of two runs racing for an
-- object that arrived, exactly one loads it. The version is the store's entity tag (or size and
-- modification time); an object uploaded again under the same name is a new version.
create table weir_object_claims (
    location   text not null,
    version    text not null,
    run_id     text not null,
    task_id    text not null,
    map_index  integer not null,
    claimed_at timestamptz not null,
    primary key (location, version)
);
