//! The credits port: what the credits context needs from a store.

use std::future::Future;

use crate::{
    AccountId, CreditBalance, DeductCredits, DeductOutcome, GrantCredits, MeterError, Recorded,
    ResetCredits, StoreError, Timestamp,
};

/// Keeps every account's credit balance; each mutation is one atomic step.
///
/// Mutations first apply a reset that fell due by `now` (see
/// [`CreditBalance::with_due_reset`]), then the change, then remember the
/// outcome under the request's idempotency key until the store's
/// [`IdempotencyWindow`](crate::IdempotencyWindow) has passed by `now`, all
/// atomically. A repeated key with the same fingerprint returns the
/// remembered outcome with `replayed = true`; with another fingerprint,
/// [`MeterError::IdempotencyConflict`] and nothing changes.
///
/// A ledger is a cheap handle: clones share the same store.
pub trait CreditLedger: Clone + Send + Sync + 'static {
    /// The stored balance, without applying due resets; `Ok(None)` for an unknown account.
    fn balance(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<CreditBalance>, StoreError>> + Send;

    /// Takes `request.amount` credits if that many remain.
    fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<DeductOutcome>, MeterError>> + Send;

    /// Adds `request.amount` credits to the total.
    fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<CreditBalance>, MeterError>> + Send;

    /// Starts a new period at `now` with `request.total` credits.
    fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<CreditBalance>, MeterError>> + Send;
}
