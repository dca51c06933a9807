//! The requests that change credits, checked when they are made.

use std::{sync::Arc, time::Duration};

use crate::{
    AccountId, CreditBalance, CreditPeriod, GrantKind, Idempotency, IdempotencyKey,
    InvalidArgument, MAX_CREDITS, PlanCatalog, Subscription, Timestamp, plan::check_feature,
};

/// Longest accepted reason, in characters.
pub const MAX_REASON_CHARS: usize = 256;

/// Free text saying why credits changed, for logs: at most 256 characters
/// (not bytes: `é` counts once), no control characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reason(String);

impl Reason {
    /// Validates `raw` as the request field `field`; empty is allowed.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidArgument> {
        let chars = raw.chars().count();
        if chars > MAX_REASON_CHARS {
            return Err(InvalidArgument::new(
                field,
                format!("is {chars} characters long; at most {MAX_REASON_CHARS} are accepted"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidArgument::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The reason as sent.
    pub fn as_str(&self) -> &str {
        &self.0
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

impl DeductCredits {
    /// A checked deduct of `quantity` units of `feature` at `price` credits
    /// each. The price is part of the request's identity: a retry after the
    /// price list changed is a different request.
    pub fn priced(
        account: AccountId,
        feature: &str,
        quantity: i64,
        price: i64,
        reason: Reason,
        key: Option<IdempotencyKey>,
    ) -> Result<Self, InvalidArgument> {
        let amount = quantity
            .checked_mul(price)
            .filter(|amount| (1..=MAX_CREDITS).contains(amount))
            .ok_or_else(|| {
                InvalidArgument::new(
                    "quantity",
                    format!(
                        "{quantity} × {price} credits of {feature} is outside 1..={MAX_CREDITS}"
                    ),
                )
            })?;
        let idempotency = Idempotency::new(
            key,
            &[
                "deduct",
                &amount.to_string(),
                reason.as_str(),
                "feature",
                feature,
                &quantity.to_string(),
            ],
        );
        Ok(Self {
            account,
            amount,
            reason,
            idempotency,
        })
    }
}

/// What a deduct charges: credits given outright, or units of a feature of
/// the price list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    /// This many credits.
    Credits(i64),
    /// `quantity` units of `feature`, at its price.
    Feature {
        /// The feature's name in the price list.
        feature: String,
        /// Units, at least 1.
        quantity: i64,
    },
}

impl Charge {
    /// The charge a request's `amount`, `feature` and `quantity` ask for:
    /// exactly one of `amount` or `feature`; `quantity` (1 when 0) only with
    /// `feature`.
    pub fn parse(amount: i64, feature: &str, quantity: i64) -> Result<Self, InvalidArgument> {
        if feature.is_empty() {
            if quantity != 0 {
                return Err(InvalidArgument::new(
                    "quantity",
                    "is only read with feature; give feature, or leave quantity out",
                ));
            }
            check_amount(amount)?;
            return Ok(Self::Credits(amount));
        }
        if amount != 0 {
            return Err(InvalidArgument::new(
                "amount",
                "give amount or feature, not both",
            ));
        }
        check_feature(feature).map_err(|e| InvalidArgument::new("feature", e))?;
        let quantity = if quantity == 0 { 1 } else { quantity };
        if !(1..=MAX_CREDITS).contains(&quantity) {
            return Err(InvalidArgument::new(
                "quantity",
                format!("is {quantity}; it must be from 1 to {MAX_CREDITS}"),
            ));
        }
        Ok(Self::Feature {
            feature: feature.to_owned(),
            quantity,
        })
    }
}

/// A request to add a grant to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantCredits {
    /// The account to credit.
    pub account: AccountId,
    /// Credits to grant, 1..=MAX_CREDITS.
    pub amount: i64,
    /// Why, for logs.
    pub reason: Reason,
    /// What the grant is for.
    pub kind: GrantKind,
    /// When its remainder is gone; `None` never.
    pub expires: Option<Timestamp>,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

impl GrantCredits {
    /// A checked grant request. An expiry must be after `now`.
    pub fn new(
        account: AccountId,
        amount: i64,
        reason: Reason,
        kind: GrantKind,
        expires: Option<Timestamp>,
        key: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<Self, InvalidArgument> {
        check_amount(amount)?;
        if let Some(at) = expires
            && at <= now
        {
            return Err(InvalidArgument::new(
                "expire_time",
                format!(
                    "is {at}, not after now ({now}); give a future time, or none for a grant that never expires"
                ),
            ));
        }
        let expiry = expires.map(|t| t.to_string()).unwrap_or_default();
        let idempotency = Idempotency::new(
            key,
            &[
                "grant",
                &amount.to_string(),
                reason.as_str(),
                kind.as_str(),
                &expiry,
            ],
        );
        Ok(Self {
            account,
            amount,
            reason,
            kind,
            expires,
            idempotency,
        })
    }

    /// The grant's wanted id: the idempotency key, empty without one.
    pub fn wanted_id(&self) -> &str {
        self.idempotency.as_ref().map_or("", |i| i.key.as_str())
    }
}

/// A request to hold credits until they are committed or released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveCredits {
    /// The account to hold credits of.
    pub account: AccountId,
    /// Credits to hold, 1..=MAX_CREDITS.
    pub amount: i64,
    /// Why, for logs.
    pub reason: Reason,
    /// How long the hold lasts before it is released by itself.
    pub ttl: Duration,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

impl ReserveCredits {
    /// A hold of what `charge` would take, for `ttl` (checked by
    /// [`Credits`](crate::Credits), which knows the longest allowed).
    pub fn new(charge: DeductCredits, ttl: Duration) -> Self {
        let ttl_ms = ttl.as_millis().to_string();
        let idempotency = charge.idempotency.map(|idem| Idempotency {
            key: idem.key,
            fingerprint: format!("reserve\u{1f}{ttl_ms}\u{1f}{}", idem.fingerprint),
        });
        Self {
            account: charge.account,
            amount: charge.amount,
            reason: charge.reason,
            ttl,
            idempotency,
        }
    }
}

impl ReserveCredits {
    /// When a hold made at `now` expires.
    pub fn expires(&self, now: Timestamp) -> Result<Timestamp, InvalidArgument> {
        i64::try_from(self.ttl.as_millis())
            .ok()
            .and_then(|ms| now.as_millis().checked_add(ms))
            .and_then(Timestamp::from_millis)
            .ok_or_else(|| {
                InvalidArgument::new(
                    "ttl",
                    format!("{:?} from now is past the year 9999", self.ttl),
                )
            })
    }
}

/// A request to settle an open hold: commit part of it, or release it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleHold {
    /// The account of the hold.
    pub account: AccountId,
    /// The hold, as `Reserve` named it.
    pub hold_id: IdempotencyKey,
    /// Credits to take for good, 1..=the hold's amount; `None` releases it all.
    pub commit: Option<i64>,
    /// Why, for logs.
    pub reason: Reason,
}

impl SettleHold {
    /// A checked commit (`Some(amount)`) or release (`None`) of `hold_id`.
    pub fn new(
        account: AccountId,
        hold_id: &str,
        commit: Option<i64>,
        reason: Reason,
    ) -> Result<Self, InvalidArgument> {
        let hold_id = IdempotencyKey::parse_optional("hold_id", hold_id)?.ok_or_else(|| {
            InvalidArgument::new("hold_id", "is required: the hold_id Reserve answered")
        })?;
        if let Some(amount) = commit {
            check_amount(amount)?;
        }
        Ok(Self {
            account,
            hold_id,
            commit,
            reason,
        })
    }

    /// The idempotency of a settlement: keyed by the hold, so a second
    /// commit or release answers the first.
    pub fn idempotency(&self) -> Idempotency {
        Idempotency {
            key: self.hold_id.clone(),
            fingerprint: "settle".to_owned(),
        }
    }
}

/// What `Reserve` did: the hold made, or none when too few credits remain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveOutcome {
    /// The hold's id and expiry; `None` when nothing was held.
    pub hold: Option<(String, Timestamp)>,
    /// The balance after the call.
    pub balance: CreditBalance,
}

/// What `Grant` did: the grant's id and the balance after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantOutcome {
    /// The grant's id.
    pub grant_id: String,
    /// The balance after the call.
    pub balance: CreditBalance,
}

/// What settling a hold did, and the balance after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleOutcome {
    /// What was committed and returned.
    pub settlement: crate::Settlement,
    /// The balance after the call.
    pub balance: CreditBalance,
}

/// A request to start a new credit period, with its total already resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetCredits {
    /// The account to reset.
    pub account: AccountId,
    /// The new allowance.
    pub to: ResetTo,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// The allowance a reset starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// `total` credits each `period`.
    Fixed {
        /// Credits of each period.
        total: i64,
        /// How long each period is.
        period: CreditPeriod,
    },
    /// The allowance of the account's plan (by its subscription, as of the
    /// reset), with `total` credits instead of the plan's when given.
    Plan {
        /// Credits of each period instead of the plan's.
        total: Option<i64>,
        /// The catalog the plan is looked up in.
        catalog: Arc<PlanCatalog>,
    },
}

impl ResetTo {
    /// The total and period for an account with `subscription` at `now`.
    pub fn resolve(
        &self,
        subscription: Option<&Subscription>,
        now: Timestamp,
    ) -> (i64, CreditPeriod) {
        match self {
            Self::Fixed { total, period } => (*total, *period),
            Self::Plan { total, catalog } => {
                let default = catalog.default_plan();
                let settled = subscription.map(|s| s.clone().settled(now, default));
                let plan = settled
                    .as_ref()
                    .and_then(|s| catalog.get(s.allowance_plan(&default.name)))
                    .unwrap_or(default);
                (total.unwrap_or(plan.credits), plan.credit_period)
            }
        }
    }
}

/// Whether a deduct was applied, and the balance after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeductOutcome {
    /// False when the account had fewer credits than asked; nothing changed then.
    pub applied: bool,
    /// The balance after the call.
    pub balance: CreditBalance,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_count_characters_not_bytes_and_stay_printable() {
        assert!(Reason::parse("reason", "chat message: gpt-5 (1.2k tokens)").is_ok());
        // 256 two-byte characters: 512 bytes, still 256 characters.
        assert!(Reason::parse("reason", &"é".repeat(256)).is_ok());
        let long = Reason::parse("reason", &"é".repeat(257)).expect_err("257 characters");
        assert_eq!(long.field, "reason");
        assert!(long.problem.contains("257 characters"), "{}", long.problem);
        assert!(Reason::parse("reason", "line\nbreak").is_err());
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
        let now = Timestamp::EPOCH;
        let grant = GrantCredits::new(
            account.clone(),
            5,
            reason("a"),
            GrantKind::Paid,
            None,
            key(),
            now,
        )
        .expect("valid");
        assert_ne!(grant.idempotency.map(|i| i.fingerprint), print(5, "a"));
    }

