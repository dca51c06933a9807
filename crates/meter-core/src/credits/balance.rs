//! What an account's credits look like: the period's allowance and the live
//! grants, and the totals callers read off them.

use std::{fmt, str::FromStr};

use crate::{CreditPeriod, InvalidArgument, Timestamp};

/// The largest balance any account may hold: 2^53 - 1.
///
/// Redis Lua numbers are doubles, exact only up to 2^53, and the scripts
/// compute with them; every total stays within this bound so every result is exact.
pub const MAX_CREDITS: i64 = (1 << 53) - 1;

/// When an account's allowance resets: the schedule's anchor, its period, and the next reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSchedule {
    /// The instant periods are counted from; its day of month is kept.
    pub anchor: Timestamp,
    /// How long each period is.
    pub period: CreditPeriod,
    /// When the current period ends.
    pub next_reset: Timestamp,
}

/// An allowance that replaces the current one at a set time (a plan that
/// falls back to the default plan when its subscription ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedAllowance {
    /// When it starts; its periods are counted from here.
    pub at: Timestamp,
    /// Credits of each period.
    pub total: i64,
    /// How long each period is.
    pub period: CreditPeriod,
}

/// The credits of the current period: they reset, lazily, when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    /// Credits of the period, before use.
    pub total: i64,
    /// Credits of the period taken, held ones included.
    pub used: i64,
    /// The reset schedule; `None` for accounts that were only ever granted credits.
    pub schedule: Option<ResetSchedule>,
}

impl Allowance {
    /// Credits of the period still available: `max(0, total - used)`.
    pub fn remaining(&self) -> i64 {
        self.total.saturating_sub(self.used).max(0)
    }

    /// The end of the period now running, which names it; `None` without a schedule.
    pub fn period_end(&self) -> Option<Timestamp> {
        self.schedule.map(|s| s.next_reset)
    }
}

/// What a grant is for. Kinds never change: paid credits stay paid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GrantKind {
    /// Bought: credit packs, top-ups.
    #[default]
    Paid,
    /// A free trial.
    Trial,
    /// A promotion or coupon.
    Promotion,
    /// Compensation for a fault, refunds.
    Compensation,
}

impl GrantKind {
    /// Every kind, in the order the API numbers them.
    pub const ALL: [Self; 4] = [Self::Paid, Self::Trial, Self::Promotion, Self::Compensation];

    /// The stored name: `paid`, `trial`, `promotion` or `compensation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Trial => "trial",
            Self::Promotion => "promotion",
            Self::Compensation => "compensation",
        }
    }
}

impl fmt::Display for GrantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantKind {
    type Err = InvalidArgument;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                InvalidArgument::new(
                    "kind",
                    format!("{text:?} is not a grant kind (paid, trial, promotion, compensation)"),
                )
            })
    }
}

/// One grant: a bucket of credits that never renews and may expire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The grant's id: the idempotency key it was made with, else `g<n>`.
    pub id: String,
    /// What it is for.
    pub kind: GrantKind,
    /// Credits granted.
    pub amount: i64,
    /// Credits of it still available.
    pub left: i64,
    /// Credits of it held by open holds (neither available nor gone).
    pub held: i64,
    /// When it was made.
    pub created: Timestamp,
    /// When what is left of it is gone; `None` never.
    pub expires: Option<Timestamp>,
}

impl Grant {
    /// Whether it has expired by `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    /// The deduct order: earliest expiry first, grants without one last,
    /// ties oldest first (then by id, so the order is total).
    pub fn spend_order(&self) -> (bool, Option<Timestamp>, Timestamp, &str) {
        (self.expires.is_none(), self.expires, self.created, &self.id)
    }
}

/// An account's credits as callers see them: the allowance and the live
/// grants (neither expired nor used up), in deduct order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreditBalance {
    /// The current period's credits.
    pub allowance: Allowance,
    /// Live grants, in the order deducts draw on them.
    pub grants: Vec<Grant>,
    /// Credits held by open holds.
    pub held: i64,
    /// When the balance last changed; `None` for an unknown account.
    pub last_update: Option<Timestamp>,
}

impl CreditBalance {
    /// Credits of the allowance and the live grants.
    pub fn total(&self) -> i64 {
        self.allowance.total + self.grants.iter().map(|g| g.amount).sum::<i64>()
    }

    /// Credits still available, held ones excluded.
    pub fn remaining(&self) -> i64 {
        self.allowance.remaining() + self.grants.iter().map(|g| g.left).sum::<i64>()
    }

    /// Credits of `total` taken: used for good or held.
    pub fn used(&self) -> i64 {
        (self.total() - self.remaining()).max(0)
    }

    /// Whether trial credits remain.
    pub fn trial(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.kind == GrantKind::Trial && g.left > 0)
    }

    /// The next reset of the allowance, if it has a schedule.
    pub fn reset_time(&self) -> Option<Timestamp> {
        self.allowance.period_end()
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
