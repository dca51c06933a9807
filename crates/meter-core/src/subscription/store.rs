//! The subscription port: what the subscription context needs from a store.

use std::future::Future;

use crate::{
    AccountId, ChangeOutcome, ChangeSubscription, MeterError, Profile, Recorded, RegisterAccount,
    RegisterOutcome, StoreError, StoredAccount, Timestamp, UpdateProfile,
};

/// Keeps accounts as a whole: profiles, subscriptions, and the credit
/// allowance their plans give. Each mutation is one atomic step, with its
/// idempotency record, as for [`CreditLedger`](crate::CreditLedger); a
/// call that fails writes nothing.
pub trait AccountStore: Clone + Send + Sync + 'static {
    /// The account's profile, stored subscription and balance as of `now`,
    /// read in one atomic step.
    fn account(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> impl Future<Output = Result<StoredAccount, StoreError>> + Send;

    /// Creates the account if it has no profile: the profile with `joined`
    /// and `last_login` at `now`, the default plan's subscription if it has
    /// none, and that plan's allowance if its credits have no schedule.
    /// Otherwise only `last_login` moves to `now`.
    fn register(
        &self,
        request: &RegisterAccount,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<RegisterOutcome>, MeterError>> + Send;

    /// Applies a subscription change by [`ChangeRules`](crate::ChangeRules).
    fn change_subscription(
        &self,
        request: &ChangeSubscription,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<ChangeOutcome>, MeterError>> + Send;

    /// Changes the given profile fields; [`MeterError::NotFound`] for an
    /// account never registered.
    fn update_profile(
        &self,
        request: &UpdateProfile,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<Profile>, MeterError>> + Send;

    /// Records that the billing provider's `customer` pays for `account`
    /// as of `time` (the billing event's): the index
    /// [`AccountStore::find_by_customer`] reads, and the account's list of
    /// its customers that `delete_account` removes from it. The link of the
    /// latest time wins (the later call on a tie); an older one is only
    /// added to the account's list.
    fn link_customer(
        &self,
        customer: &str,
        account: &AccountId,
        time: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The account the billing provider's `customer` pays for, if a
    /// subscription change named it and the account was not deleted since.
    fn find_by_customer(
        &self,
        customer: &str,
    ) -> impl Future<Output = Result<Option<AccountId>, StoreError>> + Send;

    /// Removes every record of the account, in every context (profile,
    /// subscription, credits, grants, holds, history, stats, usage,
    /// idempotency records) in one atomic step, and the index entries of its
    /// billing customers (before and after that step). `Ok(true)` when the
    /// account had anything besides idempotency records; deleting twice is
    /// fine.
    fn delete_account(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
