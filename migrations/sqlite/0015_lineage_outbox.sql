-- OpenLineage events waiting to be posted to the configured endpoint (issue #17): written by
-- workers (a try's START, and its COMPLETE or FAIL in the transaction that records its end),
-- sent by the scheduler process with retries; an endpoint that is down never holds up a run.
create table weir_lineage_outbox (
    id               integer primary key autoincrement,
    payload          text not null,
    created_at       text not null,
    next_attempt_at  text not null,
    attempts         integer not null default 0,
    sent_at          text,
    gave_up          boolean not null default false,
    error            text
);
create index weir_lineage_due on weir_lineage_outbox (next_attempt_at) where sent_at is null and not gave_up;
