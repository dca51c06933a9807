//! Warnings that can repeat for every call (the store down, calls refused)
//! are logged at most once a second each, with the count of those left out,
//! so an outage does not flood the log, or block on it, when it matters most.

use std::{
    collections::HashMap,
    sync::{
        LazyLock, Mutex,
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

/// One kind of warning per key (a corrupt key), each let through at most
/// once a second, so every key is named while none floods the log.
#[derive(Debug)]
pub(crate) struct KeyedThrottle {
    /// The second each key was last let through, and those held back since.
    keys: LazyLock<Mutex<HashMap<String, (u64, u64)>>>,
}

impl KeyedThrottle {
    /// Most keys remembered; past it the memory starts afresh.
    const KEYS: usize = 1024;

    /// A throttle that has let nothing through yet.
    pub(crate) const fn new() -> Self {
        Self {
            keys: LazyLock::new(Mutex::default),
        }
    }

    /// As [`Throttle::admit`], for `key`.
    pub(crate) fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, EPOCH.elapsed().as_secs())
    }

    fn admit_at(&self, key: &str, now: u64) -> Option<u64> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match keys.get_mut(key) {
            Some((last, held_back)) if *last == now => {
                *held_back += 1;
                None
            }
            Some((last, held_back)) => {
                *last = now;
                Some(std::mem::take(held_back))
            }
            None => {
                if keys.len() >= Self::KEYS {
                    keys.clear();
                }
                keys.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
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

    #[test]
    fn each_key_gets_its_own_warning_a_second() {
        let throttle = KeyedThrottle::new();
        assert_eq!(throttle.admit_at("a", 3), Some(0));
        assert_eq!(
            throttle.admit_at("b", 3),
            Some(0),
            "another key is named too"
        );
        assert_eq!(throttle.admit_at("a", 3), None);
        assert_eq!(throttle.admit_at("a", 4), Some(1));
    }
}
