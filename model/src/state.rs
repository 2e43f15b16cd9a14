//! Run and task-instance states (SPEC §6), and the ids that name runs.
//!
//! States are stored as lowercase text (with a `CHECK` in the schema); `as_str` and `parse`
//! are the only conversions, so the database never holds enum discriminants.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The token stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value for a stored token.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The value a user typed, or a message listing the values there are.
            ///
            /// # Errors
            /// `` `text` is not one of: a, b, c ``.
            pub fn parse_or_list(text: &str) -> Result<$name, String> {
                $name::parse(text).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`{text}` is not one of: {}", all.join(", "))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where a task instance is in its life.
    TaskState {
        /// Created, waiting for its upstream tasks.
        Scheduled => "scheduled",
        /// Ready; waiting for a worker to claim it, within its DAG's `max_active_tasks` and its pool.
        Queued => "queued",
        /// Claimed by a worker, which holds a lease on it.
        Running => "running",
        /// Done, succeeded.
        Success => "success",
        /// Done, failed with no try left.
        Failed => "failed",
        /// Failed; will be queued again at its due time.
        UpForRetry => "up_for_retry",
        /// Cannot run: its trigger rule can no longer be met because something upstream failed.
        UpstreamFailed => "upstream_failed",
        /// Not run: `when` was falsy, or its trigger rule skips it.
        Skipped => "skipped",
        /// No longer part of the run.
        Removed => "removed",
    }
}

impl TaskState {
    /// Whether the instance will not change again by itself.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Removed
        )
    }
}

text_enum! {
    /// Where a DAG run is in its life.
    RunState {
        /// Created; waiting for a slot under `max_active_runs`.
        Queued => "queued",
        /// Its tasks are being scheduled.
        Running => "running",
        /// Every leaf task succeeded or was skipped.
        Success => "success",
        /// A leaf task failed or could not run.
        Failed => "failed",
        /// Stopped by a user.
        Cancelled => "cancelled",
    }
}

impl RunState {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failed | RunState::Cancelled
        )
    }
}

text_enum! {
    /// Why a run exists.
    RunType {
        /// A cron interval.
        Scheduled => "scheduled",
        /// `weir trigger` or the UI.
        Manual => "manual",
        /// `weir backfill`.
        Backfill => "backfill",
        /// Its upstream assets were updated (`schedule: {assets: …}`).
        Assets => "assets",
        /// Objects arrived at a watched location (`schedule: {files: …}`).
        Files => "files",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_parses_back() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(*s));
        }
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(*s));
        }
        for s in RunType::ALL {
            assert_eq!(RunType::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            TaskState::parse("up_for_retry"),
            Some(TaskState::UpForRetry)
        );
        assert_eq!(TaskState::parse("nope"), None);
    }
}
