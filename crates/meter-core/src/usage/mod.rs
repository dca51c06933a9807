//! The usage context: what each account used, per metric and period
//! (UTC months and days), counted once per event id; quotas from the
//! plan's allowances; the period's bill.
//!
//! So far: the rules (periods, events, bills, quotas), the store port,
//! recording and reading usage; quotas by plan, bills, top consumers and
//! the event log follow.

mod bill;
mod event;
mod period;
mod store;

pub use bill::{Bill, BillLine, BillOverflow, QuotaDecision, compute_bill, quota};
pub use event::{
    EventOutcome, MAX_EVENT_ID_CHARS, MAX_METADATA_CHARS, MAX_METADATA_ENTRIES, RawUsageEvent,
    UsageEvent,
};
pub use period::UsagePeriod;

/// Why an event whose period total would pass 2^53 − 1 is rejected.
pub const TOTAL_OVERFLOW: &str =
    "its period's total would pass 2^53 - 1, the most a total holds exactly";
pub use store::{CheckQuota, QuotaOutcome, RecordUsage, UsageStore, plan_limit};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{
    AccountId, Clock, IdempotencyKey, InvalidArgument, MeterError, PlanCatalog, Timestamp,
    plan::check_metric,
};

/// How the usage use cases treat events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageSettings {
    /// How long an event id is remembered (counted once within it).
    pub dedupe_window: Duration,
    /// How long a month's totals are kept after the month ends.
    pub month_retention: Duration,
    /// How long a day's totals are kept after the day ends.
    pub day_retention: Duration,
    /// How long after a month ends its events are still accepted.
    pub grace: Duration,
    /// How far ahead of the clock an event's time may be.
    pub max_skew: Duration,
    /// Most events in one call.
    pub max_events: usize,
    /// Whether only the catalog's declared metrics are accepted.
    pub strict_metrics: bool,
}

impl Default for UsageSettings {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            dedupe_window: Duration::from_secs(DAY),
            month_retention: Duration::from_secs(90 * DAY),
            day_retention: Duration::from_secs(35 * DAY),
            grace: Duration::from_secs(3 * DAY),
            max_skew: Duration::from_secs(300),
            max_events: 1_000,
            strict_metrics: false,
        }
    }
}

/// The usage use cases.
#[derive(Debug)]
pub struct Usage<S, C> {
    store: S,
    catalog: Arc<PlanCatalog>,
    clock: C,
    settings: UsageSettings,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl<S: UsageStore, C: Clock> Usage<S, C> {
    /// Usage over `store`, metrics from `catalog`, time from `clock`.
    pub fn new(store: S, catalog: Arc<PlanCatalog>, clock: C, settings: UsageSettings) -> Self {
        Self {
            store,
            catalog,
            clock,
            settings,
        }
    }

    /// Records `events` (of any accounts): the whole call is refused,
    /// nothing written, when an event is malformed (the error names its
    /// index); otherwise one outcome per event, in order: an event of a
    /// month closed longer ago than the grace is rejected, the rest are
    /// recorded or duplicates.
    pub async fn record(
        &self,
        events: Vec<RawUsageEvent>,
    ) -> Result<Vec<EventOutcome>, MeterError> {
        let settings = self.settings;
        if events.is_empty() || events.len() > settings.max_events {
            return Err(InvalidArgument::new(
                "events",
                format!(
                    "has {} events; send 1 to {} in one call (meterd's --usage-max-events)",
                    events.len(),
                    settings.max_events
                ),
            )
            .into());
        }
        let now = self.clock.now();
        let mut checked = Vec::with_capacity(events.len());
        for (index, raw) in events.into_iter().enumerate() {
            let event = UsageEvent::check(raw, now).map_err(|e| e.at("events", index))?;
            if settings.strict_metrics && !self.catalog.metrics().contains_key(&event.metric) {
                let known: Vec<&str> = self.catalog.metrics().keys().map(String::as_str).collect();
                return Err(InvalidArgument::new(
                    "metric",
                    format!(
                        "{:?} is not a metric of the catalog (it has: {})",
                        event.metric,
                        known.join(", ")
                    ),
                )
                .at("events", index)
                .into());
            }
            if event.time.as_millis() > now.as_millis().saturating_add(millis(settings.max_skew)) {
                return Err(InvalidArgument::new(
                    "time",
                    format!("is {}, ahead of meterd's clock ({now})", event.time),
                )
                .at("events", index)
                .into());
            }
            checked.push(event);
        }
        let mut outcomes: Vec<Option<EventOutcome>> = vec![None; checked.len()];
        // One store call per account, its events in order.
        let mut by_account: BTreeMap<AccountId, Vec<(usize, UsageEvent)>> = BTreeMap::new();
        for (index, event) in checked.into_iter().enumerate() {
            let closes = UsagePeriod::month_of(event.time)
                .end()
                .map_or(i64::MAX, |end| {
                    end.as_millis().saturating_add(millis(settings.grace))
                });
            if closes <= now.as_millis() {
                outcomes[index] = Some(EventOutcome::Rejected(format!(
                    "its month {} closed more than {:?} ago (meterd's --usage-grace)",
                    UsagePeriod::month_of(event.time),
                    settings.grace
                )));
                continue;
            }
            by_account
                .entry(event.account.clone())
                .or_default()
                .push((index, event));
        }
        for (account, events) in by_account {
            let (indices, events): (Vec<usize>, Vec<UsageEvent>) = events.into_iter().unzip();
            let request = RecordUsage {
                account,
                events: events
                    .into_iter()
                    .map(|e| {
                        let kind = self.catalog.metric_kind(&e.metric);
                        (e, kind)
                    })
                    .collect(),
                dedupe_window: settings.dedupe_window,
                month_retention: settings.month_retention,
                day_retention: settings.day_retention,
            };
            let recorded = self.store.record(&request, now).await?;
            for (index, outcome) in indices.into_iter().zip(recorded) {
                outcomes[index] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| EventOutcome::Rejected("not recorded".into())))
            .collect())
    }

