-- The notification outbox. A row is written in the same transaction as the state change it
-- tells about (a run finished, a try failed), so a notice is never lost to a crash and never
-- written for a change that rolled back. Any scheduler process drains it: a claim pushes
-- next_attempt_at forward (a lease), a send sets sent_at, a failed send backs off; after
-- the last attempt gave_up is set and the row stays for the record.
create table weir_notifications (
    id bigserial primary key,
    notifier         text not null,              -- a name of [notifiers] in the configuration
    run_id           text not null,
    payload          text not null,              -- JSON: the event and its facts
    created_at       timestamptz not null,
    next_attempt_at  timestamptz not null,
    attempts         integer not null default 0,
    sent_at          timestamptz,
    gave_up          boolean not null default false,
    error            text                        -- the last failed attempt's error
);
create index weir_notifications_due on weir_notifications (next_attempt_at) where sent_at is null and not gave_up;
create index weir_notifications_created on weir_notifications (created_at);
