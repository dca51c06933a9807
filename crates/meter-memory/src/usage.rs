//! [`UsageStore`] on the embedded store: per account, totals by period and
//! metric with their expiry, the event ids seen with theirs, and the event
//! log; the top-consumer rankings beside the accounts.

use std::collections::{BTreeMap, HashMap, VecDeque};

use std::sync::Mutex;

use meter_core::{
    AccountId, CheckQuota, Consumer, EventLogPage, EventOutcome, LoggedEvent, MAX_CREDITS,
    MetricKind, QuotaOutcome, RecordUsage, StoreError, Timestamp, UsagePeriod, UsageRetention,
    UsageStore, plan_limit, quota, usage::TOTAL_OVERFLOW,
};

use crate::{AccountRecord, MemoryStore};

/// The top-consumer rankings: per metric and period, each account's total
/// and when the ranking is forgotten.
#[derive(Debug, Default)]
pub(crate) struct Rankings {
    rankings: Mutex<HashMap<(String, UsagePeriod), Ranking>>,
}

#[derive(Debug)]
struct Ranking {
    expires: Timestamp,
    totals: HashMap<AccountId, i64>,
}

impl Rankings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, UsagePeriod), Ranking>> {
        self.rankings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Raises `account`'s place in each ranking the recorded events
    /// changed to its new total (as Redis's `ZADD GT`).
    fn raise(
        &self,
        account: &AccountId,
        request: &RecordUsage,
        outcomes: &[EventOutcome],
        now: Timestamp,
    ) {
        let mut rankings = self.lock();
        for ((event, _), outcome) in request.events.iter().zip(outcomes) {
            let EventOutcome::Recorded {
                month_total,
                day_total,
            } = outcome
            else {
                continue;
            };
            let retention = request.retention;
            for (period, total, kept) in [
                (
                    UsagePeriod::month_of(event.time),
                    *month_total,
                    retention.month,
                ),
                (UsagePeriod::day_of(event.time), *day_total, retention.day),
            ] {
                if total == 0 {
                    continue;
                }
                let expires = later(period.end().unwrap_or(Timestamp::MAX), kept);
                let key = (event.metric.clone(), period);
                if !rankings.contains_key(&key) {
                    // Forgets the expired ones as a new one starts.
                    rankings.retain(|_, ranking| ranking.expires > now);
                }
                let ranking = rankings.entry(key).or_insert_with(|| Ranking {
                    expires,
                    totals: HashMap::new(),
                });
                ranking.expires = expires;
                let place = ranking.totals.entry(account.clone()).or_insert(total);
                *place = (*place).max(total);
            }
        }
    }

    /// Takes `account` out of every ranking.
    pub(crate) fn remove(&self, account: &AccountId) {
        let mut rankings = self.lock();
        for ranking in rankings.values_mut() {
            ranking.totals.remove(account);
        }
        rankings.retain(|_, ranking| !ranking.totals.is_empty());
    }

    fn top(
        &self,
        metric: &str,
        period: UsagePeriod,
        limit: usize,
        now: Timestamp,
    ) -> Vec<Consumer> {
        let rankings = self.lock();
        let Some(ranking) = rankings
            .get(&(metric.to_owned(), period))
            .filter(|r| r.expires > now)
        else {
            return Vec::new();
        };
        let mut top: Vec<Consumer> = ranking
            .totals
            .iter()
            .map(|(account, used)| Consumer {
                account: account.clone(),
                used: *used,
            })
            .collect();
        // Redis's order: by score, then by member, both descending.
        top.sort_by(|a, b| {
            b.used.cmp(&a.used).then_with(|| {
                b.account
                    .as_str()
                    .as_bytes()
                    .cmp(a.account.as_str().as_bytes())
            })
        });
        top.truncate(limit);
        top
    }
}

