//! Usage events as reported, checked, and what recording them did.

use std::collections::BTreeMap;

use crate::{
    AccountId, InvalidArgument, MAX_CREDITS, Timestamp, account::check_token, plan::check_metric,
};

/// Longest event id, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Most metadata entries on one event.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Longest metadata key or value, in characters.
pub const MAX_METADATA_CHARS: usize = 256;

/// One usage event, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    /// Who used it.
    pub account: AccountId,
    /// What was used, e.g. `api_request`.
    pub metric: String,
    /// How much: a count for a counter, a level for a gauge.
    pub value: i64,
    /// The caller's id of the event: the same id within the dedupe window counts once.
    pub event_id: String,
    /// When it was used.
    pub time: Timestamp,
    /// Free-form details kept in the account's event log.
    pub metadata: BTreeMap<String, String>,
}

/// An event as the transport received it, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct RawUsageEvent {
    /// The account id.
    pub account_id: String,
    /// The metric.
    pub metric: String,
    /// The value.
    pub value: i64,
    /// The event id.
    pub event_id: String,
    /// The time; now when `None`.
    pub time: Option<Timestamp>,
    /// The metadata.
    pub metadata: BTreeMap<String, String>,
}

impl UsageEvent {
    /// Checks `raw`, with `now` for an unset time.
    pub fn check(raw: RawUsageEvent, now: Timestamp) -> Result<Self, InvalidArgument> {
        let account = AccountId::parse("account_id", &raw.account_id)?;
        check_metric(&raw.metric).map_err(|problem| InvalidArgument::new("metric", problem))?;
        if !(0..=MAX_CREDITS).contains(&raw.value) {
            return Err(InvalidArgument::new(
                "value",
                format!("is {}; it must be from 0 to {MAX_CREDITS}", raw.value),
            ));
        }
        check_token(
            "event_id",
            &raw.event_id,
            MAX_EVENT_ID_CHARS,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '-'),
            "A-Za-z0-9._:@+-",
        )?;
        if raw.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(InvalidArgument::new(
                "metadata",
                format!(
                    "has {} entries; at most {MAX_METADATA_ENTRIES} are accepted",
                    raw.metadata.len()
                ),
            ));
        }
        for (key, value) in &raw.metadata {
            let long = key.chars().count() > MAX_METADATA_CHARS
                || value.chars().count() > MAX_METADATA_CHARS;
            if key.is_empty() || long || key.chars().chain(value.chars()).any(char::is_control) {
                return Err(InvalidArgument::new(
                    "metadata",
                    format!(
                        "entry {key:?}: keys of 1-{MAX_METADATA_CHARS} and values of at most \
                         {MAX_METADATA_CHARS} characters, no control characters"
                    ),
                ));
            }
        }
        Ok(Self {
            account,
            metric: raw.metric,
            value: raw.value,
            event_id: raw.event_id,
            time: raw.time.unwrap_or(now),
            metadata: raw.metadata,
        })
    }
}

/// What recording one event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Counted; the metric's totals for the event's month and day after it.
    Recorded {
        /// The month's total (a gauge's peak).
        month_total: i64,
        /// The day's total (a gauge's peak).
        day_total: i64,
    },
    /// The id was counted before, within the dedupe window: nothing changed.
    Duplicate,
    /// Refused, with the reason; nothing changed.
    Rejected(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawUsageEvent {
        RawUsageEvent {
            account_id: "org_1".into(),
            metric: "api_request".into(),
            value: 1,
            event_id: "evt-1".into(),
            time: None,
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn every_field_is_checked_and_named() {
        let now = Timestamp::parse("2026-12-01T00:00:00Z").expect("time");
        assert!(UsageEvent::check(raw(), now).is_ok());
        let cases: [(&str, RawUsageEvent); 6] = [
            (
                "account_id",
                RawUsageEvent {
                    account_id: String::new(),
                    ..raw()
                },
            ),
            (
                "metric",
                RawUsageEvent {
                    metric: "API Request".into(),
                    ..raw()
                },
            ),
            ("value", RawUsageEvent { value: -1, ..raw() }),
            (
                "value",
                RawUsageEvent {
                    value: MAX_CREDITS + 1,
                    ..raw()
                },
            ),
            (
                "event_id",
                RawUsageEvent {
                    event_id: String::new(),
                    ..raw()
                },
            ),
            (
                "metadata",
                RawUsageEvent {
                    metadata: BTreeMap::from([("k".into(), "v".repeat(300))]),
                    ..raw()
                },
            ),
        ];
        for (field, bad) in cases {
            assert_eq!(UsageEvent::check(bad, now).expect_err(field).field, field);
        }
    }
}
