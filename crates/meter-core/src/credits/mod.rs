//! The credits context: each account's balance for its current period,
//! the commands that change it, the [`CreditLedger`] port a store
//! implements, and the [`Credits`] use cases the transport calls.
//!
//! The rules here are the reference semantics. The in-memory store applies
//! them directly; the Redis scripts implement the same rules in Lua, and the
//! store contract suite (meter-testkit) holds both to them.

mod balance;
mod commands;
mod ledger;
mod service;

pub use balance::{CreditBalance, MAX_CREDITS, ResetSchedule, total_overflow};
pub use commands::{
    Charge, DeductCredits, DeductOutcome, GrantCredits, MAX_REASON_CHARS, Reason, ResetCredits,
};
pub use ledger::CreditLedger;
pub use service::Credits;
