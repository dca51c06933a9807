//! The usage context: what each account used, per metric and period
//! (UTC months and days), counted once per event id; quotas from the
//! plan's allowances; the period's bill.
//!
//! So far the rules (periods, bills, quotas); events, the store port and
//! the use cases follow.

mod bill;
mod period;

pub use bill::{Bill, BillLine, BillOverflow, QuotaDecision, compute_bill, quota};
pub use period::UsagePeriod;
