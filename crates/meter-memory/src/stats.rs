//! [`StatsStore`] on the embedded store: the rules of [`Stats`] applied to
//! the account's record, with the conversation ids seen beside them.

use std::collections::HashSet;

use meter_core::{
    AccountId, LoginOutcome, MeterError, RecordConversation, RecordLogin, Recorded, ResetStats,
    SetMood, Stats, StatsOutcome, StatsStore, StoreError, Subscription, Timestamp,
};

use crate::{AccountRecord, MemoryStore};

/// The idempotency context of stats calls (`idem:stats:` on Redis).
const CONTEXT: &str = "stats";

/// An account's stats and the conversation ids counted since the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StatsRecord {
    stats: Stats,
    seen: HashSet<String>,
}

/// The stats store on the embedded store.
#[derive(Clone, Debug)]
pub struct MemoryStats {
    pub(crate) store: MemoryStore,
}

impl MemoryStats {
    /// Runs `change` on the account's stats record (created if needed).
    fn change<T: Clone + Send + 'static>(
        &self,
        account: &AccountId,
        idempotency: Option<&meter_core::Idempotency>,
        now: Timestamp,
        change: impl FnOnce(&mut StatsRecord) -> T,
    ) -> Result<Recorded<T>, MeterError> {
        self.store.mutate(
            account,
            CONTEXT,
            idempotency,
            now,
            |record: &mut AccountRecord| {
                Ok(change(record.stats.get_or_insert_with(Default::default)))
            },
        )
    }

    /// [`Self::change`], answering the stats with the stored subscription.
    fn change_stats(
        &self,
        account: &AccountId,
        idempotency: Option<&meter_core::Idempotency>,
        now: Timestamp,
        change: impl FnOnce(&mut StatsRecord) -> bool,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        self.store.mutate(
            account,
            CONTEXT,
            idempotency,
            now,
            |record: &mut AccountRecord| {
                let stats = record.stats.get_or_insert_with(Default::default);
                let counted = change(stats);
                Ok(StatsOutcome {
                    counted,
                    stats: stats.stats.clone(),
                    subscription: record.subscription.clone(),
                })
            },
        )
    }
}

impl StatsStore for MemoryStats {
    async fn stats(
        &self,
        account: &AccountId,
        _now: Timestamp,
    ) -> Result<(Stats, Option<Subscription>), StoreError> {
        Ok(self.store.read(account, |record| {
            (
                record
                    .stats
                    .as_ref()
                    .map(|r| r.stats.clone())
                    .unwrap_or_default(),
                record.subscription.clone(),
            )
        }))
    }

    async fn record_login(
        &self,
        request: &RecordLogin,
        now: Timestamp,
    ) -> Result<Recorded<LoginOutcome>, MeterError> {
        self.change(
            &request.account,
            request.idempotency.as_ref(),
            now,
            |record| record.stats.record_login(request.day, request.before),
        )
    }

    async fn record_conversation(
        &self,
        request: &RecordConversation,
        now: Timestamp,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        self.change_stats(
            &request.account,
            request.idempotency.as_ref(),
            now,
            |record| {
                let new = record.seen.insert(request.conversation.id.clone());
                if new {
                    record
                        .stats
                        .record_conversation(request.conversation.clone(), request.keep);
                }
                new
            },
        )
    }

    async fn set_mood(
        &self,
        request: &SetMood,
        now: Timestamp,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        self.change_stats(
            &request.account,
            request.idempotency.as_ref(),
            now,
            |record| {
                record.stats.mood_tenths = Some(request.tenths);
                true
            },
        )
    }

    async fn reset(
        &self,
        request: &ResetStats,
        now: Timestamp,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        // Nothing stays behind, as on Redis (the keys are deleted).
        self.store.mutate(
            &request.account,
            CONTEXT,
            request.idempotency.as_ref(),
            now,
            |record: &mut AccountRecord| {
                record.stats = None;
                Ok(StatsOutcome {
                    counted: true,
                    stats: Stats::default(),
                    subscription: record.subscription.clone(),
                })
            },
        )
    }
}
