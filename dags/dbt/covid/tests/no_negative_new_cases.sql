-- Later reports revise earlier days, so a negative day is a correction worth a look, not an
-- error: this test warns (severity warn) and does not fail the task.
{{ config(severity='warn') }}
select date, new_cases from {{ ref('covid_daily_new') }} where new_cases < 0
