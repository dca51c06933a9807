//! The three algorithms as plain state machines over microsecond times: the
//! embedded store runs them as they are; the Redis script
//! (`ratelimit/check.lua`) is the same arithmetic, and the store contract
//! suite holds both to the same answers.
//!
//! Each state only moves forward in time: a `now` earlier than what it
//! has seen (a clock stepped back) counts as that latest time, which errs
//! towards refusing.

use std::collections::VecDeque;

use crate::{Algorithm, Limit, Outcome};

/// The counted state of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Sliding window: bucketed entries `(latest admission time, units)`,
    /// oldest first, and their sum.
    Sliding {
        /// At most [`crate::limit::SLIDING_BUCKETS`] + 1 entries.
        entries: VecDeque<(u64, u64)>,
        /// The sum of the entries' units.
        used: u64,
    },
    /// Fixed window: the start of the window counted and its units.
    Fixed {
        /// When the window counted started (a multiple of the window).
        start: u64,
        /// Units counted in it.
        used: u64,
    },
    /// Token bucket (GCRA): the theoretical arrival time.
    Bucket {
        /// When the bucket is full again, in microseconds since the epoch.
        tat: u64,
    },
}

impl State {
    /// The state of a key never counted.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::SlidingWindow => Self::Sliding {
                entries: VecDeque::new(),
                used: 0,
            },
            Algorithm::FixedWindow => Self::Fixed { start: 0, used: 0 },
            Algorithm::TokenBucket => Self::Bucket { tat: 0 },
        }
    }

    /// Brings the state to `now` (forgetting what left the window) and says
    /// whether `cost` fits; returns the time the state counts as now.
    pub fn evaluate(&mut self, limit: &Limit, cost: u64, now: u64) -> (Outcome, u64) {
        let window = limit.window_us();
        let requests = limit.requests();
        match self {
            Self::Sliding { entries, used } => {
                let now = entries.back().map_or(now, |&(t, _)| now.max(t));
                while let Some(&(t, n)) = entries.front() {
                    if t.saturating_add(window) > now {
                        break;
                    }
                    entries.pop_front();
                    *used -= n;
                }
                let allowed = used.saturating_add(cost) <= requests;
                let retry_after_us = if allowed {
                    0
                } else {
                    // The oldest entries that must leave before `cost` fits.
                    let mut need = used.saturating_add(cost).saturating_sub(requests);
                    let mut retry = window;
                    for &(t, n) in entries.iter() {
                        retry = (t + window).saturating_sub(now);
                        if n >= need {
                            break;
                        }
                        need -= n;
                    }
                    retry
                };
                let reset = entries
                    .back()
                    .map_or(0, |&(t, _)| (t + window).saturating_sub(now));
                let outcome = Outcome {
                    allowed,
                    remaining: requests.saturating_sub(*used),
                    reset_after_us: reset,
                    retry_after_us,
                };
                (outcome, now)
            }
            Self::Fixed { start, used } => {
                // A new window once the counted one has ended (a clock
                // stepped back keeps counting in the stored one).
                if *start + window <= now {
                    *start = now - now % window;
                    *used = 0;
                }
                let allowed = used.saturating_add(cost) <= requests;
                let reset = (*start + window).saturating_sub(now);
                let outcome = Outcome {
                    allowed,
                    remaining: requests.saturating_sub(*used),
                    reset_after_us: reset,
                    retry_after_us: if allowed { 0 } else { reset },
                };
                (outcome, now)
            }
            Self::Bucket { tat } => {
                let emission = limit.emission_us();
                let tolerance = emission * requests;
                let base = (*tat).max(now);
                let next = base.saturating_add(cost.saturating_mul(emission));
                let allowed = next - now <= tolerance;
                let outcome = Outcome {
                    allowed,
                    remaining: (tolerance - (base - now).min(tolerance)) / emission,
                    reset_after_us: base - now,
                    retry_after_us: if allowed { 0 } else { next - tolerance - now },
                };
                (outcome, now)
            }
        }
    }

    /// Counts `cost` at `now` (the time [`State::evaluate`] returned, after
    /// it allowed `cost`) and returns the outcome after counting.
    pub fn commit(&mut self, limit: &Limit, cost: u64, now: u64) -> Outcome {
        let window = limit.window_us();
        let requests = limit.requests();
        match self {
            Self::Sliding { entries, used } => {
                let bucket = limit.bucket_us();
                match entries.back_mut() {
                    Some((t, n)) if *t / bucket == now / bucket => {
                        *t = now;
                        *n += cost;
                    }
                    _ => entries.push_back((now, cost)),
                }
                *used += cost;
                Outcome {
                    allowed: true,
                    remaining: requests.saturating_sub(*used),
                    reset_after_us: window,
                    retry_after_us: 0,
                }
            }
            Self::Fixed { start, used } => {
                *used += cost;
                Outcome {
                    allowed: true,
                    remaining: requests.saturating_sub(*used),
                    reset_after_us: (*start + window).saturating_sub(now),
                    retry_after_us: 0,
                }
            }
            Self::Bucket { tat } => {
                let emission = limit.emission_us();
                *tat = (*tat).max(now) + cost * emission;
                let ahead = *tat - now;
                Outcome {
                    allowed: true,
                    remaining: (emission * requests).saturating_sub(ahead) / emission,
                    reset_after_us: ahead,
                    retry_after_us: 0,
                }
            }
        }
    }

    /// Forgets the sliding window's buckets that left the window, unless
    /// the newest did too (then nothing counts, and the state waits to be
    /// counted again): what a check that does not count leaves behind.
    pub fn tidy(&mut self, limit: &Limit, now: u64) {
        let Self::Sliding { entries, used } = self else {
            return;
        };
        let window = limit.window_us();
        let Some(&(newest, _)) = entries.back() else {
            return;
        };
        let now = now.max(newest);
        if newest.saturating_add(window) <= now {
            return;
        }
        while let Some(&(t, n)) = entries.front() {
            if t.saturating_add(window) > now {
                break;
            }
            entries.pop_front();
            *used -= n;
        }
    }

    /// When the state holds nothing any more and can be forgotten (µs since the epoch).
    pub fn expires_at(&self, limit: &Limit) -> u64 {
        let window = limit.window_us();
        match self {
            Self::Sliding { entries, .. } => entries.back().map_or(0, |&(t, _)| t + window),
            Self::Fixed { start, .. } => start + window,
            Self::Bucket { tat } => *tat,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000;
    const T0: u64 = 1_780_000_000 * SECOND;

    fn limit(requests: u64, seconds: u64, algorithm: Algorithm) -> Limit {
        Limit::new(requests, Duration::from_secs(seconds), algorithm).expect("valid")
    }

    /// Checks `cost` at `now` and counts it when it fits; the outcome.
    fn take(state: &mut State, limit: &Limit, cost: u64, now: u64) -> Outcome {
        let (outcome, now) = state.evaluate(limit, cost, now);
        if outcome.allowed {
            state.commit(limit, cost, now)
        } else {
            outcome
        }
    }

    #[test]
    fn every_algorithm_admits_exactly_the_limit_of_a_burst() {
        for algorithm in [
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
            Algorithm::TokenBucket,
        ] {
            let limit = limit(50, 60, algorithm);
            let mut state = State::new(algorithm);
            // The start of a fixed window, so the burst is in one window.
            let admitted = (0..200)
                .filter(|_| take(&mut state, &limit, 1, T0 - T0 % (60 * SECOND)).allowed)
                .count();
            assert_eq!(admitted, 50, "{algorithm:?}");
        }
    }

    #[test]
    fn the_sliding_window_refuses_the_double_burst_a_fixed_window_allows() {
        let edge = T0 - T0 % (60 * SECOND) + 60 * SECOND;
        for (algorithm, expected) in [(Algorithm::FixedWindow, 20), (Algorithm::SlidingWindow, 10)]
        {
            let limit = limit(10, 60, algorithm);
            let mut state = State::new(algorithm);
            let before = (0..10)
                .filter(|_| take(&mut state, &limit, 1, edge - SECOND).allowed)
                .count();
            let after = (0..10)
                .filter(|_| take(&mut state, &limit, 1, edge + SECOND).allowed)
                .count();
            assert_eq!(before + after, expected, "{algorithm:?}");
        }
    }

    #[test]
    fn outcomes_say_what_remains_when_it_resets_and_when_to_retry() {
        let sliding = limit(3, 60, Algorithm::SlidingWindow);
        let mut state = State::new(Algorithm::SlidingWindow);
        assert_eq!(take(&mut state, &sliding, 2, T0).remaining, 1);
        let later = take(&mut state, &sliding, 1, T0 + 10 * SECOND);
        assert_eq!((later.remaining, later.reset_after_us), (0, 60 * SECOND));
        let refused = take(&mut state, &sliding, 2, T0 + 20 * SECOND);
        assert!(!refused.allowed);
        // Two units must leave: the first entry (2 units, at T0) suffices.
        assert_eq!(refused.retry_after_us, 40 * SECOND);
        assert_eq!(refused.reset_after_us, 50 * SECOND);
        assert!(take(&mut state, &sliding, 2, T0 + 60 * SECOND).allowed);

        let bucket = limit(4, 60, Algorithm::TokenBucket);
        let mut state = State::new(Algorithm::TokenBucket);
        assert_eq!(take(&mut state, &bucket, 4, T0).remaining, 0);
        let refused = take(&mut state, &bucket, 1, T0);
        assert_eq!(
            (refused.allowed, refused.retry_after_us),
            (false, 15 * SECOND)
        );
        assert!(take(&mut state, &bucket, 1, T0 + 15 * SECOND).allowed);
        assert_eq!(refused.reset_after_us, 60 * SECOND);
    }

    #[test]
    fn a_clock_stepped_back_counts_as_the_latest_time_seen() {
        let sliding = limit(2, 60, Algorithm::SlidingWindow);
        let mut state = State::new(Algorithm::SlidingWindow);
        assert!(take(&mut state, &sliding, 2, T0 + 60 * SECOND).allowed);
        assert!(!take(&mut state, &sliding, 1, T0).allowed);
        let fixed = limit(2, 60, Algorithm::FixedWindow);
        let mut state = State::new(Algorithm::FixedWindow);
        assert!(take(&mut state, &fixed, 2, T0 + 60 * SECOND).allowed);
        assert!(!take(&mut state, &fixed, 1, T0).allowed);
    }

    proptest! {
        /// The sliding window's guarantee: in any interval of the window's
        /// length, never more than the limit admitted; and its memory stays
        /// within one entry per bucket.
        #[test]
        fn the_sliding_window_never_admits_more_than_the_limit_in_any_window(
            requests in 1u64..20,
            window_ms in 10u64..2_000,
            steps in proptest::collection::vec((0u64..300, 1u64..4), 1..400),
        ) {
            let limit = Limit::new(requests, Duration::from_millis(window_ms), Algorithm::SlidingWindow)
                .expect("valid");
            let mut state = State::new(Algorithm::SlidingWindow);
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap_ms, cost) in steps {
                now += gap_ms * 1_000;
                if cost > requests {
                    continue;
                }
                if take(&mut state, &limit, cost, now).allowed {
                    admitted.push((now, cost));
                }
                if let State::Sliding { entries, .. } = &state {
                    prop_assert!(entries.len() as u64 <= crate::limit::SLIDING_BUCKETS + 1);
                }
            }
            let window = window_ms * 1_000;
            for &(start, _) in &admitted {
                let inside: u64 = admitted
                    .iter()
                    .filter(|&&(t, _)| t >= start && t < start + window)
                    .map(|&(_, n)| n)
                    .sum();
                prop_assert!(inside <= requests, "{inside} admitted in a window starting at {start}");
            }
        }

        /// The fixed window's guarantee: at most the limit in each window
        /// aligned to the epoch.
        #[test]
        fn the_fixed_window_never_admits_more_than_the_limit_in_an_aligned_window(
            requests in 1u64..20,
            window_ms in 10u64..2_000,
            steps in proptest::collection::vec((0u64..300, 1u64..4), 1..400),
        ) {
            let limit = Limit::new(requests, Duration::from_millis(window_ms), Algorithm::FixedWindow)
                .expect("valid");
            let window = window_ms * 1_000;
            let mut state = State::new(Algorithm::FixedWindow);
            let mut now = T0;
            let mut per_window = std::collections::HashMap::new();
            for (gap_ms, cost) in steps {
                now += gap_ms * 1_000;
                if take(&mut state, &limit, cost, now).allowed {
                    *per_window.entry(now / window).or_insert(0) += cost;
                }
            }
            for (index, units) in per_window {
                prop_assert!(units <= requests, "{units} admitted in window {index}");
            }
        }

        /// The token bucket's guarantee: in any interval of length t, at most
        /// the limit plus one unit per emission interval (window / limit,
        /// rounded up) elapsed.
        #[test]
        fn the_token_bucket_never_admits_more_than_a_burst_and_the_refill(
            requests in 1u64..20,
            window_ms in 10u64..2_000,
            steps in proptest::collection::vec((0u64..300, 1u64..4), 1..400),
        ) {
            let limit = Limit::new(requests, Duration::from_millis(window_ms), Algorithm::TokenBucket)
                .expect("valid");
            let mut state = State::new(Algorithm::TokenBucket);
            let mut now = T0;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap_ms, cost) in steps {
                now += gap_ms * 1_000;
                if cost <= requests && take(&mut state, &limit, cost, now).allowed {
                    admitted.push((now, cost));
                }
            }
            let emission = limit.emission_us();
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let mut units = 0;
                for &(t, n) in &admitted[i..] {
                    units += n;
                    prop_assert!(
                        units <= requests + (t - start) / emission,
                        "{units} admitted within {} µs", t - start
                    );
                }
            }
        }
    }
}
