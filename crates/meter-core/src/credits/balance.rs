//! The credit balance and the rules that change it.

use crate::{CreditPeriod, InvalidArgument, Timestamp};

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
