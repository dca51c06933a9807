//! The credits use cases: what a call means, before any store is involved.

use std::{sync::Arc, time::Duration};

use crate::{
    AccountId, Charge, Clock, CreditBalance, CreditLedger, DeductCredits, DeductOutcome,
    GrantCredits, GrantOutcome, HistoryPage, HistoryQuery, Idempotency, IdempotencyKey,
    InvalidArgument, MAX_CREDITS, MeterError, PlanCatalog, Reason, Recorded, ReserveCredits,
    ReserveOutcome, ResetCredits, ResetTo, SettleHold, SettleOutcome, StoreError,
};

/// Most feature names an unknown-feature error lists.
const LISTED_FEATURES: usize = 10;

/// The credits use cases: resolves plans, reads the clock, and calls the ledger.
#[derive(Debug)]
pub struct Credits<L, C> {
    ledger: L,
    catalog: Arc<PlanCatalog>,
    clock: C,
    max_hold_ttl: Duration,
}

impl<L: CreditLedger, C: Clock> Credits<L, C> {
    /// Credits over `ledger`, with plans from `catalog` and time from `clock`.
    pub fn new(ledger: L, catalog: Arc<PlanCatalog>, clock: C) -> Self {
        Self {
            ledger,
            catalog,
            clock,
            max_hold_ttl: Self::DEFAULT_MAX_HOLD_TTL,
        }
    }

    /// The longest hold `Reserve` accepts unless configured: one day.
    pub const DEFAULT_MAX_HOLD_TTL: Duration = Duration::from_secs(24 * 3600);

    /// The same, accepting holds of up to `max_hold_ttl`.
    #[must_use]
    pub fn with_max_hold_ttl(mut self, max_hold_ttl: Duration) -> Self {
        self.max_hold_ttl = max_hold_ttl;
        self
    }

    /// The time now, by the service's clock.
    pub fn now(&self) -> crate::Timestamp {
        self.clock.now()
    }

    /// The account's balance with what fell due applied; zero for an unknown account.
    pub async fn balance(&self, account: &AccountId) -> Result<CreditBalance, MeterError> {
        Ok(self.ledger.balance(account, self.clock.now()).await?)
    }

    /// The deduct `charge` asks for, priced from the catalog's price list.
    pub fn price(
        &self,
        account: AccountId,
        charge: Charge,
        reason: Reason,
        key: Option<IdempotencyKey>,
    ) -> Result<DeductCredits, InvalidArgument> {
        match charge {
            Charge::Credits(amount) => DeductCredits::new(account, amount, reason, key),
            Charge::Feature { feature, quantity } => {
                let Some(price) = self.catalog.price(&feature) else {
                    let known: Vec<&str> = self
                        .catalog
                        .prices()
                        .keys()
                        .take(LISTED_FEATURES)
                        .map(String::as_str)
                        .collect();
                    return Err(InvalidArgument::new(
                        "feature",
                        format!(
                            "{feature:?} is not in the price list (it has: {})",
                            if known.is_empty() {
                                "nothing".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                };
                DeductCredits::priced(account, &feature, quantity, price, reason, key)
            }
        }
    }

    /// Takes credits if enough remain.
    pub async fn deduct(
        &self,
        request: &DeductCredits,
    ) -> Result<Recorded<DeductOutcome>, MeterError> {
        self.ledger.deduct(request, self.clock.now()).await
    }

    /// Adds a grant.
    pub async fn grant(
        &self,
        request: &GrantCredits,
    ) -> Result<Recorded<GrantOutcome>, MeterError> {
        self.ledger.grant(request, self.clock.now()).await
    }

    /// Holds what `charge` would take for `ttl`, if enough remains.
    pub async fn reserve(
        &self,
        charge: DeductCredits,
        ttl: Duration,
    ) -> Result<Recorded<ReserveOutcome>, MeterError> {
        if ttl.as_millis() == 0 || ttl > self.max_hold_ttl {
            return Err(InvalidArgument::new(
                "ttl",
                format!(
                    "is {ttl:?}; it must be at least 1ms and at most {:?} (meterd's --max-hold-ttl)",
                    self.max_hold_ttl
                ),
            )
            .into());
        }
        let request = ReserveCredits::new(charge, ttl);
        self.ledger.reserve(&request, self.clock.now()).await
    }

    /// Commits or releases a hold.
    pub async fn settle_hold(
        &self,
        request: &SettleHold,
    ) -> Result<Recorded<SettleOutcome>, MeterError> {
        self.ledger.settle_hold(request, self.clock.now()).await
    }

    /// A page of the account's history, newest first.
    pub async fn history(
        &self,
        account: &AccountId,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        self.ledger.history(account, query, self.clock.now()).await
    }

    /// Starts a new period of the account's plan, with `total` credits
    /// instead of the plan's when given.
    pub async fn reset(
        &self,
        account: AccountId,
        total: Option<i64>,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        if let Some(total) = total
            && !(0..=MAX_CREDITS).contains(&total)
        {
            return Err(InvalidArgument::new(
                "total",
                format!("is {total}; it must be from 0 to {MAX_CREDITS}"),
            )
            .into());
        }
        let requested = total.map_or_else(|| "plan".to_owned(), |t| t.to_string());
        let request = ResetCredits {
            account,
            to: ResetTo::Plan {
                total,
                catalog: Arc::clone(&self.catalog),
            },
            idempotency: Idempotency::new(key, &["reset", &requested]),
        };
        self.ledger.reset(&request, self.clock.now()).await
    }
}
