//! Stripe's webhook signatures: `Stripe-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<raw body>">[,v1=…][,v0=…]`, checked against every
//! endpoint secret (several during a rotation), in constant time, before
//! the body is parsed.

use std::{fmt, time::Duration};

use ring::hmac;

/// The endpoint secrets (`whsec_…`); never printed.
#[derive(Clone)]
pub struct Secrets(Vec<hmac::Key>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// The secrets of a comma-separated list (blank entries skipped); `None` when there is none.
    pub fn parse(list: &str) -> Option<Self> {
        let keys: Vec<hmac::Key> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
            .collect();
        (!keys.is_empty()).then_some(Self(keys))
    }

    /// How many secrets are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is held (never, for a parsed list).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a delivery's signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("no Stripe-Signature header")]
    Missing,
    /// The header has no `t=` timestamp or no `v1=` signature.
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    /// The timestamp is further from now than the tolerance.
    #[error("the signature's timestamp is {age_seconds} s from now, outside the tolerance")]
    OutsideTolerance {
        /// Seconds between the timestamp and now (negative: ahead).
        age_seconds: i64,
    },
    /// No `v1` signature matches any secret.
    #[error("no v1 signature matches the endpoint secret")]
    Mismatch,
}

/// Checks `header` against `body` at `now` (Unix seconds): the timestamp
/// within `tolerance`, and some `v1` signature matching some secret.
/// Returns the signed timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &Secrets,
    now: i64,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures: Vec<[u8; TAG_BYTES]> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) if timestamp.is_none() => timestamp = value.parse::<i64>().ok(),
            // Only well-formed tags count, and only the first few: a header
            // of many costs no more than one of several.
            Some(("v1", value)) if signatures.len() < MAX_SIGNATURES => {
                if let Some(tag) = hex(value).and_then(|bytes| bytes.try_into().ok()) {
                    signatures.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_seconds = now.saturating_sub(timestamp);
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if age_seconds.abs() > tolerance {
        return Err(SignatureError::OutsideTolerance { age_seconds });
    }
    let mut signed = Vec::with_capacity(body.len() + 12);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // One HMAC per secret, whatever the number of signatures; every
    // comparison runs to the end.
    let mut matches = false;
    for key in &secrets.0 {
        let expected = hmac::sign(key, &signed);
        for candidate in &signatures {
            matches |= constant_time_eq(expected.as_ref(), candidate);
        }
    }
    if matches {
        Ok(timestamp)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` header Stripe would send for `body` at
/// `timestamp` with `secret`: for tests and tools.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let tag = hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// The bytes of an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// How many `v1` entries of a header are looked at (Stripe sends one per
/// endpoint secret still valid: one, or two during a rotation).
const MAX_SIGNATURES: usize = 8;

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn secrets(list: &str) -> Secrets {
        Secrets::parse(list).expect("a secret")
    }

    #[test]
    fn a_signature_matches_python_hmac_of_the_same_payload() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'whsec_test_secret',
        //   b'1700000000.{\"id\":\"evt_1\"}', hashlib.sha256).hexdigest())"
        let expected =
            "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";
        assert_eq!(sign("whsec_test_secret", 1_700_000_000, BODY), expected);
        assert_eq!(
            verify(
                Some(expected),
                BODY,
                &secrets("whsec_test_secret"),
                1_700_000_100,
                TOLERANCE
            ),
            Ok(1_700_000_000)
        );
    }

    #[test]
    fn any_v1_of_any_secret_matches_and_v0_is_ignored() {
        let header = sign("whsec_new", 1_700_000_000, BODY);
        let with_others = format!("{header},v1=00ff,v0=abcd");
        let rotated = secrets("whsec_old, whsec_new");
        assert!(verify(Some(&with_others), BODY, &rotated, 1_700_000_000, TOLERANCE).is_ok());
        let two = format!(
            "t=1700000000,v1=beef,{}",
            sign("whsec_old", 1_700_000_000, BODY)
                .split_once(',')
                .expect("v1")
                .1
        );
        assert!(verify(Some(&two), BODY, &rotated, 1_700_000_000, TOLERANCE).is_ok());
    }

    #[test]
    fn only_the_first_well_formed_v1_entries_are_looked_at() {
        let key = secrets("whsec_test_secret");
        let good = sign("whsec_test_secret", 1_700_000_000, BODY);
        let tag = good.split_once(",v1=").expect("v1").1;
        let wrong = format!(",v1={}", "ab".repeat(TAG_BYTES));
        let at = 1_700_000_000;
        let after = |n: usize| format!("t={at}{},v1={tag}", wrong.repeat(n));
        assert!(verify(Some(&after(MAX_SIGNATURES - 1)), BODY, &key, at, TOLERANCE).is_ok());
        assert_eq!(
            verify(Some(&after(MAX_SIGNATURES)), BODY, &key, at, TOLERANCE),
            Err(SignatureError::Mismatch),
            "a header of many signatures costs at most {MAX_SIGNATURES} comparisons"
        );
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(constant_time_eq(b"abc", b"abc"));
    }

    #[test]
    fn unsigned_mis_signed_expired_and_altered_deliveries_are_refused() {
        let key = secrets("whsec_test_secret");
        let header = sign("whsec_test_secret", 1_700_000_000, BODY);
        let at = 1_700_000_000;
        assert_eq!(
            verify(None, BODY, &key, at, TOLERANCE),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("t=1700000000"), BODY, &key, at, TOLERANCE),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("v1=abcd"), BODY, &key, at, TOLERANCE),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(
                Some(&sign("whsec_other", at, BODY)),
                BODY,
                &key,
                at,
                TOLERANCE
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), br#"{"id":"evt_2"}"#, &key, at, TOLERANCE),
            Err(SignatureError::Mismatch),
            "a body altered after signing"
        );
        assert_eq!(
            verify(Some(&header), BODY, &key, at + 301, TOLERANCE),
            Err(SignatureError::OutsideTolerance { age_seconds: 301 })
        );
        assert_eq!(
            verify(Some(&header), BODY, &key, at - 301, TOLERANCE),
            Err(SignatureError::OutsideTolerance { age_seconds: -301 })
        );
        assert!(Secrets::parse(" , ").is_none());
        assert_eq!(format!("{key:?}"), "Secrets(1 redacted)");
    }
}
