//! The `meter` domain: who an account is, how credits may change, how billing
//! periods advance, what the plan catalog holds, and the storage ports that
//! adapters implement.
//!
//! This crate does no I/O: it must not depend on tokio, tonic or redis. Time
//! comes in through [`Clock`], so every rule is testable without sleeping.

pub mod account;
pub mod clock;
pub mod credits;
pub mod error;
pub mod period;
pub mod plan;
pub mod ports;
pub mod time;

pub use account::{AccountId, IdempotencyKey, Reason};
pub use clock::{Clock, SystemClock};
pub use credits::{
    CreditBalance, Credits, DeductCredits, DeductOutcome, GrantCredits, Idempotency, MAX_CREDITS,
    Recorded, ResetCredits, ResetSchedule,
};
pub use error::{CreditError, InvalidArgument, StoreError};
pub use period::CreditPeriod;
pub use plan::{BillingInterval, CatalogError, MetricLimit, Plan, PlanCatalog};
pub use ports::CreditLedger;
pub use time::Timestamp;