    #[test]
    fn a_charge_is_an_amount_or_a_feature_never_both() {
        assert_eq!(Charge::parse(5, "", 0), Ok(Charge::Credits(5)));
        assert_eq!(
            Charge::parse(0, "chat:gpt-4o", 0),
            Ok(Charge::Feature {
                feature: "chat:gpt-4o".into(),
                quantity: 1
            }),
            "quantity defaults to 1"
        );
        let field = |amount, feature, quantity| {
            Charge::parse(amount, feature, quantity)
                .expect_err("refused")
                .field
        };
        assert_eq!(field(5, "report", 0), "amount");
        assert_eq!(field(0, "", 0), "amount");
        assert_eq!(field(5, "", 2), "quantity");
        assert_eq!(field(0, "Report!", 1), "feature");
        assert_eq!(field(0, "report", -1), "quantity");
    }

    #[test]
    fn a_priced_deduct_multiplies_refuses_overflow_and_differs_from_the_same_amount() {
        let who = AccountId::parse("account_id", "u1").expect("valid");
        let key = || IdempotencyKey::parse_optional("idempotency_key", "k").expect("valid");
        let priced = DeductCredits::priced(who.clone(), "report", 4, 10, Reason::default(), key())
            .expect("valid");
        assert_eq!(priced.amount, 40);
        let plain = DeductCredits::new(who.clone(), 40, Reason::default(), key()).expect("valid");
        assert_ne!(
            priced.idempotency, plain.idempotency,
            "a key reused across the two is a conflict"
        );
        let error = DeductCredits::priced(who, "report", MAX_CREDITS, 10, Reason::default(), None)
            .expect_err("overflow");
        assert_eq!(error.field, "quantity");
    }
}
