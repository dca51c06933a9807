//! Idempotency: the caller's key, the fingerprint of what it was sent with,
//! how long a store remembers it, and the recorded outcome a replay returns.
//!
//! Every mutation of every context takes an optional key. A store runs the
//! mutation and records its outcome under the key in one atomic step; a
//! repeat within the window returns that outcome marked `replayed`, and a
//! repeat with other arguments is refused.

use std::{fmt, time::Duration};

use crate::{InvalidArgument, Timestamp, account::check_token};

/// Longest accepted idempotency key, in characters (all ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A caller-chosen key that makes a mutation safe to retry: 1–128 characters
/// of `A-Za-z0-9._:@+-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates `raw`; an empty string means no key (`Ok(None)`).
    pub fn parse_optional(field: &'static str, raw: &str) -> Result<Option<Self>, InvalidArgument> {
        if raw.is_empty() {
            return Ok(None);
        }
        check_token(
            field,
            raw,
            MAX_IDEMPOTENCY_KEY_LEN,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '-'),
            "A-Za-z0-9._:@+-",
        )?;
        Ok(Some(Self(raw.to_owned())))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An idempotency key and the fingerprint of the request it was sent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's key.
    pub key: IdempotencyKey,
    /// Every argument of the request, so a reuse with other arguments is caught.
    pub fingerprint: String,
}

impl Idempotency {
    /// The idempotency of a request whose arguments are `parts` (the
    /// operation's name first); `None` when the caller sent no key.
    pub fn new(key: Option<IdempotencyKey>, parts: &[&str]) -> Option<Self> {
        key.map(|key| Self {
            key,
            fingerprint: parts.join("\u{1f}"),
        })
    }
}

/// How long a store remembers an idempotency key: from 1 ms to 30 days.
///
/// The bound is checked once, when the window is made, so a store can never
/// be asked to keep a record for a time it refuses (Redis rejects a `SET …
/// PX` past its limits), which would fail a call after its change was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyWindow(Duration);

/// Why a window was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency window must be from 1ms to 30 days; {given:?} was given")]
pub struct WindowOutOfRange {
    /// The refused length.
    pub given: Duration,
}

impl IdempotencyWindow {
    /// The longest window: 30 days.
    pub const MAX: Duration = Duration::from_secs(30 * 86_400);

    /// A window of `length`, if it is from 1 ms to [`Self::MAX`].
    pub fn new(length: Duration) -> Result<Self, WindowOutOfRange> {
        if length >= Duration::from_millis(1) && length <= Self::MAX {
            Ok(Self(length))
        } else {
            Err(WindowOutOfRange { given: length })
        }
    }

    /// The window's length.
    pub fn length(self) -> Duration {
        self.0
    }

    /// The window in whole milliseconds (at least 1).
    pub fn as_millis(self) -> i64 {
        // At most 30 days: 2,592,000,000 ms fits easily.
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    /// When a key recorded at `now` is forgotten, clamped to the last representable instant.
    pub fn expiry(self, now: Timestamp) -> Timestamp {
        Timestamp::from_millis(now.as_millis().saturating_add(self.as_millis()))
            .unwrap_or(Timestamp::MAX)
    }
}

impl fmt::Display for IdempotencyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A mutation's outcome, and whether it is the stored outcome of an earlier call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded<T> {
    /// The outcome.
    pub outcome: T,
    /// True when an earlier call with the same idempotency key produced it.
    pub replayed: bool,
}

impl<T> Recorded<T> {
    /// The same record around another outcome, or the error making it gave.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Recorded<U>, E> {
        Ok(Recorded {
            outcome: f(self.outcome)?,
            replayed: self.replayed,
        })
    }

    /// The same record with its outcome transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Recorded<U> {
        Recorded {
            outcome: f(self.outcome),
            replayed: self.replayed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_idempotency_key_means_none_and_bad_ones_are_refused() {
        assert_eq!(
            IdempotencyKey::parse_optional("idempotency_key", ""),
            Ok(None)
        );
        assert!(
            IdempotencyKey::parse_optional("idempotency_key", "evt_1:grant")
                .is_ok_and(|k| k.is_some())
        );
        let err =
            IdempotencyKey::parse_optional("idempotency_key", &"k".repeat(129)).expect_err("long");
        assert_eq!(err.field, "idempotency_key");
        assert!(IdempotencyKey::parse_optional("idempotency_key", "a b").is_err());
    }

    #[test]
    fn windows_are_bounded_by_thirty_days() {
        assert!(IdempotencyWindow::new(Duration::from_secs(86_400)).is_ok());
        assert!(IdempotencyWindow::new(IdempotencyWindow::MAX).is_ok());
        let too_long = IdempotencyWindow::new(IdempotencyWindow::MAX + Duration::from_millis(1));
        assert!(
            too_long
                .expect_err("31 days")
                .to_string()
                .contains("30 days")
        );
        assert!(IdempotencyWindow::new(Duration::from_micros(999)).is_err());
    }

    #[test]
    fn expiry_is_now_plus_the_window_and_never_overflows() {
        let window = IdempotencyWindow::new(Duration::from_secs(60)).expect("valid");
        let now = Timestamp::from_millis(1_000).expect("valid");
        assert_eq!(window.expiry(now).as_millis(), 61_000);
        assert_eq!(window.expiry(Timestamp::MAX), Timestamp::MAX);
    }
}
