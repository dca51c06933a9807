//! The stats port: what the stats context needs from a store.

use std::future::Future;

use crate::{
    AccountId, LoginOutcome, MeterError, RecordConversation, RecordLogin, Recorded, ResetStats,
    SetMood, Stats, StatsOutcome, StoreError, Subscription, Timestamp,
};

/// Keeps every account's activity stats; each mutation is one atomic step
/// with its idempotency record, as for [`CreditLedger`](crate::CreditLedger).
pub trait StatsStore: Clone + Send + Sync + 'static {
    /// The account's stats (zeros without any) and its stored subscription,
    /// read in one atomic step.
    fn stats(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> impl Future<Output = Result<(Stats, Option<Subscription>), StoreError>> + Send;

    /// Counts a login by [`Stats::record_login`].
    fn record_login(
        &self,
        request: &RecordLogin,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<LoginOutcome>, MeterError>> + Send;

    /// Counts a conversation by [`Stats::record_conversation`] unless its id
    /// was recorded before (since the last reset): `counted = false` and no
    /// change then.
    fn record_conversation(
        &self,
        request: &RecordConversation,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<StatsOutcome>, MeterError>> + Send;

    /// Sets the mood score.
    fn set_mood(
        &self,
        request: &SetMood,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<StatsOutcome>, MeterError>> + Send;

    /// Starts the account's stats again from zero (the conversation ids
    /// seen forgotten).
    fn reset(
        &self,
        request: &ResetStats,
        now: Timestamp,
    ) -> impl Future<Output = Result<Recorded<StatsOutcome>, MeterError>> + Send;
}
