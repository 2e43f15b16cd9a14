-- Hires per department and job in each quarter of the report year (params.report_year).
create table if not exists hires_per_quarter as
select d.department,
       j.job,
       sum(case when extract(quarter from e.hired_at) = 1 then 1 else 0 end) as q1,
       sum(case when extract(quarter from e.hired_at) = 2 then 1 else 0 end) as q2,
       sum(case when extract(quarter from e.hired_at) = 3 then 1 else 0 end) as q3,
       sum(case when extract(quarter from e.hired_at) = 4 then 1 else 0 end) as q4
from hired_employees e
join departments d on d.id = e.department_id
join jobs j on j.id = e.job_id
where extract(year from e.hired_at) = {{ params.report_year }}
group by d.department, j.job
order by d.department, j.job;
