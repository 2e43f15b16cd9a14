-- The active scheduler's lease (Postgres only: with SQLite one process always leads). One
-- row: its holder, the application name of the holder's pool (a scheduler taking over from a
-- cut-off one ends that pool's sessions), whether the holder also holds the leader's advisory
-- lock (then a free lock means the holder died), a generation bumped on every takeover, and
-- the expiry the holder keeps pushing forward, in the database's clock.
create table weir_leader (
    id smallint primary key check (id = 1),
    holder text not null,
    session_name text not null,
    locked boolean not null,
    generation bigint not null,
    expires_at timestamptz not null
);
insert into weir_leader values (1, '', '', false, 0, '-infinity');
