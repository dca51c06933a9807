//! Rate limits in memory: each key's [`State`] in a sharded map, the
//! checks of one request under the locks of all their shards at once.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard},
};

use meter_core::{Clock, StoreError};
use meter_ratelimit::{Check, Outcome, RateLimitStore, State};

/// Lock shards of the rate limit keys.
const SHARDS: usize = 64;

/// A shard forgets expired keys once it has grown past this many since the last sweep.
const MIN_SWEEP: usize = 1024;

/// The embedded rate limit store; clones share the same counts.
#[derive(Clone)]
pub struct MemoryRateLimits {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryRateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimits").finish_non_exhaustive()
    }
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct Shard {
    /// By the check's key, the algorithm's code and the window, as Redis keys them.
    states: HashMap<(String, &'static str, u64), Entry>,
    /// Sweep expired keys once `states` is this large.
    next_sweep: usize,
}

#[derive(Debug)]
struct Entry {
    state: State,
    /// When the state holds nothing any more (µs since the epoch).
    expires_at: u64,
}

impl MemoryRateLimits {
    /// An empty store telling time by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                clock,
            }),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.inner.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// Keys held (expired ones included until their shard is swept), for tests.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).states.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock leaves whole states behind (each is
    // replaced in one move), so the data is still consistent.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RateLimitStore for MemoryRateLimits {
    async fn check(&self, checks: Vec<Check>) -> Result<Vec<Outcome>, StoreError> {
        let now = u64::try_from(self.inner.clock.now().as_millis()).unwrap_or(0) * 1_000;
        let shard_ids: Vec<usize> = checks.iter().map(|c| self.shard_of(&c.key)).collect();
        // Every shard of the request, locked in order (no deadlock between requests).
        let mut order = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            order.iter().map(|&i| lock(&self.inner.shards[i])).collect();
        // Every check in turn on working copies, counted there as it is
        // allowed (a key checked twice sees the first count). Stored as
        // Redis stores them: the counted copies if the request is admitted;
        // of every other key only the sliding window's buckets that left
        // the window.
        let mut work: Vec<Work> = Vec::with_capacity(checks.len());
        let mut outcomes = Vec::with_capacity(checks.len());
        let mut counted = Vec::with_capacity(checks.len());
        let mut admitted = true;
        for (check, &i) in checks.iter().zip(&shard_ids) {
            let code = check.limit.algorithm().code();
            let window = check.limit.window_us();
            let w = match work
                .iter()
                .position(|w| w.code == code && w.window == window && w.key == check.key)
            {
                Some(w) => w,
                None => {
                    let guard = order.binary_search(&i).unwrap_or_default();
                    let stored = guards[guard]
                        .states
                        .get(&(check.key.clone(), code, window))
                        .filter(|entry| entry.expires_at > now)
                        .map(|entry| entry.state.clone());
                    work.push(Work {
                        key: check.key.clone(),
                        code,
                        window,
                        guard,
                        state: stored
                            .clone()
                            .unwrap_or_else(|| State::new(check.limit.algorithm())),
                        stored,
                        counted: false,
                        limit: check.limit,
                    });
                    work.len() - 1
                }
            };
            let entry = &mut work[w];
            let (outcome, at) = entry.state.evaluate(&check.limit, check.cost, now);
            let after = if outcome.allowed && check.cost > 0 {
                entry.counted = true;
                entry.state.commit(&check.limit, check.cost, at)
            } else {
                outcome
            };
            admitted &= outcome.allowed || !check.enforce;
            outcomes.push(outcome);
            counted.push(after);
        }
        for entry in work {
            let state = if admitted && entry.counted {
                entry.state
            } else if let Some(mut stored) = entry.stored {
                stored.tidy(&entry.limit, now);
                stored
            } else {
                continue;
            };
            let shard = &mut guards[entry.guard];
            let expires_at = state.expires_at(&entry.limit);
            shard.states.insert(
                (entry.key, entry.code, entry.window),
                Entry { state, expires_at },
            );
            if shard.states.len() >= shard.next_sweep {
                shard.states.retain(|_, entry| entry.expires_at > now);
                shard.next_sweep = (shard.states.len() * 2).max(MIN_SWEEP);
            }
        }
        Ok(if admitted { counted } else { outcomes })
    }
}

/// A key's state while a request is checked.
struct Work {
    key: String,
    code: &'static str,
    window: u64,
    /// Its shard's place in the request's locks.
    guard: usize,
    /// The working copy.
    state: State,
    /// The state as stored, if the key had one.
    stored: Option<State>,
    /// Whether a check counted units on the working copy.
    counted: bool,
    limit: meter_ratelimit::Limit,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meter_testkit::FixedClock;

    use super::MemoryRateLimits;

    meter_testkit::rate_limit_store_contract!(|clock: FixedClock| async move {
        (MemoryRateLimits::new(Arc::new(clock)), ())
    });

    /// Keys whose window has passed are forgotten as their shard grows:
    /// memory follows the live keys, not every key ever checked.
    #[tokio::test]
    async fn expired_keys_are_forgotten() {
        use std::time::Duration;

        use meter_ratelimit::{Algorithm, Check, Limit, RateLimitStore};

        let clock = FixedClock::at("2026-03-10T12:00:00.000Z");
        let store = MemoryRateLimits::new(Arc::new(clock.clone()));
        let limit = Limit::new(5, Duration::from_secs(1), Algorithm::SlidingWindow).expect("valid");
        let batch = |round: usize| {
            (0..100_000).map(move |i| Check {
                key: format!("k:{round}:{i}"),
                limit,
                cost: 1,
                enforce: true,
            })
        };
        for check in batch(0) {
            store.check(vec![check]).await.expect("counted");
        }
        assert_eq!(store.len(), 100_000);
        clock.advance(Duration::from_secs(2));
        for check in batch(1) {
            store.check(vec![check]).await.expect("counted");
        }
        assert!(
            store.len() < 170_000,
            "the expired keys of the first round were swept: {} held",
            store.len()
        );
    }
}
