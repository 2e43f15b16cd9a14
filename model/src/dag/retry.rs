//! A task's retry policy: how many tries, and the delay before each (with backoff and a cap).

use super::*;

/// Retry settings of a task, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries after the first failure.
    pub retries: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Factor applied to the delay at each further retry.
    pub backoff: f64,
    /// Cap on the delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// What a failed try `try_number` (of at most `max_tries`) leads to: another try after the
    /// delay, or failure.
    pub fn after_failure(
        &self,
        try_number: i32,
        max_tries: i32,
        now: DateTime<Utc>,
    ) -> (crate::TaskState, Option<DateTime<Utc>>) {
        if try_number >= max_tries {
            return (crate::TaskState::Failed, None);
        }
        let delay =
            self.delay_before(u32::try_from(try_number.saturating_add(1)).unwrap_or(u32::MAX));
        let due = crate::duration::later(now, delay);
        (crate::TaskState::UpForRetry, Some(due))
    }

    /// The wait before try `next_try` (2 for the first retry): `delay * backoff^(next_try - 2)`,
    /// capped by `max_delay`.
    pub fn delay_before(&self, next_try: u32) -> std::time::Duration {
        let exponent = i32::try_from(next_try.saturating_sub(2)).unwrap_or(i32::MAX);
        let secs = self.delay.as_secs_f64() * self.backoff.powi(exponent);
        let capped = secs.min(self.max_delay.as_secs_f64());
        std::time::Duration::try_from_secs_f64(capped).unwrap_or(self.max_delay.0)
    }
}
