-- The web server's state: login sessions (the cookie holds a random id; the table keeps its
-- SHA-256 and the session's CSRF token), the audit log of who changed what, and each scheduler
-- process's heartbeat (for /health and the loop-latency gauge).
create table weir_sessions (
    id_sha256   text primary key,
    user_name   text not null references weir_users (name) on delete cascade,
    csrf_token  text not null,
    created_at  text not null,
    expires_at  text not null
);
create index weir_sessions_expiry on weir_sessions (expires_at);

create table weir_audit (
    id         integer primary key autoincrement,
    at         text not null,
    user_name  text not null,
    action     text not null,   -- trigger, backfill, clear, mark_success, mark_failed, cancel, pause, unpause, login, ...
    target     text not null,   -- the DAG, run or task the action was on
    detail     text not null    -- JSON object: the action's arguments
);
create index weir_audit_at on weir_audit (at);
create index weir_audit_by_target on weir_audit (action, target, at);

create table weir_schedulers (
    scheduler_id  text primary key,
    hostname      text not null,
    leader        boolean not null,
    heartbeat_at  text not null,
    loop_ms       real not null   -- the last scheduling pass's duration
);

-- The DAG file's text as last read (the web UI shows it; runs pin the parsed spec, not this).
alter table weir_dags add column source text;
