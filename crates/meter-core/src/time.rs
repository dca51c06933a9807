//! Instants as the stores keep them: UTC, whole milliseconds.

use std::{fmt, time::Duration};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// A UTC instant with millisecond precision, the resolution every store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Earliest instant a store accepts: 1970-01-01T00:00:00.000Z.
const MIN_MILLIS: i64 = 0;
/// Latest instant a store accepts: 9999-12-31T23:59:59.999Z, so every
/// timestamp prints as a fixed-width ISO 8601 string.
const MAX_MILLIS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub const EPOCH: Self = Self(MIN_MILLIS);
    /// 9999-12-31T23:59:59.999Z, the latest instant a store keeps.
    pub const MAX: Self = Self(MAX_MILLIS);

    /// The instant `millis` milliseconds after the Unix epoch, if within 1970..=9999.
    pub fn from_millis(millis: i64) -> Option<Self> {
        (MIN_MILLIS..=MAX_MILLIS)
            .contains(&millis)
            .then_some(Self(millis))
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// The instant as a chrono UTC date-time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        // In range by construction.
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// The instant of `datetime`, truncated to the millisecond, if within 1970..=9999.
    pub fn from_datetime(datetime: DateTime<Utc>) -> Option<Self> {
        Self::from_millis(datetime.timestamp_millis())
    }

    /// Parses the stored form, `YYYY-MM-DDTHH:MM:SS.mmmZ` (any RFC 3339 is accepted).
    pub fn parse(text: &str) -> Option<Self> {
        let parsed = DateTime::parse_from_rfc3339(text).ok()?;
        Self::from_datetime(parsed.with_timezone(&Utc))
    }
}

impl fmt::Display for Timestamp {
    /// Writes the stored form, e.g. `2026-02-28T10:00:00.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        )
    }
}

/// Parses `500ms`, `30s`, `15m`, `24h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 30s, 15m, 24h, 7d"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => return Err(format!("{text:?} has no known unit; use ms, s, m, h or d")),
    };
    millis
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} must be positive and at most a few million years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip_at_the_edges() {
        for millis in [0, 1, 1_767_225_600_123, MAX_MILLIS] {
            let ts = Timestamp::from_millis(millis).expect("in range");
            assert_eq!(Timestamp::parse(&ts.to_string()), Some(ts));
        }
        assert_eq!(
            Timestamp::from_millis(1_000).map(|t| t.to_string()),
            Some("1970-01-01T00:00:01.000Z".to_owned())
        );
    }

    #[test]
    fn out_of_range_instants_are_refused() {
        assert_eq!(Timestamp::from_millis(-1), None);
        assert_eq!(Timestamp::from_millis(MAX_MILLIS + 1), None);
        assert_eq!(Timestamp::parse("not a date"), None);
    }
}
