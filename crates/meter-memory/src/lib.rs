//! The embedded store: every port of `meter-core` kept in process memory.
//!
//! One [`MemoryStore`] holds every account's records; each port is a handle
//! on it ([`MemoryStore::credits`]). A call locks the account's shard, works
//! on a copy of the account's record, and stores the copy and its
//! idempotency record in one move, so each call is atomic exactly as a Redis
//! script is, and a refused call changes nothing. Nothing survives a
//! restart; `meterd` says so in its log when it runs on this store.
//!
//! Must not import tokio, tonic or redis: it is plain data behind a mutex.

mod accounts;
mod credits;
mod ratelimit;
mod stats;
mod usage;

use std::{
    any::Any,
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard},
};

use meter_core::{
    AccountId, CreditAccount, HistoryRetention, Idempotency, IdempotencyWindow, MeterError,
    Profile, Recorded, StoreError, Subscription, Timestamp,
};

pub use accounts::MemoryAccounts;
pub use credits::MemoryCreditLedger;
pub use ratelimit::MemoryRateLimits;
pub use stats::MemoryStats;
pub use usage::MemoryUsage;

/// Lock shards: enough that concurrent calls on different accounts rarely wait.
const SHARDS: usize = 16;

/// The embedded store; clones share the same data.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    idempotency_window: IdempotencyWindow,
    history_retention: HistoryRetention,
    rankings: usage::Rankings,
    /// The billing customer index: customer id -> the account it pays for,
    /// and the time of that link.
    customers: Mutex<HashMap<String, (AccountId, Timestamp)>>,
}

/// Everything the store keeps about one account, one field per context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AccountRecord {
    credits: Option<CreditAccount>,
    history: credits::History,
    profile: Option<Profile>,
    subscription: Option<Subscription>,
    stats: Option<stats::StatsRecord>,
    usage: Option<usage::UsageRecord>,
}

impl AccountRecord {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Where an idempotency key lives: the account, the context, the key.
type RecordId = (AccountId, &'static str, String);

#[derive(Debug, Default)]
struct Shard {
    accounts: HashMap<AccountId, AccountRecord>,
    remembered: HashMap<RecordId, Remembered>,
    /// Idempotency records in the order they were made, to forget them cheaply.
    expiries: VecDeque<(Timestamp, RecordId)>,
}

#[derive(Debug)]
struct Remembered {
    fingerprint: String,
    expires: Timestamp,
    outcome: Box<dyn Any + Send>,
}

impl MemoryStore {
    /// An empty store that remembers idempotency keys for `idempotency_window`.
    pub fn new(idempotency_window: IdempotencyWindow) -> Self {
        Self::build(idempotency_window, HistoryRetention::DEFAULT)
    }

    /// The same empty store, keeping `retention` of each account's history.
    #[must_use]
    pub fn with_history_retention(self, retention: HistoryRetention) -> Self {
        Self::build(self.inner.idempotency_window, retention)
    }

    fn build(idempotency_window: IdempotencyWindow, history_retention: HistoryRetention) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                idempotency_window,
                history_retention,
                rankings: usage::Rankings::default(),
                customers: Mutex::default(),
            }),
        }
    }

    /// The credits port on this store.
    pub fn credits(&self) -> MemoryCreditLedger {
        MemoryCreditLedger::new(self.clone())
    }

    /// The usage port on this store.
    pub fn usage(&self) -> MemoryUsage {
        MemoryUsage {
            store: self.clone(),
        }
    }

    /// The stats port on this store.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            store: self.clone(),
        }
    }

    /// The accounts port on this store.
    pub fn accounts(&self) -> MemoryAccounts {
        MemoryAccounts {
            store: self.clone(),
        }
    }

    /// The top-consumer rankings.
    fn rankings(&self) -> &usage::Rankings {
        &self.inner.rankings
    }

    /// The billing customer index.
    fn customers(&self) -> MutexGuard<'_, HashMap<String, (AccountId, Timestamp)>> {
        // Each change replaces one entry in one move: consistent after a panic.
        self.inner
            .customers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shard(&self, account: &AccountId) -> MutexGuard<'_, Shard> {
        let index = (self.inner.hasher.hash_one(account) as usize) % SHARDS;
        // A panic while holding the lock cannot leave a half-applied change:
        // every mutation works on a copy and stores it in one move.
        self.inner.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the account's record (a copy); the default for an unknown account.
    fn read<T>(&self, account: &AccountId, read: impl FnOnce(&AccountRecord) -> T) -> T {
        let shard = self.shard(account);
        match shard.accounts.get(account) {
            Some(record) => read(record),
            None => read(&AccountRecord::default()),
        }
    }

    /// Runs `apply` on a copy of the account's record and, when it succeeds,
    /// stores the copy and remembers the outcome under the idempotency key of
    /// `context`, all under the shard's lock. A remembered key answers with
    /// its outcome (or a conflict) without running `apply`.
    fn mutate<T: Clone + Send + 'static>(
        &self,
        account: &AccountId,
        context: &'static str,
        idempotency: Option<&Idempotency>,
        now: Timestamp,
        apply: impl FnOnce(&mut AccountRecord) -> Result<T, MeterError>,
    ) -> Result<Recorded<T>, MeterError> {
        let mut shard = self.shard(account);
        shard.forget_expired(now);
        let record_id =
            idempotency.map(|idem| (account.clone(), context, idem.key.as_str().to_owned()));
        if let (Some(idem), Some(id)) = (idempotency, &record_id)
            && let Some(prior) = shard.remembered.get(id)
            && prior.expires > now
        {
            if prior.fingerprint != idem.fingerprint {
                return Err(MeterError::IdempotencyConflict {
                    key: idem.key.as_str().to_owned(),
                });
            }
            // Fingerprints name the operation, so the outcome has this type.
            let outcome = prior.outcome.downcast_ref::<T>().cloned().ok_or_else(|| {
                StoreError::Protocol("idempotency record of another operation".into())
            })?;
            return Ok(Recorded {
                outcome,
                replayed: true,
            });
        }
        let mut record = shard.accounts.get(account).cloned().unwrap_or_default();
        let outcome = apply(&mut record)?;
        match shard.accounts.get_mut(account) {
            Some(stored) => *stored = record,
            None if !record.is_empty() => {
                shard.accounts.insert(account.clone(), record);
            }
            None => {}
        }
        if let (Some(idem), Some(id)) = (idempotency, record_id) {
            let expires = self.inner.idempotency_window.expiry(now);
            shard.expiries.push_back((expires, id.clone()));
            shard.remembered.insert(
                id,
                Remembered {
                    fingerprint: idem.fingerprint.clone(),
                    expires,
                    outcome: Box::new(outcome.clone()),
                },
            );
        }
        Ok(Recorded {
            outcome,
            replayed: false,
        })
    }
}

impl Shard {
    /// Drops idempotency records whose window has passed by `now`.
    fn forget_expired(&mut self, now: Timestamp) {
        while let Some((expires, _)) = self.expiries.front() {
            if *expires > now {
                break;
            }
            if let Some((_, id)) = self.expiries.pop_front() {
                // A key may have been remembered again since; drop only a stale record.
                if self.remembered.get(&id).is_some_and(|r| r.expires <= now) {
                    self.remembered.remove(&id);
                }
            }
        }
    }
}
