//! Any retry policy a DAG can write, any try and any instant: the next try's due time is
//! computed without panicking and is never before now.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use weir_model::duration::{Duration, MAX};

fuzz_target!(|input: (u32, u64, f64, u64, i32, i32, i64)| {
    let (retries, delay_ms, backoff, max_ms, try_number, max_tries, at) = input;
    if !backoff.is_finite() || backoff < 1.0 {
        return; // validation refuses these
    }
    let ms = |v: u64| Duration(std::time::Duration::from_millis(v).min(MAX));
    let policy = weir_model::RetryPolicy {
        retries,
        delay: ms(delay_ms),
        backoff,
        max_delay: ms(max_ms),
    };
    let Some(now) = DateTime::<Utc>::from_timestamp(at % 400_000_000_000, 0) else { return };
    let (_, due) = policy.after_failure(try_number, max_tries, now);
    if let Some(due) = due {
        assert!(due >= now, "{due} before {now}");
    }
    let _ = weir_model::duration::later(now, policy.delay_before(u32::try_from(try_number).unwrap_or(0)));
});
