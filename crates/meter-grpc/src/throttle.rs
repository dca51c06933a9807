//! Warnings that can repeat for every call (the store down, calls refused)
//! are logged at most once a second each, with the count of those left out,
//! so an outage does not flood the log, or block on it, when it matters most.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// When this process started counting, for whole seconds since.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One kind of warning, let through at most once a second.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// The second (since [`EPOCH`]) of the last warning let through; `u64::MAX` for none yet.
    last: AtomicU64,
    /// Warnings held back since.
    held_back: AtomicU64,
}

impl Throttle {
    /// A throttle that has let nothing through yet.
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicU64::new(u64::MAX),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` when this warning should be
    /// logged; `None` (and counted) when one was logged this second.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(EPOCH.elapsed().as_secs())
    }

    /// [`Throttle::admit`] at second `now`.
    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == u64::MAX || now > last;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_second_gets_through_and_the_rest_are_counted() {
        let throttle = Throttle::new();
        assert_eq!(throttle.admit_at(7), Some(0), "the first one");
        for _ in 0..10 {
            assert_eq!(throttle.admit_at(7), None);
        }
        assert_eq!(
            throttle.admit_at(8),
            Some(10),
            "the next second, with the count held back"
        );
        assert_eq!(throttle.admit_at(8), None);
    }
}
