//! What a limit is: units per window, counted by an algorithm, and what a
//! rule adds to it (a name, shadow mode, fail mode).

use std::time::Duration;

use serde::Deserialize;

/// The largest limit: units per window.
pub const MAX_LIMIT: u64 = 1_000_000_000;

/// The longest window: 366 days.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// The shortest window: 1 ms.
pub const MIN_WINDOW: Duration = Duration::from_millis(1);

/// Buckets per window of the sliding window: a key keeps at most one more
/// entry than this, and a unit counts up to `window / SLIDING_BUCKETS` past the window.
pub const SLIDING_BUCKETS: u64 = 60;

/// How a limit counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Never more than the limit in any interval of the window's length.
    #[default]
    SlidingWindow,
    /// At most the limit in each window aligned to the Unix epoch.
    FixedWindow,
    /// A token bucket (GCRA): bursts of up to the limit, then the steady rate.
    TokenBucket,
}

impl Algorithm {
    /// The name in the limits file: `sliding_window`, `fixed_window`, `token_bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlidingWindow => "sliding_window",
            Self::FixedWindow => "fixed_window",
            Self::TokenBucket => "token_bucket",
        }
    }

    /// The one-letter suffix of the algorithm's stored keys: `s`, `f`, `t`.
    pub fn code(self) -> &'static str {
        match self {
            Self::SlidingWindow => "s",
            Self::FixedWindow => "f",
            Self::TokenBucket => "t",
        }
    }
}

/// What a limit does when the store cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Refuse to answer (UNAVAILABLE): the caller decides.
    #[default]
    Closed,
    /// Admit, reporting it, and log it.
    Open,
}

/// A unit of Envoy's `requests_per_unit`, with its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3,600 s.
    Hour,
    /// 86,400 s.
    Day,
    /// 7 days.
    Week,
    /// 30 days (as Envoy's reference rate limit service counts a month).
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// The unit's length.
    pub fn duration(self) -> Duration {
        let seconds = match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
            Self::Month => 30 * 86_400,
            Self::Year => 365 * 86_400,
        };
        Duration::from_secs(seconds)
    }
}

/// A checked limit: `requests` units per `window`, counted by `algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    requests: u64,
    window_us: u64,
    algorithm: Algorithm,
}

impl Limit {
    /// The limit, or what is wrong with it: `requests` from 1 to
    /// [`MAX_LIMIT`], `window` from 1 ms to 366 days, and a token bucket
    /// refilling at most one unit per microsecond.
    pub fn new(requests: u64, window: Duration, algorithm: Algorithm) -> Result<Self, String> {
        if !(1..=MAX_LIMIT).contains(&requests) {
            return Err(format!(
                "the limit ({requests}) must be from 1 to {MAX_LIMIT}"
            ));
        }
        if window < MIN_WINDOW || window > MAX_WINDOW {
            return Err(format!("the window ({window:?}) must be from 1ms to 366d"));
        }
        // In range: at most 366 days of microseconds.
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        if algorithm == Algorithm::TokenBucket && requests > window_us {
            return Err(format!(
                "a token bucket refills at most one unit per microsecond: {requests} per \
                 {window:?} is faster; use a longer window"
            ));
        }
        Ok(Self {
            requests,
            window_us,
            algorithm,
        })
    }

    /// Units admitted per window.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The window in microseconds.
    pub fn window_us(&self) -> u64 {
        self.window_us
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.window_us)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Token bucket: microseconds per token (the window over the limit, rounded up).
    pub fn emission_us(&self) -> u64 {
        self.window_us.div_ceil(self.requests)
    }

    /// Sliding window: the length of one bucket in microseconds (the window
    /// over [`SLIDING_BUCKETS`], rounded up: a window spans at most that many).
    pub fn bucket_us(&self) -> u64 {
        self.window_us.div_ceil(SLIDING_BUCKETS)
    }
}

/// A limit as configured: a name for logs and Envoy, shadow and fail modes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The limit.
    pub limit: Limit,
    /// The name: the policy's, or the descriptor's path in the limits file.
    pub name: String,
    /// Count and report, never refuse.
    pub shadow: bool,
    /// What happens when the store cannot be reached.
    pub fail: FailMode,
    /// Envoy's unit of the limit, when it was given as `requests_per_unit`.
    pub unit: Option<Unit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_token_buckets_refill_at_most_once_a_microsecond() {
        let minute = Duration::from_secs(60);
        assert!(Limit::new(0, minute, Algorithm::SlidingWindow).is_err());
        assert!(Limit::new(MAX_LIMIT + 1, minute, Algorithm::FixedWindow).is_err());
        assert!(Limit::new(1, Duration::from_micros(999), Algorithm::FixedWindow).is_err());
        assert!(
            Limit::new(
                1,
                MAX_WINDOW + Duration::from_secs(1),
                Algorithm::FixedWindow
            )
            .is_err()
        );
        assert!(Limit::new(2_000, Duration::from_millis(1), Algorithm::TokenBucket).is_err());
        let limit = Limit::new(7, minute, Algorithm::TokenBucket).expect("valid");
        assert_eq!(
            limit.emission_us(),
            8_571_429,
            "rounded up: never faster than 7 a minute"
        );
        assert_eq!(limit.bucket_us(), 1_000_000);
        assert_eq!(Unit::Month.duration(), Duration::from_secs(2_592_000));
    }
}