    /// The account's usage in `period` (`YYYY-MM` or `YYYY-MM-DD`), of
    /// `metrics` (every metric it used when empty; 0 for one it did not).
    pub async fn usage(
        &self,
        account: &AccountId,
        period: &str,
        metrics: &[String],
    ) -> Result<(UsagePeriod, BTreeMap<String, i64>), MeterError> {
        let period = UsagePeriod::parse("period", period)?;
        for (index, metric) in metrics.iter().enumerate() {
            check_metric(metric)
                .map_err(|problem| InvalidArgument::new(format!("metrics[{index}]"), problem))?;
        }
        let used = self.store.usage(account, period, self.clock.now()).await?;
        if metrics.is_empty() {
            return Ok((period, used));
        }
        let picked = metrics
            .iter()
            .map(|m| (m.clone(), used.get(m).copied().unwrap_or(0)))
            .collect();
        Ok((period, picked))
    }

    /// Checks whether `amount` more of `metric` fits the account's plan
    /// this month and, with `consume`, records it as usage in the same
    /// atomic step when it does. The idempotency key names the consumed
    /// event (a retry is a duplicate, taking nothing twice); without one
    /// each call is a new event.
    pub async fn check_quota(
        &self,
        account: AccountId,
        metric: &str,
        amount: i64,
        consume: bool,
        key: Option<IdempotencyKey>,
    ) -> Result<QuotaOutcome, MeterError> {
        check_metric(metric).map_err(|problem| InvalidArgument::new("metric", problem))?;
        if self.settings.strict_metrics && !self.catalog.metrics().contains_key(metric) {
            return Err(InvalidArgument::new(
                "metric",
                format!("{metric:?} is not a metric of the catalog (--strict-metrics)"),
            )
            .into());
        }
        if !(0..=crate::MAX_CREDITS).contains(&amount) {
            return Err(InvalidArgument::new(
                "amount",
                format!("is {amount}; it must be from 0 to {}", crate::MAX_CREDITS),
            )
            .into());
        }
        let now = self.clock.now();
        let consume = consume.then(|| {
            let event_id = key.map_or_else(
                || self.fresh_event_id(now),
                // `/` is in no event id RecordUsage accepts: no collision.
                |k| format!("quota/{}", k.as_str()),
            );
            let event = UsageEvent {
                account: account.clone(),
                metric: metric.to_owned(),
                value: amount,
                event_id,
                time: now,
                metadata: BTreeMap::new(),
            };
            RecordUsage {
                account: account.clone(),
                events: vec![(event, self.catalog.metric_kind(metric))],
                dedupe_window: self.settings.dedupe_window,
                month_retention: self.settings.month_retention,
                day_retention: self.settings.day_retention,
            }
        });
        let request = CheckQuota {
            account,
            metric: metric.to_owned(),
            kind: self.catalog.metric_kind(metric),
            amount,
            catalog: Arc::clone(&self.catalog),
            consume,
        };
        Ok(self.store.check_quota(&request, now).await?)
    }

    /// An event id no other call makes: this process's random tag, the
    /// time and a counter.
    fn fresh_event_id(&self, now: Timestamp) -> String {
        use std::{
            hash::{BuildHasher, RandomState},
            sync::{
                LazyLock,
                atomic::{AtomicU64, Ordering},
            },
        };
        static TAG: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(0u8));
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("quota/{:016x}/{}/{n}", *TAG, now.as_millis())
    }

    /// What `period` (a month, `YYYY-MM`) costs the account on its plan
    /// (the plan whose allowance its subscription gives, as of the end of
    /// the month or now, whichever comes first): the base price (0 for a
    /// yearly plan, billed yearly) and each metric's overage.
    pub async fn bill(&self, account: &AccountId, period: &str) -> Result<Bill, MeterError> {
        let month = UsagePeriod::parse("period", period)?;
        if !matches!(month, UsagePeriod::Month(_)) {
            return Err(InvalidArgument::new(
                "period",
                format!("{period:?} is a day; a bill is of a month (YYYY-MM)"),
            )
            .into());
        }
        let now = self.clock.now();
        let (usage, subscription) = self
            .store
            .usage_and_subscription(account, month, now)
            .await?;
        let default = self.catalog.default_plan();
        let at = month.end().map_or(now, |end| end.min(now));
        let settled = subscription.map(|s| s.settled(at, default));
        let plan = settled
            .as_ref()
            .and_then(|s| self.catalog.get(s.allowance_plan(&default.name)))
            .unwrap_or(default);
        let mut bill = compute_bill(plan, &usage, self.catalog.currency())
            .map_err(|overflow| MeterError::FailedPrecondition(overflow.to_string()))?;
        if plan.billing_interval == crate::BillingInterval::Year {
            // A yearly plan's price is billed yearly, not in a month's bill.
            bill.total_micros -= bill.base_price_micros;
            bill.base_price_micros = 0;
        }
        Ok(bill)
    }

    /// The time now, by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
