//! [`CreditLedger`] on the embedded store: the rules of
//! [`CreditAccount`] applied to a copy of the account, and its history in a
//! bounded queue.

use std::collections::VecDeque;

use meter_core::{
    AccountId, Caller, CreditAccount, CreditBalance, CreditLedger, DeductCredits, DeductOutcome,
    GrantCredits, GrantOutcome, HistoryEntry, HistoryId, HistoryKind, HistoryPage, HistoryQuery,
    HistoryRetention, MeterError, NewGrant, Recorded, ReserveCredits, ReserveOutcome, ResetCredits,
    SettleHold, SettleOutcome, StoreError, Timestamp,
};

use crate::{AccountRecord, MemoryStore};

/// The idempotency context of credits calls (Redis keeps them under `idem:credits:v2:`).
const CONTEXT: &str = "credits";
/// The idempotency context of settled holds, keyed by hold id (`idem:hold:` on Redis).
const HOLDS: &str = "hold";

/// An account's history: entries with their ids, oldest first.
pub(crate) type History = VecDeque<(HistoryId, HistoryEntry)>;

/// The credit ledger on the embedded store.
#[derive(Clone, Debug)]
pub struct MemoryCreditLedger {
    store: MemoryStore,
}

impl MemoryCreditLedger {
    pub(crate) fn new(store: MemoryStore) -> Self {
        Self { store }
    }

    pub(crate) fn retention(&self) -> HistoryRetention {
        self.store.inner.history_retention
    }

    /// Runs `change` on the account's credits (settled by `now` inside each
    /// rule) and appends what it logged to the history. `create` says
    /// whether an unknown account comes into being; when it does not, the
    /// change runs on an empty account that is not stored.
    #[allow(clippy::too_many_arguments)]
    fn change<T: Clone + Send + 'static>(
        &self,
        account: &AccountId,
        context: &'static str,
        idempotency: Option<&meter_core::Idempotency>,
        now: Timestamp,
        create: bool,
        change: impl FnOnce(&mut CreditAccount, &mut Vec<HistoryEntry>) -> Result<T, MeterError>,
    ) -> Result<Recorded<T>, MeterError> {
        let retention = self.retention();
        self.store.mutate(
            account,
            context,
            idempotency,
            now,
            |record: &mut AccountRecord| {
                let exists = record.credits.is_some();
                // The record is already the store's copy: take, don't clone.
                let mut credits = record.credits.take().unwrap_or_default();
                let mut log = Vec::new();
                let outcome = change(&mut credits, &mut log)?;
                if exists || create {
                    record.credits = Some(credits);
                    append(&mut record.history, log, now, retention);
                }
                Ok(outcome)
            },
        )
    }
}

/// Appends `log` with ids that never go backwards, then trims to the
/// retention; counts in meterd's metrics what the log settled.
pub(crate) fn append(
    history: &mut History,
    log: Vec<HistoryEntry>,
    now: Timestamp,
    retention: HistoryRetention,
) {
    count_settled(&log);
    let now_ms = u64::try_from(now.as_millis()).unwrap_or_default();
    for entry in log {
        let id = match history.back() {
            Some((last, _)) if last.millis >= now_ms => HistoryId {
                millis: last.millis,
                seq: last.seq + 1,
            },
            _ => HistoryId {
                millis: now_ms,
                seq: 0,
            },
        };
        history.push_back((id, entry));
    }
    let oldest = now_ms.saturating_sub(retention.max_age_millis());
    while history.len() > retention.max_entries as usize
        || history.front().is_some_and(|(id, _)| id.millis < oldest)
    {
        history.pop_front();
    }
}

/// Counts the credits and holds that expired and the credits period resets
/// renewed, as the Redis store's scripts report them.
fn count_settled(log: &[HistoryEntry]) {
    let (mut expired, mut holds, mut renewed) = (0, 0, 0);
    for entry in log {
        let amount = |n: i64| u64::try_from(n).unwrap_or(0);
        match entry.kind {
            HistoryKind::Expire => expired += amount(entry.amount),
            HistoryKind::HoldExpired => holds += 1,
            HistoryKind::PeriodReset => renewed += amount(entry.change),
            _ => {}
        }
    }
    if expired + holds + renewed > 0 {
        meter_metrics::metrics().settled(expired, holds, renewed);
    }
}

