//! Rate limits on Redis: one `ratelimit/check.lua` per request, on the
//! Redis server's clock.
//!
//! Each check's keys carry its key as the hash tag (`rl:{p:api:acme}:s`),
//! so one check is always one slot. On one Redis node a whole request is
//! one script call (one round trip, atomic); on Redis Cluster its checks
//! are grouped by slot, one script per slot, concurrently.

use std::sync::{Arc, LazyLock};

use meter_core::{Clock, StoreError};
use meter_ratelimit::{Algorithm, Check, Outcome, RateLimitStore};
use redis::Value;

use crate::{
    RedisStore,
    script::{LuaScript, ScriptCall, lib},
    slot::key_slot,
};

static CHECK: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "ratelimit/check.lua",
        &[lib::STORED],
        &[],
        &[],
        include_str!("lua/ratelimit/check.lua"),
    )
});

/// The check script (`ratelimit/check.lua` says its keys and arguments).
pub fn check_script() -> &'static LuaScript {
    &CHECK
}

/// The rate limit store on Redis.
#[derive(Clone)]
pub struct RedisRateLimits {
    store: RedisStore,
    /// Time from this clock instead of the Redis server's (tests).
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisRateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimits")
            .field("store", &self.store)
            .field("server_time", &self.clock.is_none())
            .finish()
    }
}

impl RedisRateLimits {
    /// Rate limits on `store`, on the Redis server's clock.
    pub fn new(store: RedisStore) -> Self {
        Self { store, clock: None }
    }

    /// Rate limits on `store`, on `clock` instead of the server's (tests
    /// that move time).
    pub fn with_clock(store: RedisStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock: Some(clock),
        }
    }
}

/// The two keys of a check: its state and, for the sliding window, the
/// list of its sealed buckets (the state's key again for the other
/// algorithms); the window is part of each, so one key has one window.
fn keys_of(check: &Check) -> [String; 2] {
    let (key, code, window) = (
        &check.key,
        check.limit.algorithm().code(),
        check.limit.window_us(),
    );
    match check.limit.algorithm() {
        Algorithm::SlidingWindow => [
            format!("rl:{{{key}}}:{code}:{window}"),
            format!("rl:{{{key}}}:{code}l:{window}"),
        ],
        Algorithm::FixedWindow | Algorithm::TokenBucket => {
            let state = format!("rl:{{{key}}}:{code}:{window}");
            [state.clone(), state]
        }
    }
}

/// The script call for `checks` at `now` (µs; none: the server's time),
/// sent where the first key lives.
fn call(checks: &[&Check], now: Option<u64>, cluster: bool) -> ScriptCall {
    let keys: Vec<String> = checks.iter().flat_map(|c| keys_of(c)).collect();
    let mut call = if cluster {
        CHECK.call(&keys)
    } else {
        CHECK.call_on_one_node(&keys)
    };
    call = call
        .arg(now.map_or_else(String::new, |n| n.to_string()))
        .arg(checks.len());
    for check in checks {
        call = call
            .arg(check.limit.algorithm().code())
            .arg(check.limit.requests())
            .arg(check.limit.window_us())
            .arg(check.cost)
            .arg(if check.enforce { "1" } else { "0" });
    }
    call
}

/// The check script's command (`EVALSHA` and its words) for `checks` on
/// the server's clock, as [`RedisRateLimits`] sends it on one Redis node:
/// for measuring the script alone (`make bench`).
pub fn check_command(checks: &[Check]) -> Vec<String> {
    let refs: Vec<&Check> = checks.iter().collect();
    call(&refs, None, false).words()
}

/// The outcomes of a reply of `count` checks.
fn outcomes(value: Value, count: usize) -> Result<Vec<Outcome>, StoreError> {
    let unexpected =
        |detail: String| StoreError::Protocol(format!("ratelimit/check.lua reply: {detail}"));
    let Value::Array(items) = value else {
        return Err(unexpected("not an array".into()));
    };
    if items.len() != 4 * count {
        return Err(unexpected(format!(
            "{} values for {count} checks",
            items.len()
        )));
    }
    let mut numbers = items.into_iter().map(|item| match item {
        Value::Int(n) => u64::try_from(n).map_err(|_| unexpected(format!("{n} is negative"))),
        other => Err(unexpected(format!("{other:?} is not an integer"))),
    });
    let mut next = || {
        numbers
            .next()
            .unwrap_or_else(|| Err(unexpected("too short".into())))
    };
    (0..count)
        .map(|_| {
            Ok(Outcome {
                allowed: next()? == 1,
                remaining: next()?,
                reset_after_us: next()?,
                retry_after_us: next()?,
            })
        })
        .collect()
}

impl RateLimitStore for RedisRateLimits {
    async fn check(&self, checks: Vec<Check>) -> Result<Vec<Outcome>, StoreError> {
        let now = self
            .clock
            .as_ref()
            .map(|clock| u64::try_from(clock.now().as_millis()).unwrap_or(0) * 1_000);
        if !self.store.is_cluster() {
            let refs: Vec<&Check> = checks.iter().collect();
            let value = self.store.run_raw(call(&refs, now, false)).await?;
            return outcomes(value, checks.len());
        }
        // One script per slot, concurrently; answers back in request order.
        let mut slots: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            let slot = key_slot(keys_of(check)[0].as_bytes());
            match slots.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => slots.push((slot, vec![i])),
            }
        }
        let calls = slots.iter().map(|(_, members)| {
            let group: Vec<&Check> = members.iter().map(|&i| &checks[i]).collect();
            let call = call(&group, now, true);
            async move {
                let value = self.store.run_raw(call).await?;
                outcomes(value, group.len())
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut ordered = vec![Outcome::default(); checks.len()];
        for ((_, members), answer) in slots.iter().zip(answers) {
            for (&i, outcome) in members.iter().zip(answer?) {
                ordered[i] = outcome;
            }
        }
        Ok(ordered)
    }
}
