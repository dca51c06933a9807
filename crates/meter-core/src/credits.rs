//! Credit rules: the balance, the commands that change it, and the service
//! that checks requests and hands them to a [`CreditLedger`].
//!
//! The rules here are the reference semantics. The in-memory store applies
//! them directly; the Redis scripts implement the same rules in Lua, and the
//! store contract suite (meter-testkit) holds both to them.

use std::sync::Arc;

use crate::{
    AccountId, Clock, CreditError, CreditLedger, CreditPeriod, IdempotencyKey, InvalidArgument,
    PlanCatalog, Reason, Timestamp,
};

/// The largest balance any account may hold: 2^53 - 1.
///
/// Redis Lua numbers are doubles, exact only up to 2^53, and the scripts
/// compute with them; every total stays within this bound so every result is exact.
pub const MAX_CREDITS: i64 = (1 << 53) - 1;

/// When an account's credits reset: the schedule's anchor, its period, and the next reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSchedule {
    /// The instant periods are counted from; its day of month is kept.
    pub anchor: Timestamp,
    /// How long each period is.
    pub period: CreditPeriod,
    /// When the current period ends.
    pub next_reset: Timestamp,
}

/// An account's credits for its current period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreditBalance {
    /// Credits available in the period, before use.
    pub total: i64,
    /// Credits used in the period.
    pub used: i64,
    /// The reset schedule; `None` for accounts that were only ever granted credits.
    pub schedule: Option<ResetSchedule>,
    /// When the balance last changed; `None` for an unknown account.
    pub last_update: Option<Timestamp>,
    /// Whether the credits are trial credits.
    pub trial: bool,
}

impl CreditBalance {
    /// Credits still available: `max(0, total - used)`.
    pub fn remaining(&self) -> i64 {
        self.total.saturating_sub(self.used).max(0)
    }

    /// The balance with any reset that fell due by `now` applied: `used = 0`,
    /// the next reset moved past `now` by whole periods, and `last_update`
    /// set to the start of the period now running.
    #[must_use]
    pub fn with_due_reset(mut self, now: Timestamp) -> Self {
        if let Some(schedule) = &mut self.schedule
            && now >= schedule.next_reset
            && let Some((start, end)) = schedule.period.period_containing(schedule.anchor, now)
        {
            self.used = 0;
            schedule.next_reset = end;
            self.last_update = Some(start);
        }
        self
    }

    /// Takes `amount` if at least that much remains; `false` (and no change) otherwise.
    pub fn try_deduct(&mut self, amount: i64, now: Timestamp) -> bool {
        if self.remaining() < amount {
            return false;
        }
        self.used += amount;
        self.last_update = Some(now);
        true
    }

    /// Adds `amount` to the total, refusing a total above [`MAX_CREDITS`].
    pub fn grant(
        &mut self,
        amount: i64,
        trial: bool,
        now: Timestamp,
    ) -> Result<(), InvalidArgument> {
        let total = self
            .total
            .checked_add(amount)
            .filter(|t| *t <= MAX_CREDITS)
            .ok_or_else(|| total_overflow(self.total, amount))?;
        self.total = total;
        self.trial = trial;
        self.last_update = Some(now);
        Ok(())
    }

    /// A fresh period starting at `now` with `total` credits, none used.
    pub fn fresh_period(total: i64, period: CreditPeriod, now: Timestamp) -> Self {
        Self {
            total,
            used: 0,
            schedule: period.boundary(now, 1).map(|next_reset| ResetSchedule {
                anchor: now,
                period,
                next_reset,
            }),
            last_update: Some(now),
            trial: false,
        }
    }
}

/// The error for a grant that would take the total past [`MAX_CREDITS`].
pub fn total_overflow(total: i64, amount: i64) -> InvalidArgument {
    InvalidArgument::new(
        "amount",
        format!(
            "adding {amount} to the total of {total} would exceed the maximum balance of {MAX_CREDITS}"
        ),
    )
}

