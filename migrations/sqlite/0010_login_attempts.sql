-- Password logins for the rate limit: one row per attempt and key (`name:NAME`, `ip:ADDRESS`,
-- `device:DIGEST`), written in the transaction that counts them, so that parallel attempts
-- cannot all pass the count. A login that succeeds deletes its rows.
create table weir_login_attempts (
    id   integer primary key autoincrement,
    key  text not null,
    at   text not null
);
create index weir_login_attempts_by_key on weir_login_attempts (key, at);
