//! [`UsageStore`] on the embedded store: per account, totals by period and
//! metric with their expiry, and the event ids seen with theirs.

use std::collections::{BTreeMap, HashMap, VecDeque};

use meter_core::{
    AccountId, CheckQuota, EventOutcome, MAX_CREDITS, MetricKind, QuotaOutcome, RecordUsage,
    StoreError, Timestamp, UsagePeriod, UsageStore, plan_limit, quota, usage::TOTAL_OVERFLOW,
};

use crate::{AccountRecord, MemoryStore};

/// An account's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UsageRecord {
    /// Totals by period, with when the period is forgotten.
    totals: BTreeMap<UsagePeriod, (Timestamp, BTreeMap<String, i64>)>,
    /// Event ids counted, with when each is forgotten.
    seen: HashMap<String, Timestamp>,
    /// The same ids in the order they were counted, to forget them cheaply.
    order: VecDeque<(Timestamp, String)>,
}

fn later(time: Timestamp, by: std::time::Duration) -> Timestamp {
    let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(time.as_millis().saturating_add(millis)).unwrap_or(Timestamp::MAX)
}

impl UsageRecord {
    /// Drops what expired by `now`.
    fn forget(&mut self, now: Timestamp) {
        self.totals.retain(|_, (expires, _)| *expires > now);
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front()
                && self.seen.get(&id).is_some_and(|e| *e <= now)
            {
                self.seen.remove(&id);
            }
        }
    }

    fn total(&self, period: UsagePeriod, metric: &str) -> i64 {
        self.totals
            .get(&period)
            .and_then(|(_, metrics)| metrics.get(metric))
            .copied()
            .unwrap_or(0)
    }

    /// Records the events of `request`, in order (the rules of `usage/usage.lua`).
    fn record(&mut self, request: &RecordUsage, now: Timestamp) -> Vec<EventOutcome> {
        self.forget(now);
        let mut outcomes = Vec::with_capacity(request.events.len());
        for (event, kind) in &request.events {
            if self.seen.contains_key(&event.event_id) {
                outcomes.push(EventOutcome::Duplicate);
                continue;
            }
            let periods = [
                (UsagePeriod::month_of(event.time), request.month_retention),
                (UsagePeriod::day_of(event.time), request.day_retention),
            ];
            let totals = periods.map(|(period, _)| {
                let now_value = self.total(period, &event.metric);
                let total = match kind {
                    MetricKind::Sum => now_value.saturating_add(event.value),
                    MetricKind::Max => now_value.max(event.value),
                };
                (now_value, total)
            });
            if totals.iter().any(|(_, total)| *total > MAX_CREDITS) {
                outcomes.push(EventOutcome::Rejected(TOTAL_OVERFLOW.to_owned()));
                continue;
            }
            let forget_id = later(now, request.dedupe_window);
            self.seen.insert(event.event_id.clone(), forget_id);
            self.order.push_back((forget_id, event.event_id.clone()));
            for ((period, retention), (now_value, total)) in periods.into_iter().zip(totals) {
                let expires = later(period.end().unwrap_or(Timestamp::MAX), retention);
                // As on Redis: a total that did not change writes nothing.
                if total == now_value && !self.totals.contains_key(&period) {
                    continue;
                }
                let (stored_expiry, metrics) = self
                    .totals
                    .entry(period)
                    .or_insert_with(|| (expires, BTreeMap::new()));
                *stored_expiry = expires;
                if total != now_value {
                    metrics.insert(event.metric.clone(), total);
                }
            }
            outcomes.push(EventOutcome::Recorded {
                month_total: totals[0].1,
                day_total: totals[1].1,
            });
        }
        outcomes
    }
}

/// The usage store on the embedded store.
#[derive(Clone, Debug)]
pub struct MemoryUsage {
    pub(crate) store: MemoryStore,
}

impl UsageStore for MemoryUsage {
    async fn record(
        &self,
        request: &RecordUsage,
        now: Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let recorded = self.store.mutate(
            &request.account,
            "usage",
            None,
            now,
            |record: &mut AccountRecord| {
                Ok(record
                    .usage
                    .get_or_insert_with(Default::default)
                    .record(request, now))
            },
        );
        recorded
            .map(|r| r.outcome)
            .map_err(|e| StoreError::Protocol(e.to_string()))
    }

    async fn check_quota(
        &self,
        request: &CheckQuota,
        now: Timestamp,
    ) -> Result<QuotaOutcome, StoreError> {
        let recorded = self.store.mutate(
            &request.account,
            "usage",
            None,
            now,
            |record: &mut AccountRecord| {
                let catalog = &request.catalog;
                let default = catalog.default_plan();
                let plan = record
                    .subscription
                    .clone()
                    .map(|s| s.settled(now, default))
                    .and_then(|s| catalog.get(s.allowance_plan(&default.name)).cloned())
                    .unwrap_or_else(|| default.clone());
                let (limit, hard) = plan_limit(&plan, &request.metric);
                let usage = record.usage.get_or_insert_with(Default::default);
                usage.forget(now);
                let used = usage.total(UsagePeriod::month_of(now), &request.metric);
                let mut decision = quota(limit, hard, request.kind, used, request.amount);
                let retried = request.consume.as_ref().is_some_and(|c| {
                    c.events
                        .first()
                        .is_some_and(|(e, _)| usage.seen.contains_key(&e.event_id))
                });
                let consumed = if retried {
                    // A retry of a call that took its units: allowed, nothing taken.
                    decision.allowed = true;
                    Some(EventOutcome::Duplicate)
                } else {
                    match &request.consume {
                        Some(consume) if decision.allowed => {
                            let outcome = usage.record(consume, now).into_iter().next();
                            if matches!(outcome, Some(EventOutcome::Rejected(_))) {
                                decision.allowed = false;
                            }
                            outcome
                        }
                        _ => None,
                    }
                };
                Ok(QuotaOutcome {
                    plan: plan.name,
                    decision,
                    consumed,
                })
            },
        );
        recorded
            .map(|r| r.outcome)
            .map_err(|e| StoreError::Protocol(e.to_string()))
    }

    async fn usage_and_subscription(
        &self,
        account: &AccountId,
        period: UsagePeriod,
        now: Timestamp,
    ) -> Result<(BTreeMap<String, i64>, Option<meter_core::Subscription>), StoreError> {
        Ok(self.store.read(account, |record| {
            let usage = record
                .usage
                .as_ref()
                .and_then(|u| u.totals.get(&period))
                .filter(|(expires, _)| *expires > now)
                .map(|(_, metrics)| metrics.clone())
                .unwrap_or_default();
            (usage, record.subscription.clone())
        }))
    }

    async fn usage(
        &self,
        account: &AccountId,
        period: UsagePeriod,
        now: Timestamp,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        Ok(self.store.read(account, |record| {
            record
                .usage
                .as_ref()
                .and_then(|u| u.totals.get(&period))
                .filter(|(expires, _)| *expires > now)
                .map(|(_, metrics)| metrics.clone())
                .unwrap_or_default()
        }))
    }
}
