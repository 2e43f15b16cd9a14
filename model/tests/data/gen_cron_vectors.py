#!/usr/bin/env python3
"""Generates cron_vectors.json: reference schedule ticks for weir's cron tests.

Independent of weir's Rust code: croniter (the library Apache Airflow uses) computes the
wall-clock ticks and pendulum (Airflow's time library) places them in the time zone, following
the algorithm of Airflow's CronDataIntervalTimetable (`_get_next`): schedules whose ticks share
hour and minute ("fixed") are localized directly, with fold=1 for ambiguous wall times; the others
add the wall-clock delta to the previous tick. Run once and commit the output:

    pip install croniter==7.0.0 pendulum==3.3.0
    python3 gen_cron_vectors.py > cron_vectors.json
"""
import datetime as dt
import json

import pendulum
from croniter import croniter

EXPRESSIONS = [
    "0 0 * * *", "30 2 * * *", "0 1 * * *", "30 1 * * *", "0 3 * * *", "0 * * * *",
    "*/15 * * * *", "0 */6 * * *", "5-10/5 */4 * * *", "0 9 * * mon-fri", "0 9 * * 1-5",
    "0 0 * * 7", "0 0 * * sun", "0 2 * * 0", "15 10 * * 6,0", "0 22 * * 1-5",
    "0 0 1 * *", "0 0 31 * *", "0 0 30 * *", "0 0 29 2 *", "59 23 31 12 *", "0 0 L * *",
    "0 12 1,15 * 5", "0 0 13 * fri", "0 0 1-7 * 1", "5 4 * jan,jul *", "0 0 */2 * *",
    "0 0 1 */3 *", "0 6 * * 5#2", "0 0 * feb *",
    "@hourly", "@daily", "@weekly", "@monthly", "@yearly",
]

# (zone, [start instants in UTC]): starts sit before DST changes in both directions.
ZONES = [
    ("UTC", ["2024-01-01T00:00:00Z", "2024-02-27T00:00:00Z", "2023-02-27T00:00:00Z", "2024-12-30T00:00:00Z"]),
    ("America/New_York", ["2024-03-08T05:00:00Z", "2024-03-10T05:00:00Z", "2024-11-01T04:00:00Z", "2024-11-03T04:00:00Z"]),
    ("Europe/Zurich", ["2024-03-30T23:00:00Z", "2024-10-26T22:00:00Z"]),
    ("Australia/Sydney", ["2024-04-06T13:00:00Z", "2024-10-05T13:00:00Z"]),
    ("Asia/Kolkata", ["2024-02-27T00:00:00Z"]),
    ("Pacific/Chatham", ["2024-04-06T12:00:00Z", "2024-09-28T12:00:00Z"]),
]
TICKS = 24


def is_fixed(expr):
    it = croniter(expr, dt.datetime(2001, 1, 1))
    a = it.get_next(dt.datetime)
    b = it.get_next(dt.datetime)
    return a.hour == b.hour and a.minute == b.minute


def get_next(expr, tz, current):
    naive = current.in_timezone(tz).naive()
    scheduled = croniter(expr, start_time=naive).get_next(dt.datetime)
    if is_fixed(expr):
        return pendulum.instance(tz.convert(scheduled.replace(fold=1))).in_timezone("UTC")
    delta = scheduled - naive
    return (current.in_timezone(tz) + delta).in_timezone("UTC")


def main():
    cases = []
    for zone, starts in ZONES:
        tz = pendulum.timezone(zone)
        for expr in EXPRESSIONS:
            for start in starts:
                current = pendulum.parse(start)
                ticks = []
                for _ in range(TICKS):
                    current = get_next(expr, tz, current)
                    ticks.append(current.strftime("%Y-%m-%dT%H:%M:%SZ"))
                cases.append({"expr": expr, "timezone": zone, "after": start, "ticks": ticks})
    json.dump({"generator": "croniter 7.0.0 + pendulum 3.3.0, Airflow's CronDataIntervalTimetable._get_next", "cases": cases}, __import__("sys").stdout, indent=0)


main()