/// An idempotency key and the fingerprint of the request it was sent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's key.
    pub key: IdempotencyKey,
    /// Every argument of the request, so a reuse with other arguments is caught.
    pub fingerprint: String,
}

impl Idempotency {
    fn new(key: Option<IdempotencyKey>, parts: &[&str]) -> Option<Self> {
        key.map(|key| Self {
            key,
            fingerprint: parts.join("\u{1f}"),
        })
    }
}

/// A request to take credits from an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeductCredits {
    /// The account to charge.
    pub account: AccountId,
    /// Credits to take, 1..=MAX_CREDITS.
    pub amount: i64,
    /// Why, for logs.
    pub reason: Reason,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

impl DeductCredits {
    /// A checked deduct request.
    pub fn new(
        account: AccountId,
        amount: i64,
        reason: Reason,
        key: Option<IdempotencyKey>,
    ) -> Result<Self, InvalidArgument> {
        check_amount(amount)?;
        let idempotency = Idempotency::new(key, &["deduct", &amount.to_string(), reason.as_str()]);
        Ok(Self {
            account,
            amount,
            reason,
            idempotency,
        })
    }
}

/// A request to add credits to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantCredits {
    /// The account to credit.
    pub account: AccountId,
    /// Credits to add, 1..=MAX_CREDITS.
    pub amount: i64,
    /// Why, for logs.
    pub reason: Reason,
    /// Whether these are trial credits.
    pub trial: bool,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

impl GrantCredits {
    /// A checked grant request.
    pub fn new(
        account: AccountId,
        amount: i64,
        reason: Reason,
        trial: bool,
        key: Option<IdempotencyKey>,
    ) -> Result<Self, InvalidArgument> {
        check_amount(amount)?;
        let idempotency = Idempotency::new(
            key,
            &[
                "grant",
                &amount.to_string(),
                reason.as_str(),
                if trial { "trial" } else { "paid" },
            ],
        );
        Ok(Self {
            account,
            amount,
            reason,
            trial,
            idempotency,
        })
    }
}

/// A request to start a new credit period, with its total already resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetCredits {
    /// The account to reset.
    pub account: AccountId,
    /// The new total.
    pub total: i64,
    /// The period until the next reset.
    pub period: CreditPeriod,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// Whether a deduct was applied, and the balance after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeductOutcome {
    /// False when the account had fewer credits than asked; nothing changed then.
    pub applied: bool,
    /// The balance after the call.
    pub balance: CreditBalance,
}

/// A mutation's outcome, and whether it is the stored outcome of an earlier call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded<T> {
    /// The outcome.
    pub outcome: T,
    /// True when an earlier call with the same idempotency key produced it.
    pub replayed: bool,
}

