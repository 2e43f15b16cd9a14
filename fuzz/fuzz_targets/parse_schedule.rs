//! Any text as a cron schedule: parse errors are messages; a parsed schedule yields ticks and
//! intervals in several zones without panicking, each tick after the previous one.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(schedule) = weir_model::schedule::parse_schedule(text) else { return };
    let zones = [chrono_tz::UTC, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe, chrono_tz::Pacific::Chatham];
    let start = DateTime::<Utc>::from_timestamp(1_709_000_000, 0).expect("fixed instant");
    for tz in zones {
        if let weir_model::Schedule::Cron(cron) = &schedule {
            let mut t = start;
            for _ in 0..8 {
                let Some(next) = cron.next_after(tz, t) else { break };
                assert!(next > t, "{text}: tick {next} is not after {t} in {tz}");
                t = next;
            }
        }
        let end = start + chrono::Duration::days(3);
        let _ = schedule.plan_intervals(tz, start, end, Some(start), None);
    }
});
