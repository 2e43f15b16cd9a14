{{ config(materialized='table') }}
-- `year` comes from the run (the DAG passes `vars: {year: ...}`): the peaks of that year.
select date, new_cases, new_deaths
from {{ ref('covid_daily_new') }}
where cast(date as text) like '{{ var("year") }}-%'
order by new_cases desc
limit 10
