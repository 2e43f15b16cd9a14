-- HR warehouse schema (applied by the `schema` task of hr_migration.yaml).
create table if not exists departments (
    id integer primary key,
    department text not null
);

create table if not exists jobs (
    id integer primary key,
    job text not null
);

create table if not exists hired_employees (
    id integer primary key,
    name text not null,
    hired_at timestamp not null,
    department_id integer not null,
    job_id integer not null
);
