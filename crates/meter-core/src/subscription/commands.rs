//! The subscription context's commands, validated, and what they answer.

use std::sync::Arc;

use crate::{
    AccountId, CreditBalance, Idempotency, PlanCatalog, Profile, ProfileFields, Subscription,
    SubscriptionChange, Timestamp,
};

/// `RegisterAccount`: the first call creates the account, later ones note a login.
#[derive(Clone, Debug)]
pub struct RegisterAccount {
    /// The account.
    pub account: AccountId,
    /// The profile saved by the first call.
    pub profile: ProfileFields,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
    /// The catalog, for the default plan.
    pub catalog: Arc<PlanCatalog>,
}

/// `UpdateSubscription` and `CancelSubscription`.
#[derive(Clone, Debug)]
pub struct ChangeSubscription {
    /// The account.
    pub account: AccountId,
    /// What changes.
    pub change: SubscriptionChange,
    /// When the billing event happened; older than the stored one is ignored.
    pub event_time: Timestamp,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
    /// The catalog, for the plans' allowances.
    pub catalog: Arc<PlanCatalog>,
}

/// `UpdateProfile`.
#[derive(Clone, Debug)]
pub struct UpdateProfile {
    /// The account.
    pub account: AccountId,
    /// The fields to change.
    pub fields: ProfileFields,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// An account as stored: each part may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAccount {
    /// The profile; `None` for an account never registered.
    pub profile: Option<Profile>,
    /// The subscription as stored (not settled); `None` without one.
    pub subscription: Option<Subscription>,
    /// The balance, with what fell due applied.
    pub balance: CreditBalance,
}

/// What `RegisterAccount` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// True when this call created the account.
    pub created: bool,
    /// The account after the call.
    pub account: StoredAccount,
}

/// An account as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    /// The profile.
    pub profile: Profile,
    /// The subscription as of now.
    pub subscription: Subscription,
    /// The balance as of now.
    pub balance: CreditBalance,
    /// Whether the account pays for a plan now (active or trialing, not the default plan).
    pub active: bool,
}
