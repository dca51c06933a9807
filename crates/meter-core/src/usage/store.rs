//! The usage port: what the usage context needs from a store.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use crate::{
    AccountId, EventOutcome, MetricKind, Plan, PlanCatalog, QuotaDecision, StoreError,
    Subscription, Timestamp, UsageEvent, UsagePeriod,
};

/// Events of one account to record, each with its metric's kind.
#[derive(Clone, Debug)]
pub struct RecordUsage {
    /// The account all the events are of.
    pub account: AccountId,
    /// The events, in the order reported.
    pub events: Vec<(UsageEvent, MetricKind)>,
    /// How long an event id is remembered.
    pub dedupe_window: Duration,
    /// How long a month's totals are kept after the month ends.
    pub month_retention: Duration,
    /// How long a day's totals are kept after the day ends.
    pub day_retention: Duration,
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
}
