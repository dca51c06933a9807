//! The credits port: what the credits context needs from a store.

use std::future::Future;

use crate::{
    AccountId, CreditBalance, DeductCredits, DeductOutcome, GrantCredits, GrantOutcome,
    HistoryPage, HistoryQuery, MeterError, Recorded, ReserveCredits, ReserveOutcome, ResetCredits,
    SettleHold, SettleOutcome, StoreError, Timestamp,
};

/// Keeps every account's credits and their history; each mutation is one atomic step.
///
/// Every mutation first settles what fell due by `now` (see
/// [`CreditAccount::settle`](crate::CreditAccount::settle)), then makes its
/// change by the rules of [`CreditAccount`](crate::CreditAccount), appends
/// the history entries of both, and remembers the outcome under the
/// request's idempotency key until the store's
/// [`IdempotencyWindow`](crate::IdempotencyWindow) has passed by `now`, all
/// atomically. A repeated key with the same fingerprint returns the
/// remembered outcome with `replayed = true`; with another fingerprint,
/// [`MeterError::IdempotencyConflict`] and nothing changes. A call that
/// fails writes nothing.
///
/// A ledger is a cheap handle: clones share the same store.
pub trait CreditLedger: Clone + Send + Sync + 'static {
    /// The balance as of `now` (what fell due applied, nothing written);
    /// the default (zero, no `last_update`) for an unknown account.
    fn balance(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> impl Future<Output = Result<CreditBalance, StoreError>> + Send;

    /// Takes `request.amount` credits if that many remain. An unknown
    /// account is declined and not created.
    fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<DeductOutcome>, MeterError>> + Send;

    /// Adds a grant, creating the account if needed.
    fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<GrantOutcome>, MeterError>> + Send;

    /// Starts a new period at `now` with `request.total` credits.
    fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<CreditBalance>, MeterError>> + Send;

    /// Holds `request.amount` credits until `now + request.ttl` if that many
    /// remain. An unknown account is declined and not created.
    fn reserve(
        &self,
        request: &ReserveCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<ReserveOutcome>, MeterError>> + Send;

    /// Commits or releases an open hold; a hold settled before (within the
    /// idempotency window) answers its first settlement, replayed.
    /// [`MeterError::NotFound`] for a hold that is not open.
    fn settle_hold(
        &self,
        request: &SettleHold,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<SettleOutcome>, MeterError>> + Send;

    /// A page of the account's history, newest first (entries older than
    /// the retention by `now` left out).
    fn history(
        &self,
        account: &AccountId,
        query: &HistoryQuery,
        now: Timestamp,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;
}
