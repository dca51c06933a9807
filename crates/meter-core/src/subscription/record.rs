//! An account's subscription and the rules that change it: which events
//! apply, what a plan change does to the credit allowance, and the lazy fall
//! back to the default plan when a subscription ends.
//!
//! These are the reference semantics: the embedded store applies them
//! directly, the Redis scripts implement them in Lua
//! (`meter-redis/src/lua/account/subscription.lua`), and the contract suite
//! holds both to them.

use std::{fmt, str::FromStr};

use crate::{
    BillingInterval, Caller, CreditAccount, CreditPeriod, HistoryEntry, MeterError, Plan,
    PlanCatalog, PlannedAllowance, Timestamp,
};

/// The state of a subscription: the billing provider's (Stripe's) set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    /// Paid and running: the plan's allowance.
    Active,
    /// In a free trial: the plan's allowance.
    Trialing,
    /// A renewal payment failed and is being retried: the plan's allowance
    /// stays meanwhile.
    PastDue,
    /// Ended: the default plan's allowance.
    Canceled,
    /// Retries gave up with the invoice open: the default plan's allowance.
    Unpaid,
    /// The first payment has not succeeded yet: the default plan's allowance.
    Incomplete,
    /// The first payment never succeeded: the default plan's allowance.
    IncompleteExpired,
    /// Paused (a trial ended without a payment method): the default plan's allowance.
    Paused,
}

impl SubscriptionStatus {
    /// Where the status sits in a subscription's life, for ordering two
    /// events of the same second (Stripe's times are whole seconds): a later
    /// stage wins, so `incomplete` never follows `active` of the same
    /// second. Canceled and expired are last.
    pub fn stage(self) -> u8 {
        match self {
            Self::Incomplete => 0,
            Self::Trialing => 1,
            Self::Active => 2,
            Self::PastDue => 3,
            Self::Unpaid | Self::Paused => 4,
            Self::Canceled | Self::IncompleteExpired => 5,
        }
    }

    /// Every status, in the order the API numbers them.
    pub const ALL: [Self; 8] = [
        Self::Active,
        Self::Trialing,
        Self::PastDue,
        Self::Canceled,
        Self::Unpaid,
        Self::Incomplete,
        Self::IncompleteExpired,
        Self::Paused,
    ];

    /// The stored name, as Stripe writes it (`past_due`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
        }
    }

    /// Whether an account in this status gets its plan's allowance (else the
    /// default plan's).
    pub fn grants_plan(self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a subscription status"))
    }
}

impl BillingInterval {
    /// The stored name: `month` or `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

impl FromStr for BillingInterval {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(format!("{other:?} is not a billing interval")),
        }
    }
}

/// An account's subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The plan's name.
    pub plan: String,
    /// Where the subscription stands.
    pub status: SubscriptionStatus,
    /// How often it is billed.
    pub interval: BillingInterval,
    /// What each billing interval costs, in micro-units.
    pub amount_micros: i64,
    /// When the account moved to this plan.
    pub purchase_time: Option<Timestamp>,
    /// When the current billing period started.
    pub period_start: Option<Timestamp>,
    /// When the current billing period ends (and renews, or ends the plan).
    pub renewal_time: Option<Timestamp>,
    /// Whether the plan ends at `renewal_time` instead of renewing.
    pub cancel_at_period_end: bool,
    /// When the subscription was canceled.
    pub canceled_time: Option<Timestamp>,
    /// The billing provider's customer id (Stripe `cus_…`).
    pub customer_id: String,
    /// The billing provider's subscription id (Stripe `sub_…`).
    pub subscription_id: String,
    /// The event time of the last change applied; older events are ignored.
    pub updated_at: Option<Timestamp>,
}

