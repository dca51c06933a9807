//! The usage context: what each account used, per metric and period
//! (UTC months and days), counted once per event id; quotas from the
//! plan's allowances; the period's bill.
//!
//! So far the rules (periods, events, bills, quotas); the store port and
//! the use cases follow.

mod bill;
mod event;
mod period;
mod store;

pub use bill::{Bill, BillLine, BillOverflow, QuotaDecision, compute_bill, quota};
pub use event::{
    EventOutcome, EventRejected, MAX_EVENT_ID_CHARS, MAX_METADATA_CHARS, MAX_METADATA_ENTRIES,
    RawUsageEvent, UsageEvent,
};
pub use period::UsagePeriod;
pub use store::{CheckQuota, RecordUsage, UsageStore};
