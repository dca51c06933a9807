//! A clock that stands still until a test moves it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use meter_core::{Clock, Timestamp};

/// A fixed, advanceable clock shared by its clones: tests move time forward
/// past a reset or an idempotency window instead of sleeping.
#[derive(Clone, Debug)]
pub struct FixedClock(Arc<AtomicI64>);

impl FixedClock {
    /// A clock standing at `text` (`2026-03-10T12:00:00.000Z`).
    pub fn at(text: &str) -> Self {
        Self(Arc::new(AtomicI64::new(timestamp(text).as_millis())))
    }

    /// A clock standing at the current wall-clock time.
    pub fn at_system_time() -> Self {
        Self(Arc::new(AtomicI64::new(
            meter_core::SystemClock.now().as_millis(),
        )))
    }

    /// Moves the clock forward by `step`.
    pub fn advance(&self, step: Duration) {
        let millis = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    /// Sets the clock to `text`.
    pub fn set(&self, text: &str) {
        self.0.store(timestamp(text).as_millis(), Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
            .unwrap_or_else(|| panic!("the test clock left the years 1970..=9999"))
    }
}

/// Parses a test timestamp, panicking on a typo.
pub fn timestamp(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap_or_else(|| panic!("bad test timestamp {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_only_when_told_and_clones_share_it() {
        let clock = FixedClock::at("2026-03-10T12:00:00.000Z");
        let shared = clock.clone();
        assert_eq!(clock.now(), timestamp("2026-03-10T12:00:00.000Z"));
        shared.advance(Duration::from_secs(86_400));
        assert_eq!(clock.now(), timestamp("2026-03-11T12:00:00.000Z"));
        clock.set("2027-01-01T00:00:00.000Z");
        assert_eq!(shared.now(), timestamp("2027-01-01T00:00:00.000Z"));
    }
}