impl Subscription {
    /// The subscription of an account that has none: the default plan, active.
    pub fn default_for(plan: &Plan) -> Self {
        Self {
            plan: plan.name.clone(),
            status: SubscriptionStatus::Active,
            interval: plan.billing_interval,
            amount_micros: plan.price_micros,
            purchase_time: None,
            period_start: None,
            renewal_time: None,
            cancel_at_period_end: false,
            canceled_time: None,
            customer_id: String::new(),
            subscription_id: String::new(),
            updated_at: None,
        }
    }

    /// The plan whose allowance the account gets: its plan while the status
    /// grants it, else `default`.
    pub fn allowance_plan<'a>(&'a self, default: &'a str) -> &'a str {
        if self.status.grants_plan() {
            &self.plan
        } else {
            default
        }
    }

    /// Whether the account pays for a plan now: active or trialing, not on `default`.
    pub fn is_paying(&self, default: &str) -> bool {
        matches!(
            self.status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        ) && self.plan != default
    }

    /// The subscription as of `now`: one that was to end at its period's end
    /// and reached it is canceled, on `default`, from `renewal_time`.
    #[must_use]
    pub fn settled(self, now: Timestamp, default: &Plan) -> Self {
        match self.renewal_time {
            Some(end) if self.cancel_at_period_end && end <= now => self.canceled(end, default),
            _ => self,
        }
    }

    /// This subscription canceled at `at`: the default plan, status
    /// canceled, the billing ids and last event time kept; one canceled
    /// before keeps its times.
    #[must_use]
    fn canceled(self, at: Timestamp, default: &Plan) -> Self {
        let before = (self.status == SubscriptionStatus::Canceled)
            .then_some(self.canceled_time)
            .flatten();
        Self {
            status: SubscriptionStatus::Canceled,
            canceled_time: Some(before.unwrap_or(at)),
            purchase_time: Some(before.unwrap_or(at)),
            // The last event applied is still the last: one older than the
            // end (a resume sent before it, delivered late) still applies.
            updated_at: self.updated_at,
            customer_id: self.customer_id,
            subscription_id: self.subscription_id,
            ..Self::default_for(default)
        }
    }
}

/// A subscription as a billing event describes it (`UpdateSubscription`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    /// The plan, which the catalog has.
    pub plan: String,
    /// Its status.
    pub status: SubscriptionStatus,
    /// How often it is billed.
    pub interval: BillingInterval,
    /// What each interval costs, in micro-units.
    pub amount_micros: i64,
    /// The billing period's start.
    pub period_start: Option<Timestamp>,
    /// The billing period's end.
    pub period_end: Option<Timestamp>,
    /// Whether it ends at the period's end.
    pub cancel_at_period_end: bool,
    /// The billing provider's customer id; empty keeps the stored one.
    pub customer_id: String,
    /// The billing provider's subscription id; empty keeps the stored one.
    pub subscription_id: String,
}

/// What a subscription call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// The subscription is now as described.
    Update(SubscriptionUpdate),
    /// The plan ends: at the end of the billing period (now, without one),
    /// or now.
    Cancel {
        /// At the end of the billing period rather than now.
        at_period_end: bool,
        /// The billing subscription canceled; empty for whichever is stored.
        subscription_id: String,
    },
}

impl SubscriptionChange {
    /// The status the change leaves the subscription in.
    fn status(&self) -> SubscriptionStatus {
        match self {
            Self::Update(u) => u.status,
            Self::Cancel { .. } => SubscriptionStatus::Canceled,
        }
    }

    /// The billing subscription the event is about; empty when unsaid.
    fn subscription_id(&self) -> &str {
        match self {
            Self::Update(u) => &u.subscription_id,
            Self::Cancel {
                subscription_id, ..
            } => subscription_id,
        }
    }
}

/// A plan's allowance: credits each period, and the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanAllowance {
    /// Credits of each period.
    pub credits: i64,
    /// How long each period is.
    pub period: CreditPeriod,
}

impl From<&Plan> for PlanAllowance {
    fn from(plan: &Plan) -> Self {
        Self {
            credits: plan.credits,
            period: plan.credit_period,
        }
    }
}