fn check_amount(amount: i64) -> Result<(), InvalidArgument> {
    if (1..=MAX_CREDITS).contains(&amount) {
        Ok(())
    } else {
        Err(InvalidArgument::new(
            "amount",
            format!("is {amount}; it must be from 1 to {MAX_CREDITS}"),
        ))
    }
}

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

    /// The ledger underneath, e.g. for health checks.
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The account's balance with any due reset applied; zero for an unknown account.
    pub async fn balance(&self, account: &AccountId) -> Result<CreditBalance, CreditError> {
        let stored = self.ledger.balance(account).await?;
        Ok(stored.unwrap_or_default().with_due_reset(self.clock.now()))
    }

    /// Takes credits if enough remain.
    pub async fn deduct(
        &self,
        request: &DeductCredits,
    ) -> Result<Recorded<DeductOutcome>, CreditError> {
        self.ledger.deduct(request, self.clock.now()).await
    }

    /// Adds credits.
    pub async fn grant(
        &self,
        request: &GrantCredits,
    ) -> Result<Recorded<CreditBalance>, CreditError> {
        self.ledger.grant(request, self.clock.now()).await
    }

    /// Starts a new period with `total` credits, or the plan's when `None`.
    pub async fn reset(
        &self,
        account: AccountId,
        total: Option<i64>,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<CreditBalance>, CreditError> {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap_or_else(|| panic!("bad test timestamp {text}"))
    }

    #[test]
    fn a_due_reset_zeroes_used_and_advances_by_whole_periods() {
        let start = ts("2026-01-31T10:00:00.000Z");
        let mut balance = CreditBalance::fresh_period(100, CreditPeriod::Month, start);
        assert!(balance.try_deduct(60, start));
        let later = ts("2026-04-01T00:00:00.000Z");
        let after = balance.with_due_reset(later);
        assert_eq!(after.used, 0);
        assert_eq!(after.total, 100);
        assert_eq!(
            after.schedule.map(|s| s.next_reset),
            Some(ts("2026-04-30T10:00:00.000Z"))
        );
        assert_eq!(after.last_update, Some(ts("2026-03-31T10:00:00.000Z")));
        // Not yet due: nothing changes.
        assert_eq!(
            balance.with_due_reset(ts("2026-02-28T09:59:59.999Z")),
            balance
        );
    }

    #[test]
    fn deduct_refuses_more_than_remains_and_changes_nothing() {
        let now = ts("2026-05-01T00:00:00.000Z");
        let mut balance = CreditBalance::fresh_period(10, CreditPeriod::Month, now);
        let before = balance;
        assert!(!balance.try_deduct(11, now));
        assert_eq!(balance, before);
        assert!(balance.try_deduct(10, now));
        assert_eq!(balance.remaining(), 0);
    }

    #[test]
    fn grant_refuses_to_pass_the_maximum_balance() {
        let now = ts("2026-05-01T00:00:00.000Z");
        let mut balance = CreditBalance {
            total: MAX_CREDITS - 1,
            ..CreditBalance::default()
        };
        assert!(balance.grant(1, false, now).is_ok());
        let err = balance.grant(1, false, now).expect_err("overflow");
        assert_eq!(err.field, "amount");
        assert_eq!(balance.total, MAX_CREDITS);
    }

    #[test]
    fn amounts_outside_one_to_max_are_invalid_and_name_the_field() {
        let account = AccountId::parse("account_id", "u1").expect("valid");
        for amount in [0, -1, MAX_CREDITS + 1, i64::MAX, i64::MIN] {
            let err = DeductCredits::new(account.clone(), amount, Reason::default(), None)
                .expect_err("invalid");
            assert_eq!(err.field, "amount");
        }
    }

    #[test]
    fn fingerprints_differ_when_any_argument_differs() {
        let account = AccountId::parse("account_id", "u1").expect("valid");
        let key = || IdempotencyKey::parse_optional("idempotency_key", "k1").expect("valid");
        let reason = |r: &str| Reason::parse("reason", r).expect("valid");
        let print = |amount, r: &str| {
            DeductCredits::new(account.clone(), amount, reason(r), key())
                .expect("valid")
                .idempotency
                .map(|i| i.fingerprint)
        };
        assert_eq!(print(5, "a"), print(5, "a"));
        assert_ne!(print(5, "a"), print(6, "a"));
        assert_ne!(print(5, "a"), print(5, "b"));
        let grant =
            GrantCredits::new(account.clone(), 5, reason("a"), false, key()).expect("valid");
        assert_ne!(grant.idempotency.map(|i| i.fingerprint), print(5, "a"));
    }

    proptest! {
        #[test]
        fn any_sequence_of_deducts_never_goes_below_zero_and_sums_exactly(
            total in 0i64..10_000, amounts in proptest::collection::vec(1i64..500, 0..100),
        ) {
            let now = ts("2026-05-01T00:00:00.000Z");
            let mut balance = CreditBalance::fresh_period(total, CreditPeriod::Month, now);
            let mut taken = 0;
            for amount in amounts {
                if balance.try_deduct(amount, now) {
                    taken += amount;
                }
                prop_assert!(balance.used <= balance.total);
            }
            prop_assert_eq!(balance.used, taken);
            prop_assert_eq!(balance.remaining(), total - taken);
        }
    }
}
