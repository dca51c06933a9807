//! The store contract suite: one module per storage port, each a set of
//! async test functions and a macro that instantiates them for a store.
//!
//! Every test takes a factory that builds a fresh port (and a guard that
//! keeps its backing server alive) for a given idempotency window, and
//! drives time with a [`FixedClock`](crate::FixedClock): no test sleeps.

pub mod accounts;
pub mod credits;
pub mod ratelimit;
pub mod stats;
pub mod subscription;
pub mod usage;

use meter_core::{AccountId, DeductCredits, IdempotencyKey, Reason};

/// A test account named `name`.
fn account(name: &str) -> AccountId {
    AccountId::parse("account_id", name).expect("valid test account")
}

/// The idempotency key `text`; none for `""`.
fn key(text: &str) -> Option<IdempotencyKey> {
    IdempotencyKey::parse_optional("idempotency_key", text).expect("valid test key")
}

/// A deduct of `amount` from `who` with the key `idem`.
fn deduct(who: &AccountId, amount: i64, idem: &str) -> DeductCredits {
    DeductCredits::new(who.clone(), amount, Reason::default(), key(idem)).expect("valid deduct")
}
