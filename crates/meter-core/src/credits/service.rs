//! The credits use cases: what a call means, before any store is involved.

use std::sync::Arc;

use crate::{
    AccountId, Charge, Clock, CreditBalance, CreditLedger, DeductCredits, DeductOutcome,
    GrantCredits, Idempotency, IdempotencyKey, InvalidArgument, MAX_CREDITS, MeterError,
    PlanCatalog, Reason, Recorded, ResetCredits,
};

/// Most feature names an unknown-feature error lists.
const LISTED_FEATURES: usize = 10;

/// The credits use cases: resolves plans, reads the clock, and calls the ledger.
#[derive(Debug)]
pub struct Credits<L, C> {
    ledger: L,
    catalog: Arc<PlanCatalog>,
    clock: C,
}

impl<L: CreditLedger, C: Clock> Credits<L, C> {
    /// Credits over `ledger`, with plans from `catalog` and time from `clock`.
    pub fn new(ledger: L, catalog: Arc<PlanCatalog>, clock: C) -> Self {
        Self {
            ledger,
            catalog,
            clock,
        }
    }

    /// The account's balance with any due reset applied; zero for an unknown account.
    pub async fn balance(&self, account: &AccountId) -> Result<CreditBalance, MeterError> {
        let stored = self.ledger.balance(account).await?;
        Ok(stored.unwrap_or_default().with_due_reset(self.clock.now()))
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

    /// Adds credits.
    pub async fn grant(
        &self,
        request: &GrantCredits,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        self.ledger.grant(request, self.clock.now()).await
    }

    /// Starts a new period with `total` credits, or the plan's when `None`.
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
        // Until SubscriptionService records plans, every account is on the default plan.
        let plan = self.catalog.default_plan();
        let requested = total.map_or_else(|| "plan".to_owned(), |t| t.to_string());
        let request = ResetCredits {
            account,
            total: total.unwrap_or(plan.credits),
            period: plan.credit_period,
            idempotency: Idempotency::new(key, &["reset", &requested]),
        };
        self.ledger.reset(&request, self.clock.now()).await
    }
}
