//! Where the current time comes from.

use chrono::Utc;

use crate::Timestamp;

/// A source of the current time; tests use a fixed one instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // The wall clock is past 1970 and before 10000 on any machine we run on;
        // clamp rather than panic if it is not.
        Timestamp::from_datetime(Utc::now()).unwrap_or(Timestamp::EPOCH)
    }
}
