select
    u.date,
    u.cases,
    u.deaths,
    u.cases - coalesce(lag(u.cases) over (order by u.date), 0) as new_cases,
    u.deaths - coalesce(lag(u.deaths) over (order by u.date), 0) as new_deaths,
    r.cases_avg,
    r.deaths_avg
from {{ source('warehouse', 'covid_us') }} u
left join {{ source('warehouse', 'covid_rolling') }} r on r.date = u.date