/// What a subscription change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeOutcome {
    /// The subscription after the call.
    pub subscription: Subscription,
    /// False when the event was older than the stored subscription and was ignored.
    pub applied: bool,
    /// When the allowance resets next, after the call.
    pub next_credit_reset: Option<Timestamp>,
}

/// The rules of a subscription change, applied to an account's stored
/// subscription and credits, with the plans of `catalog`.
#[derive(Clone, Copy, Debug)]
pub struct ChangeRules<'a> {
    /// The change.
    pub change: &'a SubscriptionChange,
    /// The event's time.
    pub event_time: Timestamp,
    /// The plan catalog.
    pub catalog: &'a PlanCatalog,
}

impl ChangeRules<'_> {
    /// Applies the change at `now`. Ignored (`Ok((stored, false))`): an
    /// event older than the stored one, or of the same second and an
    /// earlier stage ([`SubscriptionStatus::stage`]) of the same billing
    /// subscription; an event about another billing subscription than the
    /// one whose plan the account has, unless it grants a plan itself; a
    /// cancellation of a subscription to the default plan (or of none). Otherwise the subscription is replaced (period and
    /// billing ids left out keep the stored ones; a period older than the
    /// stored one is not taken), and the credits follow:
    /// - a new allowance plan (by plan or status) starts that plan's
    ///   allowance afresh, its periods counted from the billing period's start;
    /// - a later billing period of the same plan (a renewal) keeps the
    ///   running allowance and its schedule when its credit period began
    ///   at or after the billing period's start (the lazy reset at the
    ///   boundary: used credits stay used), or when the billing period
    ///   starts a moment ahead; else it starts the allowance afresh;
    /// - a plan that ends at its period's end has the default plan's
    ///   allowance planned for then.
    ///
    /// A cancellation at period end of a billing period that already ended
    /// (its renewal not recorded) is [`MeterError::FailedPrecondition`].
    pub fn apply(
        &self,
        stored: Option<Subscription>,
        credits: &mut CreditAccount,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) -> Result<(Subscription, bool), MeterError> {
        let default = self.catalog.default_plan();
        let Some(stored) = stored else {
            if let SubscriptionChange::Cancel { .. } = self.change {
                return Ok((Subscription::default_for(default), false));
            }
            return self.applied(
                Subscription::default_for(default),
                credits,
                now,
                caller,
                log,
            );
        };
        self.applied(stored.settled(now, default), credits, now, caller, log)
    }

    fn applied(
        &self,
        current: Subscription,
        credits: &mut CreditAccount,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) -> Result<(Subscription, bool), MeterError> {
        let default = self.catalog.default_plan();
        let event = self.event_time;
        let about = self.change.subscription_id();
        let another = !about.is_empty()
            && !current.subscription_id.is_empty()
            && about != current.subscription_id;
        // Within one billing subscription, the same second goes by stage.
        let older = current.updated_at.is_some_and(|t| {
            t > event
                || (t == event && !another && self.change.status().stage() < current.status.stage())
        });
        let other = another
            && current.allowance_plan(&default.name) != default.name
            && !self.change.status().grants_plan();
        let nothing_to_cancel = matches!(self.change, SubscriptionChange::Cancel { .. })
            && current.plan == default.name;
        if older || other || nothing_to_cancel {
            return Ok((current, false));
        }
        credits.settle(now, log);
        let (next, anchor, new_period) = match self.change {
            SubscriptionChange::Update(u) => {
                let stale = matches!(
                    (u.period_start, current.period_start),
                    (Some(given), Some(stored)) if given < stored
                );
                let period_start = if stale || u.period_start.is_none() {
                    current.period_start
                } else {
                    u.period_start
                };
                let renewal_time = if stale {
                    current.renewal_time
                } else if u.period_end.is_some() {
                    u.period_end
                } else if period_start == current.period_start {
                    current.renewal_time
                } else {
                    None
                };
                let purchase_time = if u.plan == current.plan {
                    current.purchase_time.or(period_start).or(Some(event))
                } else {
                    period_start.or(Some(event))
                };
                let keep = |given: &str, stored: &str| {
                    if given.is_empty() { stored } else { given }.to_owned()
                };
                let next = Subscription {
                    plan: u.plan.clone(),
                    status: u.status,
                    interval: u.interval,
                    amount_micros: u.amount_micros,
                    purchase_time,
                    period_start,
                    renewal_time,
                    cancel_at_period_end: u.cancel_at_period_end,
                    canceled_time: (u.status == SubscriptionStatus::Canceled)
                        .then(|| current.canceled_time.unwrap_or(event)),
                    customer_id: keep(&u.customer_id, &current.customer_id),
                    subscription_id: keep(&u.subscription_id, &current.subscription_id),
                    updated_at: Some(event),
                };
                let new_period = period_start.is_some() && period_start != current.period_start;
                (next, period_start.unwrap_or(now), new_period)
            }
            SubscriptionChange::Cancel {
                at_period_end: true,
                ..
            } if current.renewal_time.is_some() => {
                if let Some(end) = current.renewal_time.filter(|end| *end <= now) {
                    return Err(MeterError::FailedPrecondition(format!(
                        "the billing period ended at {end} and no renewal was recorded; \
                         record the renewal (UpdateSubscription) first, or cancel now"
                    )));
                }
                let next = Subscription {
                    cancel_at_period_end: true,
                    updated_at: Some(event),
                    ..current.clone()
                };
                (next, now, false)
            }
            SubscriptionChange::Cancel { .. } => {
                let mut next = current.clone().canceled(event.min(now), default);
                next.updated_at = Some(event);
                (next, now, false)
            }
        };
        let was = current.allowance_plan(&default.name);
        let will = next.allowance_plan(&default.name);
        let planned = match next.renewal_time {
            Some(at) if next.cancel_at_period_end && will != default.name => {
                Some(PlannedAllowance {
                    at,
                    total: default.credits,
                    period: default.credit_period,
                })
            }
            _ => None,
        };
        let plan = self.catalog.get(will).unwrap_or(default);
        let start = if will == default.name {
            PlannedAllowance {
                at: now,
                total: plan.credits,
                period: plan.credit_period,
            }
        } else {
            PlannedAllowance {
                at: anchor,
                total: plan.credits,
                period: plan.credit_period,
            }
        };
        // When the running credit period began (its anchor, if that is
        // still ahead: a clock that went back).
        let running_since = credits.allowance.schedule.map(|s| {
            s.period
                .period_containing(s.anchor, now)
                .map_or(s.anchor, |(start, _)| start)
        });
        if was != will || running_since.is_none() {
            credits.start_allowance(start, planned, now, caller, log);
        } else if new_period && will != default.name {
            // A renewal: the allowance already reset at the boundary (or
            // will, when the period starts a moment ahead), on a schedule
            // that keeps the anchor day through short months.
            let period_start = next.period_start.unwrap_or(now);
            if running_since.is_some_and(|since| since >= period_start) || period_start > now {
                credits.renew_allowance(start.total, planned, now, caller, log);
            } else {
                credits.start_allowance(start, planned, now, caller, log);
            }
        } else {
            credits.planned = planned;
        }
        // A fall back planned for a time already past happens now.
        credits.settle(now, log);
        Ok((next, true))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CATALOG: &str = r#"
[plans.free]
credits = 100
billing_interval = "month"
price_micros = 0

[plans.yearly]
credits = 1000
credit_period = "month"
billing_interval = "year"
price_micros = 100000000
"#;

    fn yearly(start: Timestamp, end: Timestamp) -> SubscriptionChange {
        SubscriptionChange::Update(SubscriptionUpdate {
            plan: "yearly".into(),
            status: SubscriptionStatus::Active,
            interval: BillingInterval::Year,
            amount_micros: 100_000_000,
            period_start: Some(start),
            period_end: Some(end),
            cancel_at_period_end: false,
            customer_id: String::new(),
            subscription_id: "sub_1".into(),
        })
    }

    proptest! {
        /// A yearly plan's monthly credits, through the credits path: after
        /// the plan starts at any instant, at every later time the
        /// allowance's period is the calendar month (anchor day kept,
        /// clamped to short months) of the period module; spending in one
        /// period never reaches the next; a renewal webhook at any delay
        /// after the year's end keeps what was used since; and a plan
        /// canceled at period end falls back to free exactly at its end.
        #[test]
        fn a_yearly_plan_resets_monthly_by_the_period_module(
            start_ms in 946_684_800_000i64..4_102_444_800_000,
            steps in proptest::collection::vec((1i64..40 * 86_400_000, 0i64..50), 1..30),
            renewal_delay in 0i64..3 * 86_400_000,
        ) {
            let catalog = PlanCatalog::from_toml("test", CATALOG).expect("catalog");
            let start = Timestamp::from_millis(start_ms).expect("in range");
            let end = CreditPeriod::Year.boundary(start, 1).expect("in range");
            let mut credits = CreditAccount::default();
            let mut log = Vec::new();
            let change = yearly(start, end);
            let rules = ChangeRules { change: &change, event_time: start, catalog: &catalog };
            let (subscription, applied) = rules
                .apply(None, &mut credits, start, Caller::default(), &mut log)
                .expect("applies");
            prop_assert!(applied);
            let mut now = start;
            let mut used = 0;
            for (step, spend) in steps {
                let next = Timestamp::from_millis(now.as_millis() + step).expect("in range");
                if next >= end {
                    break;
                }
                let (period_start, period_end) = CreditPeriod::Month
                    .period_containing(start, next)
                    .expect("in range");
                if period_start > now {
                    used = 0;
                }
                now = next;
                credits.settle(now, &mut log);
                prop_assert_eq!(credits.allowance.period_end(), Some(period_end));
                prop_assert_eq!(credits.allowance.used, used);
                if credits.deduct(spend, now, Caller::default(), &mut log) {
                    used += spend.min(1000);
                }
            }
            // The renewal webhook, some time after the year's end.
            let late = Timestamp::from_millis(end.as_millis() + renewal_delay).expect("in range");
            credits.settle(late, &mut log);
            let spent = i64::from(credits.deduct(7, late, Caller::default(), &mut log)) * 7;
            let next_end = CreditPeriod::Year.boundary(start, 2).expect("in range");
            let renewal = yearly(end, next_end);
            let rules = ChangeRules { change: &renewal, event_time: late, catalog: &catalog };
            let (renewed, applied) = rules
                .apply(Some(subscription), &mut credits, late, Caller::default(), &mut log)
                .expect("renews");
            prop_assert!(applied);
            prop_assert_eq!(credits.allowance.used, spent);
            // The schedule keeps the first anchor (its day survives short months).
            prop_assert_eq!(
                credits.allowance.period_end(),
                CreditPeriod::Month.period_containing(start, late).map(|(_, e)| e)
            );
            // Canceled at the period's end: free from exactly then.
            let cancel = SubscriptionChange::Cancel { at_period_end: true, subscription_id: String::new() };
            let rules = ChangeRules { change: &cancel, event_time: late, catalog: &catalog };
            rules
                .apply(Some(renewed), &mut credits, late, Caller::default(), &mut log)
                .expect("cancels");
            let after = Timestamp::from_millis(next_end.as_millis() + 1).expect("in range");
            credits.settle(after, &mut log);
            prop_assert_eq!(credits.allowance.total, 100);
            prop_assert_eq!(
                credits.allowance.schedule.map(|s| s.anchor),
                Some(next_end)
            );
        }
    }
}
