//! [`CreditLedger`] on the embedded store.

use meter_core::{
    AccountId, CreditBalance, CreditLedger, DeductCredits, DeductOutcome, GrantCredits, MeterError,
    Recorded, ResetCredits, StoreError, Timestamp,
};

use crate::MemoryStore;

/// The idempotency context of credits calls (Redis keeps them under `idem:credits:`).
const CONTEXT: &str = "credits";

/// The credit ledger on the embedded store.
#[derive(Clone, Debug)]
pub struct MemoryCreditLedger {
    store: MemoryStore,
}

impl MemoryCreditLedger {
    pub(crate) fn new(store: MemoryStore) -> Self {
        Self { store }
    }
}

impl CreditLedger for MemoryCreditLedger {
    async fn balance(&self, account: &AccountId) -> Result<Option<CreditBalance>, StoreError> {
        Ok(self.store.read(account, |record| record.credits))
    }

    async fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> Result<Recorded<DeductOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        self.store
            .mutate(&request.account, CONTEXT, idempotency, now, |record| {
                // A due reset is stored even when the deduct is declined, as on Redis.
                let due = record.credits.map(|b| b.with_due_reset(now));
                let mut balance = due.unwrap_or_default();
                let applied = balance.try_deduct(request.amount, now);
                record.credits = due.map(|_| balance);
                Ok(DeductOutcome { applied, balance })
            })
    }

    async fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        self.store
            .mutate(&request.account, CONTEXT, idempotency, now, |record| {
                let mut balance = record
                    .credits
                    .map(|b| b.with_due_reset(now))
                    .unwrap_or_default();
                balance.grant(request.amount, request.trial, now)?;
                record.credits = Some(balance);
                Ok(balance)
            })
    }

    async fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        self.store
            .mutate(&request.account, CONTEXT, idempotency, now, |record| {
                let balance = CreditBalance::fresh_period(request.total, request.period, now);
                record.credits = Some(balance);
                Ok(balance)
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::MemoryStore;

    meter_testkit::credit_ledger_contract!(window => async move { (MemoryStore::new(window).credits(), ()) });
}