/// An account's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UsageRecord {
    /// Totals by period, with when the period is forgotten.
    totals: BTreeMap<UsagePeriod, (Timestamp, BTreeMap<String, i64>)>,
    /// Event ids counted, with when each is forgotten.
    seen: HashMap<String, Timestamp>,
    /// The same ids in the order they were counted, to forget them cheaply.
    order: VecDeque<(Timestamp, String)>,
    /// Events with metadata, oldest first, each with its cursor (ms, n).
    log: VecDeque<((i64, u64), LoggedEvent)>,
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

    /// Adds `event` to the log, after its newest entry, keeping at most
    /// `retention.log_entries`.
    fn log(&mut self, event: &meter_core::UsageEvent, retention: UsageRetention, now: Timestamp) {
        let cursor = match self.log.back() {
            // Ids follow the clock; one that went back continues after the newest.
            Some(((ms, n), _)) if *ms >= now.as_millis() => (*ms, n + 1),
            _ => (now.as_millis(), 0),
        };
        self.log.push_back((
            cursor,
            LoggedEvent {
                event: event.clone(),
                // As on Redis: the entry id's time (after the newest one's).
                recorded_at: Timestamp::from_millis(cursor.0).unwrap_or(now),
                cursor: format!("{}-{}", cursor.0, cursor.1),
            },
        ));
        let age = i64::try_from(retention.log_age.as_millis()).unwrap_or(i64::MAX);
        let oldest = now.as_millis().saturating_sub(age);
        while self.log.len() > retention.log_entries
            || self.log.front().is_some_and(|((ms, _), _)| *ms < oldest)
        {
            self.log.pop_front();
        }
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
                (UsagePeriod::month_of(event.time), request.retention.month),
                (UsagePeriod::day_of(event.time), request.retention.day),
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
            let forget_id = later(now, request.retention.dedupe_window);
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
            if !event.metadata.is_empty() {
                self.log(event, request.retention, now);
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
                let outcomes = record
                    .usage
                    .get_or_insert_with(Default::default)
                    .record(request, now);
                // Under the account's lock, so DeleteAccount never misses it.
                self.store
                    .rankings()
                    .raise(&request.account, request, &outcomes, now);
                Ok(outcomes)
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
                            let outcomes = usage.record(consume, now);
                            self.store
                                .rankings()
                                .raise(&consume.account, consume, &outcomes, now);
                            let outcome = outcomes.into_iter().next();
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

    async fn top_consumers(
        &self,
        metric: &str,
        period: UsagePeriod,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<Consumer>, StoreError> {
        Ok(self.store.rankings().top(metric, period, limit, now))
    }

    async fn events(
        &self,
        account: &AccountId,
        page: &EventLogPage,
        now: Timestamp,
    ) -> Result<(Vec<LoggedEvent>, Option<String>), StoreError> {
        let oldest = now
            .as_millis()
            .saturating_sub(i64::try_from(page.retention.log_age.as_millis()).unwrap_or(i64::MAX));
        let before = page.before.as_deref().and_then(|cursor| {
            let (ms, n) = cursor.split_once('-')?;
            Some((ms.parse::<i64>().ok()?, n.parse::<u64>().ok()?))
        });
        Ok(self.store.read(account, |record| {
            let Some(usage) = &record.usage else {
                return (Vec::new(), None);
            };
            let mut shown = usage
                .log
                .iter()
                .rev()
                .take(page.retention.log_entries)
                .filter(|(cursor, _)| cursor.0 >= oldest)
                .filter(|(cursor, _)| before.is_none_or(|b| *cursor < b))
                .filter(|(_, e)| page.metric.as_ref().is_none_or(|m| *m == e.event.metric))
                .map(|(_, e)| e.clone());
            let events: Vec<LoggedEvent> = shown.by_ref().take(page.size).collect();
            let next = match shown.next() {
                Some(_) => events.last().map(|e| e.cursor.clone()),
                None => None,
            };
            (events, next)
        }))
    }
}
