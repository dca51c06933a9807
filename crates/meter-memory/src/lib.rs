//! The embedded store: every port of `meter-core` kept in process memory.
//!
//! It applies the domain's reference rules under one lock per shard, so each
//! call is atomic exactly as a Redis script is. Nothing survives a restart;
//! `meterd` says so in its log when it runs on this store.
//!
//! Must not import tokio, tonic or redis: it is plain data behind a mutex.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use meter_core::{
    AccountId, CreditBalance, CreditError, CreditLedger, DeductCredits, DeductOutcome,
    GrantCredits, Idempotency, Recorded, ResetCredits, StoreError, Timestamp,
};

/// Lock shards: enough that concurrent calls on different accounts rarely wait.
const SHARDS: usize = 16;

/// The in-memory credit ledger.
#[derive(Debug)]
pub struct MemoryCreditLedger {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    idempotency_window: Duration,
}

#[derive(Debug, Default)]
struct Shard {
    balances: HashMap<AccountId, CreditBalance>,
    remembered: HashMap<(AccountId, String), Remembered>,
    /// Idempotency records in the order they expire, to forget them cheaply.
    expiries: VecDeque<(Instant, AccountId, String)>,
}

#[derive(Clone, Debug)]
struct Remembered {
    fingerprint: String,
    /// Wall-clock expiry, as Redis keeps a key's TTL, so both stores agree.
    expires: Instant,
    outcome: Outcome,
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Deduct(DeductOutcome),
    Balance(CreditBalance),
}

impl MemoryCreditLedger {
    /// An empty ledger that remembers idempotency keys for `idempotency_window`.
    pub fn new(idempotency_window: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            idempotency_window,
        }
    }

    fn shard(&self, account: &AccountId) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(account) as usize) % SHARDS;
        // A panic while holding the lock cannot leave a half-applied change:
        // every mutation computes the new state first and stores it in one move.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `apply` on the account's balance atomically, with idempotency.
    fn mutate(
        &self,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        now: Timestamp,
        apply: impl FnOnce(
            Option<CreditBalance>,
        ) -> Result<(Option<CreditBalance>, Outcome), CreditError>,
    ) -> Result<Recorded<Outcome>, CreditError> {
        let mut shard = self.shard(account);
        let wall_clock = Instant::now();
        shard.forget_expired(wall_clock);
        if let Some(idem) = idempotency
            && let Some(prior) = shard
                .remembered
                .get(&(account.clone(), idem.key.as_str().to_owned()))
        {
            if prior.fingerprint != idem.fingerprint {
                return Err(CreditError::IdempotencyConflict {
                    key: idem.key.as_str().to_owned(),
                });
            }
            return Ok(Recorded {
                outcome: prior.outcome,
                replayed: true,
            });
        }
        let current = shard.balances.get(account).map(|b| b.with_due_reset(now));
        let (next, outcome) = apply(current)?;
        if let Some(next) = next {
            match shard.balances.get_mut(account) {
                Some(stored) => *stored = next,
                None => {
                    shard.balances.insert(account.clone(), next);
                }
            }
        }
        if let Some(idem) = idempotency {
            let expires = wall_clock + self.idempotency_window;
            let key = idem.key.as_str().to_owned();
            shard
                .expiries
                .push_back((expires, account.clone(), key.clone()));
            shard.remembered.insert(
                (account.clone(), key),
                Remembered {
                    fingerprint: idem.fingerprint.clone(),
                    expires,
                    outcome,
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
    fn forget_expired(&mut self, now: Instant) {
        while let Some((expires, _, _)) = self.expiries.front() {
            if *expires > now {
                break;
            }
            if let Some((_, account, key)) = self.expiries.pop_front() {
                let id = (account, key);
                // A key may have been re-remembered after expiring; drop only the stale record.
                if self.remembered.get(&id).is_some_and(|r| r.expires <= now) {
                    self.remembered.remove(&id);
                }
            }
        }
    }
}

fn balance_of(recorded: Recorded<Outcome>) -> Result<Recorded<CreditBalance>, CreditError> {
    match recorded.outcome {
        Outcome::Balance(balance) => Ok(Recorded {
            outcome: balance,
            replayed: recorded.replayed,
        }),
        // Fingerprints name the operation, so a deduct outcome never answers a grant.
        Outcome::Deduct(_) => {
            Err(StoreError::Protocol("idempotency record of another operation".into()).into())
        }
    }
}

impl CreditLedger for MemoryCreditLedger {
    async fn balance(&self, account: &AccountId) -> Result<Option<CreditBalance>, StoreError> {
        Ok(self.shard(account).balances.get(account).copied())
    }

    async fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> Result<Recorded<DeductOutcome>, CreditError> {
        let recorded = self.mutate(
            &request.account,
            request.idempotency.as_ref(),
            now,
            |current| {
                let mut balance = current.unwrap_or_default();
                let applied = balance.try_deduct(request.amount, now);
                let outcome = DeductOutcome { applied, balance };
                Ok((applied.then_some(balance), Outcome::Deduct(outcome)))
            },
        )?;
        match recorded.outcome {
            Outcome::Deduct(outcome) => Ok(Recorded {
                outcome,
                replayed: recorded.replayed,
            }),
            Outcome::Balance(_) => {
                Err(StoreError::Protocol("idempotency record of another operation".into()).into())
            }
        }
    }

    async fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, CreditError> {
        balance_of(self.mutate(
            &request.account,
            request.idempotency.as_ref(),
            now,
            |current| {
                let mut balance = current.unwrap_or_default();
                balance.grant(request.amount, request.trial, now)?;
                Ok((Some(balance), Outcome::Balance(balance)))
            },
        )?)
    }

    async fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, CreditError> {
        balance_of(
            self.mutate(&request.account, request.idempotency.as_ref(), now, |_| {
                let balance = CreditBalance::fresh_period(request.total, request.period, now);
                Ok((Some(balance), Outcome::Balance(balance)))
            })?,
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryCreditLedger;

    meter_testkit::credit_ledger_contract!(window => async move { (MemoryCreditLedger::new(window), ()) });
}
