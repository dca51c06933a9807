//! The storage backends meterd can run on, each offering every port.
//!
//! [`Stores`] has one associated type per port, so the server is generic
//! over one parameter: a new port is a line here and in each backend, not
//! a new parameter on every function.

use std::{future::Future, sync::Arc};

use meter_core::{
    AccountStore, Clock, CreditLedger, HistoryRetention, IdempotencyWindow, StatsStore, StoreError,
    UsageStore,
};
use meter_memory::{
    MemoryAccounts, MemoryCreditLedger, MemoryRateLimits, MemoryStats, MemoryStore, MemoryUsage,
};
use meter_ratelimit::RateLimitStore;
use meter_redis::{
    RedisAccounts, RedisCreditLedger, RedisRateLimits, RedisStats, RedisStore, RedisUsage,
};

/// Every storage port meterd serves, from one backend.
pub trait Stores: Send + Sync + 'static {
    /// The credits port.
    type Credits: CreditLedger;

    /// The accounts port.
    type Accounts: AccountStore;

    /// The stats port.
    type Stats: StatsStore;

    /// The usage port.
    type Usage: UsageStore;

    /// The rate limit port.
    type RateLimits: RateLimitStore;

    /// The credits port on this backend.
    fn credits(&self) -> Self::Credits;

    /// The accounts port on this backend.
    fn accounts(&self) -> Self::Accounts;

    /// The stats port on this backend.
    fn stats(&self) -> Self::Stats;

    /// The usage port on this backend.
    fn usage(&self) -> Self::Usage;

    /// The rate limit port on this backend: on `clock` in memory, on the
    /// server's clock on Redis (so that replicas agree).
    fn rate_limits(&self, clock: Arc<dyn Clock>) -> Self::RateLimits;

    /// Checks that the backend answers; `Err` while it does not.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends the backend's background work once the server has drained.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// The embedded in-memory store.
#[derive(Debug)]
pub struct MemoryStores(MemoryStore);

impl MemoryStores {
    /// An empty store remembering idempotency keys for `window`, keeping
    /// `history` of each account's credit history.
    pub fn new(window: IdempotencyWindow, history: HistoryRetention) -> Self {
        Self(MemoryStore::new(window).with_history_retention(history))
    }
}

impl Stores for MemoryStores {
    type Credits = MemoryCreditLedger;
    type Accounts = MemoryAccounts;
    type Stats = MemoryStats;
    type Usage = MemoryUsage;
    type RateLimits = MemoryRateLimits;

    fn credits(&self) -> Self::Credits {
        self.0.credits()
    }

    fn accounts(&self) -> Self::Accounts {
        self.0.accounts()
    }

    fn stats(&self) -> Self::Stats {
        self.0.stats()
    }

    fn usage(&self) -> Self::Usage {
        self.0.usage()
    }

    fn rate_limits(&self, clock: Arc<dyn Clock>) -> Self::RateLimits {
        MemoryRateLimits::new(clock)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn close(&self) {}
}

/// Redis: one shared store, one adapter per port.
#[derive(Debug)]
pub struct RedisStores {
    store: RedisStore,
    window: IdempotencyWindow,
    history: HistoryRetention,
}

impl RedisStores {
    /// The ports on `store`, remembering idempotency keys for `window` and
    /// keeping `history` of each account's credit history.
    pub fn new(store: RedisStore, window: IdempotencyWindow, history: HistoryRetention) -> Self {
        Self {
            store,
            window,
            history,
        }
    }
}

impl Stores for RedisStores {
    type Credits = RedisCreditLedger;
    type Accounts = RedisAccounts;
    type Stats = RedisStats;
    type Usage = RedisUsage;
    type RateLimits = RedisRateLimits;

    fn credits(&self) -> Self::Credits {
        RedisCreditLedger::new(self.store.clone(), self.window, self.history)
    }

    fn accounts(&self) -> Self::Accounts {
        RedisAccounts::new(self.store.clone(), self.window, self.history)
    }

    fn stats(&self) -> Self::Stats {
        RedisStats::new(self.store.clone(), self.window)
    }

    fn usage(&self) -> Self::Usage {
        RedisUsage::new(self.store.clone())
    }

    fn rate_limits(&self, _clock: Arc<dyn Clock>) -> Self::RateLimits {
        RedisRateLimits::new(self.store.clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    async fn close(&self) {
        self.store.close().await;
    }
}
