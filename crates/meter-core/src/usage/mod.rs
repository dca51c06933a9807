//! The usage context: what each account used, per metric and period
//! (UTC months and days), counted once per event id; quotas from the
//! plan's allowances; the period's bill.
//!

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
pub use store::{
    CheckQuota, Consumer, EventLogPage, LoggedEvent, QuotaOutcome, RecordUsage, UsageRetention,
    UsageStore, is_log_cursor, plan_limit,
};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{
    AccountId, Clock, IdempotencyKey, InvalidArgument, MeterError, PlanCatalog, StoreError,
    Timestamp, plan::check_metric,
};

/// Accounts TopConsumers lists when the caller says 0.
pub const DEFAULT_TOP_CONSUMERS: usize = 10;
/// Most accounts TopConsumers lists.
pub const MAX_TOP_CONSUMERS: usize = 1_000;
/// Events on a ListUsageEvents page when the caller says 0.
pub const DEFAULT_LOG_PAGE: usize = 50;
/// Most events on a ListUsageEvents page.
pub const MAX_LOG_PAGE: usize = 500;

/// How the usage use cases treat events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageSettings {
    /// How long what recording writes is kept.
    pub retention: UsageRetention,
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
            retention: UsageRetention::default(),
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
    /// recorded or duplicates. Each account's events are one atomic store
    /// call; the accounts of a call are recorded concurrently.
    pub async fn record(
        &self,
        events: Vec<RawUsageEvent>,
    ) -> Result<Vec<EventOutcome>, MeterError> {
        self.check_count(events.len())?;
        let now = self.clock.now();
        let checked = events
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                self.check_event(raw, now)
                    .map(Ok)
                    .map_err(|e| e.at("events", index))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.record_checked(checked, now).await
    }

    /// Records `events` as [`Usage::record`] does, except that a malformed
    /// event is rejected with the reason rather than refusing the others
    /// (for streams, where the events before it are recorded already).
    pub async fn record_each(
        &self,
        events: Vec<RawUsageEvent>,
    ) -> Result<Vec<EventOutcome>, MeterError> {
        self.check_count(events.len())?;
        let now = self.clock.now();
        let checked = events
            .into_iter()
            .map(|raw| {
                self.check_event(raw, now)
                    .map_err(|e| EventOutcome::Rejected(e.to_string()))
            })
            .collect();
        self.record_checked(checked, now).await
    }

    fn check_count(&self, count: usize) -> Result<(), InvalidArgument> {
        let max = self.settings.max_events;
        if count == 0 || count > max {
            return Err(InvalidArgument::new(
                "events",
                format!(
                    "has {count} events; send 1 to {max} in one call (meterd's --usage-max-events)"
                ),
            ));
        }
        Ok(())
    }

    /// `raw` checked, its metric declared (with `--strict-metrics`), its
    /// time not ahead of `now` by more than the allowed skew.
    fn check_event(
        &self,
        raw: RawUsageEvent,
        now: Timestamp,
    ) -> Result<UsageEvent, InvalidArgument> {
        let event = UsageEvent::check(raw, now)?;
        if self.settings.strict_metrics && !self.catalog.metrics().contains_key(&event.metric) {
            let known: Vec<&str> = self.catalog.metrics().keys().map(String::as_str).collect();
            return Err(InvalidArgument::new(
                "metric",
                format!(
                    "{:?} is not a metric of the catalog (it has: {})",
                    event.metric,
                    known.join(", ")
                ),
            ));
        }
        let ahead = now
            .as_millis()
            .saturating_add(millis(self.settings.max_skew));
        if event.time.as_millis() > ahead {
            return Err(InvalidArgument::new(
                "time",
                format!("is {}, ahead of meterd's clock ({now})", event.time),
            ));
        }
        Ok(event)
    }

    /// Records checked events (an `Err` is already that event's outcome).
    async fn record_checked(
        &self,
        checked: Vec<Result<UsageEvent, EventOutcome>>,
        now: Timestamp,
    ) -> Result<Vec<EventOutcome>, MeterError> {
        let settings = self.settings;
        let mut outcomes: Vec<Option<EventOutcome>> = vec![None; checked.len()];
        // One store call per account, its events in order.
        let mut by_account: BTreeMap<AccountId, Vec<(usize, UsageEvent)>> = BTreeMap::new();
        for (index, event) in checked.into_iter().enumerate() {
            let event = match event {
                Ok(event) => event,
                Err(outcome) => {
                    outcomes[index] = Some(outcome);
                    continue;
                }
            };
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
        let calls = by_account.into_iter().map(|(account, events)| {
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
                retention: settings.retention,
            };
            async move {
                let recorded = self.store.record(&request, now).await?;
                Ok::<_, StoreError>(indices.into_iter().zip(recorded))
            }
        });
        for recorded in futures_util::future::join_all(calls).await {
            for (index, outcome) in recorded? {
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
                retention: self.settings.retention,
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
        let forgotten = month.end().is_some_and(|end| {
            end.as_millis()
                .saturating_add(millis(self.settings.retention.month))
                <= now.as_millis()
        });
        if forgotten {
            return Err(MeterError::FailedPrecondition(format!(
                "the usage of {month} is past its retention (meterd's --usage-month-retention, \
                 {:?} after the month): no bill can be computed from it",
                self.settings.retention.month
            )));
        }
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
        bill.provisional = month.end().is_none_or(|end| {
            end.as_millis().saturating_add(millis(self.settings.grace)) > now.as_millis()
        });
        if plan.billing_interval == crate::BillingInterval::Year {
            // A yearly plan's price is billed yearly, not in a month's bill.
            bill.total_micros -= bill.base_price_micros;
            bill.base_price_micros = 0;
        }
        Ok(bill)
    }

    /// The accounts that used the most of `metric` in `period` (`YYYY-MM`
    /// or `YYYY-MM-DD`), highest first: `limit` of them (1 to
    /// [`MAX_TOP_CONSUMERS`]; 0 means [`DEFAULT_TOP_CONSUMERS`]).
    pub async fn top_consumers(
        &self,
        metric: &str,
        period: &str,
        limit: usize,
    ) -> Result<(UsagePeriod, Vec<Consumer>), MeterError> {
        check_metric(metric).map_err(|problem| InvalidArgument::new("metric", problem))?;
        let period = UsagePeriod::parse("period", period)?;
        let limit = match limit {
            0 => DEFAULT_TOP_CONSUMERS,
            n if n <= MAX_TOP_CONSUMERS => n,
            n => {
                return Err(InvalidArgument::new(
                    "limit",
                    format!(
                        "is {n}; ask for 1 to {MAX_TOP_CONSUMERS} (0 for {DEFAULT_TOP_CONSUMERS})"
                    ),
                )
                .into());
            }
        };
        let now = self.clock.now();
        let kept = match period {
            UsagePeriod::Month(_) => self.settings.retention.month,
            UsagePeriod::Day(_) => self.settings.retention.day,
        };
        let forgotten = period
            .end()
            .is_some_and(|end| end.as_millis().saturating_add(millis(kept)) <= now.as_millis());
        if forgotten {
            // Past its retention (the ranking expires by itself).
            return Ok((period, Vec::new()));
        }
        let top = self.store.top_consumers(metric, period, limit, now).await?;
        Ok((period, top))
    }

    /// A page of the account's event log (its events that carried
    /// metadata), newest first, of `metric` or of every metric when empty:
    /// `page_size` events (1 to [`MAX_LOG_PAGE`]; 0 means
    /// [`DEFAULT_LOG_PAGE`]) before `page_token` (empty for the newest),
    /// and the next page's token (empty on the last page).
    pub async fn events(
        &self,
        account: &AccountId,
        metric: &str,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<LoggedEvent>, String), MeterError> {
        if !metric.is_empty() {
            check_metric(metric).map_err(|problem| InvalidArgument::new("metric", problem))?;
        }
        let size = match page_size {
            0 => DEFAULT_LOG_PAGE,
            n if n <= MAX_LOG_PAGE => n,
            n => {
                return Err(InvalidArgument::new(
                    "page_size",
                    format!("is {n}; ask for 1 to {MAX_LOG_PAGE} (0 for {DEFAULT_LOG_PAGE})"),
                )
                .into());
            }
        };
        if !page_token.is_empty() && !is_log_cursor(page_token) {
            return Err(InvalidArgument::new(
                "page_token",
                format!("{page_token:?} is not a token ListUsageEvents returned"),
            )
            .into());
        }
        let page = EventLogPage {
            metric: (!metric.is_empty()).then(|| metric.to_owned()),
            before: (!page_token.is_empty()).then(|| page_token.to_owned()),
            size,
            retention: self.settings.retention,
        };
        let (events, next) = self.store.events(account, &page, self.clock.now()).await?;
        Ok((events, next.unwrap_or_default()))
    }

    /// Most events in one call (or one message of a stream).
    pub fn max_events(&self) -> usize {
        self.settings.max_events
    }

    /// The time now, by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
