-- Hires per department and job in each quarter of the report year (params.report_year),
-- rebuilt on every run. Quarter bounds are compared as timestamps, which works the same on
-- Postgres, MySQL/MariaDB and SQLite.
drop table if exists hires_per_quarter;
create table hires_per_quarter as
select d.department,
       j.job,
       sum(case when e.hired_at >= '{{ params.report_year }}-01-01' and e.hired_at < '{{ params.report_year }}-04-01' then 1 else 0 end) as q1,
       sum(case when e.hired_at >= '{{ params.report_year }}-04-01' and e.hired_at < '{{ params.report_year }}-07-01' then 1 else 0 end) as q2,
       sum(case when e.hired_at >= '{{ params.report_year }}-07-01' and e.hired_at < '{{ params.report_year }}-10-01' then 1 else 0 end) as q3,
       sum(case when e.hired_at >= '{{ params.report_year }}-10-01' and e.hired_at < '{{ params.report_year + 1 }}-01-01' then 1 else 0 end) as q4
from hired_employees e
join departments d on d.id = e.department_id
join jobs j on j.id = e.job_id
where e.hired_at >= '{{ params.report_year }}-01-01' and e.hired_at < '{{ params.report_year + 1 }}-01-01'
group by d.department, j.job;