impl CreditLedger for MemoryCreditLedger {
    async fn balance(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<CreditBalance, StoreError> {
        Ok(self.store.read(account, |record| {
            record
                .credits
                .clone()
                .map_or_else(CreditBalance::default, |mut credits| {
                    credits.settle(now, &mut Vec::new());
                    credits.balance(now)
                })
        }))
    }

    async fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> Result<Recorded<DeductOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let caller = caller(idempotency, request.reason.as_str());
        self.change(
            &request.account,
            CONTEXT,
            idempotency,
            now,
            false,
            |credits, log| {
                let applied = credits.deduct(request.amount, now, caller, log);
                Ok(DeductOutcome {
                    applied,
                    balance: credits.balance(now),
                })
            },
        )
    }

    async fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> Result<Recorded<GrantOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let caller = caller(idempotency, request.reason.as_str());
        let grant = NewGrant {
            id: request.wanted_id(),
            kind: request.kind,
            amount: request.amount,
            expires: request.expires,
        };
        self.change(
            &request.account,
            CONTEXT,
            idempotency,
            now,
            true,
            |credits, log| {
                let grant_id = credits.grant(grant, now, caller, log)?;
                Ok(GrantOutcome {
                    grant_id,
                    balance: credits.balance(now),
                })
            },
        )
    }

    async fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let caller = caller(idempotency, "");
        let retention = self.retention();
        self.store.mutate(
            &request.account,
            CONTEXT,
            idempotency,
            now,
            |record: &mut AccountRecord| {
                let (total, period) = request.to.resolve(record.subscription.as_ref(), now);
                let mut credits = record.credits.take().unwrap_or_default();
                let mut log = Vec::new();
                credits.reset(total, period, now, caller, &mut log)?;
                let balance = credits.balance(now);
                record.credits = Some(credits);
                append(&mut record.history, log, now, retention);
                Ok(balance)
            },
        )
    }

    async fn reserve(
        &self,
        request: &ReserveCredits,
        now: Timestamp,
    ) -> Result<Recorded<ReserveOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let caller = caller(idempotency, request.reason.as_str());
        let expires = request.expires(now)?;
        self.change(
            &request.account,
            CONTEXT,
            idempotency,
            now,
            false,
            |credits, log| {
                let hold = credits.reserve(request.amount, expires, now, caller, log)?;
                Ok(ReserveOutcome {
                    hold: hold.map(|h| (h.id, h.expires)),
                    balance: credits.balance(now),
                })
            },
        )
    }

    async fn settle_hold(
        &self,
        request: &SettleHold,
        now: Timestamp,
    ) -> Result<Recorded<SettleOutcome>, MeterError> {
        let idempotency = request.idempotency();
        let hold_id = request.hold_id.as_str();
        self.change(
            &request.account,
            HOLDS,
            Some(&idempotency),
            now,
            false,
            |credits, log| {
                let settlement = credits.settle_hold(hold_id, request.commit, now, log)?;
                if let Some(entry) = log.last_mut() {
                    request.reason.as_str().clone_into(&mut entry.reason);
                }
                Ok(SettleOutcome {
                    settlement,
                    balance: credits.balance(now),
                })
            },
        )
    }

    async fn history(
        &self,
        account: &AccountId,
        query: &HistoryQuery,
        now: Timestamp,
    ) -> Result<HistoryPage, StoreError> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or_default();
        let oldest = now_ms.saturating_sub(self.retention().max_age_millis());
        Ok(self.store.read(account, |record| {
            let mut older = record.history.iter().rev().filter(|(id, _)| {
                query.before.is_none_or(|before| *id < before) && id.millis >= oldest
            });
            let entries: Vec<_> = older
                .by_ref()
                .take(query.page_size as usize)
                .cloned()
                .collect();
            let next = if older.next().is_some() {
                entries.last().map(|(id, _)| *id)
            } else {
                None
            };
            HistoryPage { entries, next }
        }))
    }
}

pub(crate) fn caller<'a>(
    idempotency: Option<&'a meter_core::Idempotency>,
    reason: &'a str,
) -> Caller<'a> {
    Caller {
        key: idempotency.map_or("", |i| i.key.as_str()),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use crate::MemoryStore;

    meter_testkit::credit_ledger_contract!(window, retention => async move { (MemoryStore::new(window).with_history_retention(retention).credits(), ()) });

    meter_testkit::usage_store_contract!(async move {
        let window = meter_core::IdempotencyWindow::new(std::time::Duration::from_secs(3600))
            .expect("valid window");
        let store = MemoryStore::new(window);
        (store.usage(), store.accounts(), ())
    });

    meter_testkit::stats_store_contract!(window => async move {
        let store = MemoryStore::new(window);
        (store.stats(), store.accounts(), ())
    });

    meter_testkit::account_store_contract!(window => async move {
        let store = MemoryStore::new(window);
        (store.credits(), store.accounts(), ())
    });
}
