//! The usage port: what the usage context needs from a store.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use crate::{
    AccountId, EventOutcome, MetricKind, Plan, PlanCatalog, QuotaDecision, StoreError,
    Subscription, Timestamp, UsageEvent, UsagePeriod,
};

/// How long a store keeps what recording usage writes; every key it writes
/// expires by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRetention {
    /// How long an event id is remembered (counted once within it).
    pub dedupe_window: Duration,
    /// How long a month's totals (and its top consumers) are kept after the month ends.
    pub month: Duration,
    /// How long a day's totals (and its top consumers) are kept after the day ends.
    pub day: Duration,
    /// How long an event with metadata stays in the account's event log.
    pub log_age: Duration,
    /// Most entries an account's event log shows (older ones are trimmed).
    pub log_entries: usize,
}

impl Default for UsageRetention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            dedupe_window: Duration::from_secs(DAY),
            month: Duration::from_secs(90 * DAY),
            day: Duration::from_secs(35 * DAY),
            log_age: Duration::from_secs(30 * DAY),
            log_entries: 1_000,
        }
    }
}

/// Events of one account to record, each with its metric's kind.
#[derive(Clone, Debug)]
pub struct RecordUsage {
    /// The account all the events are of.
    pub account: AccountId,
    /// The events, in the order reported.
    pub events: Vec<(UsageEvent, MetricKind)>,
    /// How long what they write is kept.
    pub retention: UsageRetention,
}

/// A quota check of one metric for the month of `now`, against the limit
/// of the account's plan (by its subscription as of `now`, inside the
/// atomic step), and with `consume`, the units it takes when they fit.
#[derive(Clone, Debug)]
pub struct CheckQuota {
    /// The account.
    pub account: AccountId,
    /// The metric.
    pub metric: String,
    /// How the metric adds up.
    pub kind: MetricKind,
    /// The units asked for (for a gauge, the level).
    pub amount: i64,
    /// The catalog the plans' limits come from.
    pub catalog: Arc<PlanCatalog>,
    /// The usage event recording the units when they fit; `None` to check only.
    pub consume: Option<RecordUsage>,
}

/// The limit a plan sets on `metric`: `None` for unlimited (not listed, or
/// no `included`), and whether it is hard (no overage price).
pub fn plan_limit(plan: &Plan, metric: &str) -> (Option<i64>, bool) {
    match plan.usage.get(metric) {
        Some(limit) => (limit.included, limit.overage_micros == 0),
        None => (None, false),
    }
}

/// What a quota check answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaOutcome {
    /// The plan whose limit applied.
    pub plan: String,
    /// The decision.
    pub decision: QuotaDecision,
    /// What recording the consumed units did (when asked and allowed).
    pub consumed: Option<EventOutcome>,
}

/// Keeps every account's usage, per metric, month and day; each call is
/// one atomic step per account.
pub trait UsageStore: Clone + Send + Sync + 'static {
    /// Records the events in order: an event id seen within the dedupe
    /// window is a duplicate; a counter adds its value to the event's month
    /// and day, a gauge raises them to its value. One outcome per event.
    fn record(
        &self,
        request: &RecordUsage,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<EventOutcome>, StoreError>> + Send;

    /// Checks a quota against the month's usage, and records `consume`'s
    /// event when the units fit, in one atomic step: racing callers never
    /// both take the last unit. The decision's `used` is before the event.
    fn check_quota(
        &self,
        request: &CheckQuota,
        now: Timestamp,
    ) -> impl Future<Output = Result<QuotaOutcome, StoreError>> + Send;

    /// The account's usage in `period` with its stored subscription, read
    /// in one atomic step (a bill's inputs).
    fn usage_and_subscription(
        &self,
        account: &AccountId,
        period: UsagePeriod,
        now: Timestamp,
    ) -> impl Future<Output = Result<(BTreeMap<String, i64>, Option<Subscription>), StoreError>> + Send;

    /// The account's usage in `period` (a month or a day), by metric; empty
    /// for a period past its retention.
    fn usage(
        &self,
        account: &AccountId,
        period: UsagePeriod,
        now: Timestamp,
    ) -> impl Future<Output = Result<BTreeMap<String, i64>, StoreError>> + Send;

    /// The accounts that used the most of `metric` in `period`, highest
    /// first (ties: account ids in descending byte order), at most `limit`.
    fn top_consumers(
        &self,
        metric: &str,
        period: UsagePeriod,
        limit: usize,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Consumer>, StoreError>> + Send;

    /// A page of the account's event log, newest first, and the cursor of
    /// the next page (`None` on the last).
    fn events(
        &self,
        account: &AccountId,
        page: &EventLogPage,
        now: Timestamp,
    ) -> impl Future<Output = Result<(Vec<LoggedEvent>, Option<String>), StoreError>> + Send;
}

/// One account's place in a ranking of a metric's consumers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    /// The account.
    pub account: AccountId,
    /// What it used in the period (a gauge's peak).
    pub used: i64,
}

/// Which page of an account's event log to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLogPage {
    /// Only events of this metric; every metric when `None`.
    pub metric: Option<String>,
    /// Only events logged before this cursor (exclusive); the newest when `None`.
    pub before: Option<String>,
    /// Most events on the page.
    pub size: usize,
    /// What the log keeps (older or further entries are not shown).
    pub retention: UsageRetention,
}

/// An event of an account's event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The event as recorded.
    pub event: UsageEvent,
    /// When it was recorded, by meterd's clock.
    pub recorded_at: Timestamp,
    /// Its place in the log: `<ms>-<n>`, for paging.
    pub cursor: String,
}

/// Whether `text` is an event-log cursor: `<ms>-<n>`, decimal, ms a
/// time meterd can hold, and not `0-0` (before every entry).
pub fn is_log_cursor(text: &str) -> bool {
    let digits =
        |part: &str| (1..=20).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    text.split_once('-').is_some_and(|(ms, n)| {
        digits(ms)
            && digits(n)
            && ms
                .parse::<i64>()
                .is_ok_and(|ms| Timestamp::from_millis(ms).is_some())
            && n.parse::<u64>().is_ok()
            && text != "0-0"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_cursors_are_entry_ids_after_the_first_instant() {
        for good in [
            "1796000000000-0",
            "1-0",
            "0-1",
            "1796000000000-18446744073709551615",
        ] {
            assert!(is_log_cursor(good), "{good}");
        }
        for bad in [
            "",
            "0-0",
            "next",
            "17-",
            "-3",
            "1-2-3",
            "+1-0",
            "1 -0",
            "99999999999999999999-0",
            "1-99999999999999999999",
        ] {
            assert!(!is_log_cursor(bad), "{bad}");
        }
    }
}
