//! The credits context: each account's allowance, grants, holds and history,
//! the commands that change it, the [`CreditLedger`] port a store
//! implements, and the [`Credits`] use cases the transport calls.
//!
//! The rules here are the reference semantics. The in-memory store applies
//! them directly; the Redis scripts implement the same rules in Lua, and the
//! store contract suite (meter-testkit) holds both to them.

mod account;
mod balance;
mod commands;
mod history;
mod ledger;
mod service;

pub use account::{
    Caller, CreditAccount, Hold, MAX_LIVE_GRANTS, MAX_OPEN_HOLDS, NewGrant, Settlement,
};
pub use balance::{
    Allowance, CreditBalance, Grant, GrantKind, MAX_CREDITS, PlannedAllowance, ResetSchedule,
    total_overflow,
};
pub use commands::{
    Charge, DeductCredits, DeductOutcome, GrantCredits, GrantOutcome, MAX_REASON_CHARS, Reason,
    ReserveCredits, ReserveOutcome, ResetCredits, ResetTo, SettleHold, SettleOutcome,
};
pub use history::{
    HistoryEntry, HistoryId, HistoryKind, HistoryPage, HistoryQuery, HistoryRetention,
};
pub use ledger::CreditLedger;
pub use service::Credits;
