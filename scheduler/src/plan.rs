//! Planning scheduled runs: which cron intervals are due. Pure. (The rows a run starts with
//! are `weir_ops::runs`'.)

use chrono::{DateTime, Utc};
use weir_model::schedule::DataInterval;
use weir_model::{Dag, Schedule};

/// The most runs one scheduler pass creates for one DAG (catchup over a long gap proceeds over
/// several passes instead of one huge transaction).
pub const MAX_RUNS_PER_PASS: usize = 200;

/// The scheduled intervals of `dag` that are due at `now` and not yet created, given the
/// logical date of its last scheduled run: every one since then with `catchup`, else only the
/// latest. An interval is due once its end has passed (Airflow's data-interval semantics).
pub fn due_intervals(
    dag: &Dag,
    last_scheduled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DataInterval> {
    let (Some(schedule), Some(start_date)) = (dag.schedule(), dag.start_date) else {
        return Vec::new();
    };
    let cron = match schedule {
        Schedule::Once => {
            let due = last_scheduled.is_none()
                && start_date <= now
                && dag.end_date.is_none_or(|e| start_date <= e);
            return if due {
                vec![DataInterval {
                    start: start_date,
                    end: start_date,
                }]
            } else {
                Vec::new()
            };
        }
        Schedule::Cron(cron) => cron,
    };
    let tz = dag.timezone;
    let first = match last_scheduled {
        Some(last) => cron.next_after(tz, last),
        None => cron.align_to_next(tz, start_date),
    };
    let Some(first) = first else {
        return Vec::new();
    };
    let within_end = |t: DateTime<Utc>| dag.end_date.is_none_or(|e| t <= e);
    if dag.spec.catchup {
        // At most `max_catchup_runs` missed intervals, the latest ones.
        let first = cron.catchup_start(tz, first, now, dag.spec.max_catchup_runs as usize);
        let mut out = Vec::new();
        let mut tick = Some(first);
        while let Some(start) = tick.filter(|t| within_end(*t)) {
            let Some(end) = cron.next_after(tz, start).filter(|e| *e <= now) else {
                break;
            };
            out.push(DataInterval { start, end });
            if out.len() == MAX_RUNS_PER_PASS {
                break;
            }
            tick = Some(end);
        }
        return out;
    }
    // Without catchup only the latest complete interval counts. Look back over a window that
    // doubles until it holds one, so a long gap costs a few steps, not one per missed tick.
    let mut window = chrono::Duration::hours(1);
    loop {
        let from = (now - window).max(first);
        let mut latest = None;
        let mut tick = cron.align_to_next(tz, from);
        while let Some(start) = tick {
            match cron.next_after(tz, start) {
                Some(end) if end <= now => {
                    latest = Some(DataInterval { start, end });
                    tick = Some(end);
                }
                _ => break,
            }
        }
        if let Some(latest) = latest.filter(|i| within_end(i.start)) {
            return vec![latest];
        }
        if from <= first || window > chrono::Duration::days(800) {
            return Vec::new();
        }
        window = window * 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_testkit::dag;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    const DAILY: &str = "id: d\nschedule: \"0 6 * * *\"\nstart_date: 2024-01-01\ncatchup: true\nparams: {n: 1, name: x, full: false}\ntasks:\n  a: {kind: noop}\n";

    #[test]
    fn catchup_creates_every_missed_interval_once_it_has_ended() {
        let d = dag(DAILY);
        let due = due_intervals(&d, None, t("2024-01-04T05:00:00Z"));
        assert_eq!(
            due.iter().map(|i| i.start).collect::<Vec<_>>(),
            [t("2024-01-01T06:00:00Z"), t("2024-01-02T06:00:00Z")]
        );
        let next = due_intervals(
            &d,
            Some(t("2024-01-02T06:00:00Z")),
            t("2024-01-04T06:00:00Z"),
        );
        assert_eq!(
            next.iter().map(|i| i.start).collect::<Vec<_>>(),
            [t("2024-01-03T06:00:00Z")]
        );
    }

    #[test]
    fn without_catchup_only_the_latest_interval_is_created() {
        let d = dag(&DAILY.replace("catchup: true", "catchup: false"));
        let due = due_intervals(&d, None, t("2024-06-10T12:00:00Z"));
        assert_eq!(
            due,
            vec![DataInterval {
                start: t("2024-06-09T06:00:00Z"),
                end: t("2024-06-10T06:00:00Z")
            }]
        );
        let hourly = dag(
            "id: h\nschedule: \"@hourly\"\nstart_date: 2020-01-01\ntasks:\n  a: {kind: noop}\n",
        );
        let due = due_intervals(
            &hourly,
            Some(t("2020-01-01T00:00:00Z")),
            t("2024-06-10T12:30:00Z"),
        );
        assert_eq!(
            due,
            vec![DataInterval {
                start: t("2024-06-10T11:00:00Z"),
                end: t("2024-06-10T12:00:00Z")
            }]
        );
    }
}
