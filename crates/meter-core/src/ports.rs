//! Storage ports: what the domain needs from a store, implemented by adapters.

use std::future::Future;

use crate::{
    AccountId, CreditBalance, CreditError, DeductCredits, DeductOutcome, GrantCredits, Recorded,
    ResetCredits, StoreError, Timestamp,
};

/// Keeps every account's credit balance; each mutation is one atomic step.
///
/// Mutations first apply a reset that fell due by `now` (see
/// [`CreditBalance::with_due_reset`]), then the change, then remember the
/// outcome under the request's idempotency key, all atomically. A repeated
/// key with the same fingerprint returns the remembered outcome with
/// `replayed = true`; with another fingerprint, [`CreditError::IdempotencyConflict`].
pub trait CreditLedger: Send + Sync + 'static {
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
    ) -> impl Future<Output = Result<Recorded<DeductOutcome>, CreditError>> + Send;

    /// Adds `request.amount` credits to the total.
    fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<CreditBalance>, CreditError>> + Send;

    /// Starts a new period at `now` with `request.total` credits.
    fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<CreditBalance>, CreditError>> + Send;

    /// Checks that the store answers; `Err(StoreError::Unavailable)` when it does not.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
