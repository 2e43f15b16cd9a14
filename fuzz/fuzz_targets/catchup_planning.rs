//! Any cron schedule, zone, start date, clock (years 1-4999) and catch-up bound: planning a catch-up never
//! panics, never starts before the DAG's first tick, and never leaves more complete intervals
//! to create than the bound (the guard against a `start_date: 0001-01-01` typo).
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use weir_model::schedule::{count_intervals, parse_schedule};

const EXPRESSIONS: [&str; 8] = [
    "@hourly",
    "*/5 * * * *",
    "0 0 * * *",
    "0 0 1 * *",
    "0 0 29 2 *",
    "30 2 * * 0",
    "0 9-17 * * 1-5",
    "15 3 L * *",
];

fuzz_target!(|input: (u8, u8, i64, i64, u16)| {
    let (expr, zone, first, now, limit) = input;
    let zones = [
        chrono_tz::UTC,
        chrono_tz::Europe::London,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Pacific::Chatham,
    ];
    let tz = zones[usize::from(zone) % zones.len()];
    let Ok(weir_model::Schedule::Cron(cron)) =
        parse_schedule(EXPRESSIONS[usize::from(expr) % EXPRESSIONS.len()])
    else {
        return;
    };
    // Years 1 to 4999: the DAG's dates can be written up to 9999, but validation refuses a
    // schedule starting after 4999 (`LAST_SCHEDULED_YEAR`, the cron library's horizon), and
    // the clock is now. (Found by this target: a clock past 5000 made a catch-up walk
    // thousands of years of ticks up to the horizon, then start 5,000 years early.)
    let span = 95_617_584_000_i64 + 62_135_596_800;
    let at = |s: i64| DateTime::<Utc>::from_timestamp(s.rem_euclid(span) - 62_135_596_800, 0);
    let (Some(first), Some(now)) = (at(first), at(now)) else { return };
    let Some(first) = cron.align_to_next(tz, first) else { return };
    // Up to ten times the default `max_catchup_runs`: larger bounds only make each input
    // slower under instrumentation, not different.
    let limit = usize::from(limit % 10_001).max(1);
    let start = cron.catchup_start(tz, first, now, limit);
    assert!(start >= first, "catch-up starts at {start}, before the first tick {first}");
    let left = count_intervals(&cron, tz, start, now, limit + 2);
    assert!(left <= limit, "{left} intervals left after bounding the catch-up to {limit}");
});
