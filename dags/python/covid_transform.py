"""The COVID ETL's transform in pandas: the cumulative national series turned into daily new
cases and deaths, joined with the published 7-day averages, written as a CSV the next task
loads. weir calls main(ctx) with the run's context; the dict it returns are the task's
outputs (numbers stay numbers downstream)."""

import os

import pandas as pd


def main(ctx):
    snapshot = ctx["params"]["snapshot"]
    us = pd.read_csv(f"data/covid/{snapshot}.csv", parse_dates=["date"])
    rolling = pd.read_csv(
        "data/covid/us_rolling.csv",
        parse_dates=["date"],
        usecols=["date", "cases_avg", "deaths_avg"],
    )
    us = us.sort_values("date")
    # The first day has no day before it: its new cases are its cumulative count.
    us["new_cases"] = us["cases"].diff().fillna(us["cases"]).astype("int64")
    us["new_deaths"] = us["deaths"].diff().fillna(us["deaths"]).astype("int64")
    merged = us.merge(rolling, on="date", how="inner")

    out_dir = os.path.join(".weir", "out")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"covid_daily_new_{ctx['ds_nodash']}.csv")
    merged.to_csv(path, index=False, date_format="%Y-%m-%d")

    peak = merged.loc[merged["new_cases"].idxmax()]
    print(
        f"{len(merged)} days from {snapshot}; peak of {peak['new_cases']:,} new cases"
        f" on {peak['date']:%Y-%m-%d}"
    )
    return {
        "path": path,
        "rows": len(merged),
        "peak_day": f"{peak['date']:%Y-%m-%d}",
        "peak_new_cases": peak["new_cases"],
        # Later reports revise earlier days: a negative day is a correction, not an error.
        "corrections": int((merged["new_cases"] < 0).sum()),
    }
