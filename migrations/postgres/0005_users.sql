-- Users of the web UI and API, and their API tokens. Passwords are argon2id PHC strings;
-- tokens are stored as the SHA-256 of the token (the token itself is shown once, at minting).
create table weir_users (
    name           text primary key,
    role           text not null check (role in ('viewer', 'operator', 'admin')),
    password_hash  text not null,
    created_at     timestamptz not null
);

create table weir_api_tokens (
    id bigserial primary key,
    user_name     text not null references weir_users (name) on delete cascade,
    token_sha256  text not null unique,
    created_at    timestamptz not null,
    last_used_at  timestamptz
);
create index weir_api_tokens_by_user on weir_api_tokens (user_name);
