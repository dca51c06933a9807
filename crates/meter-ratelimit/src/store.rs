//! The port rate limits are counted in.

use std::future::Future;

use meter_core::StoreError;

use crate::Limit;

/// One limit to check within a request: its key, limit and cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The key counted, unique per policy or descriptor (`p:api:acme`); the
    /// store adds its own prefix and the algorithm's suffix.
    pub key: String,
    /// The limit.
    pub limit: Limit,
    /// Units taken, at least 1.
    pub cost: u64,
    /// Whether refusing this check refuses the request (false in shadow mode).
    pub enforce: bool,
}

/// What a store found for one check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The cost fits under the limit (counted only when the whole request is admitted).
    pub allowed: bool,
    /// Units still admitted after the request (after counting it, when it was).
    pub remaining: u64,
    /// Microseconds until the key's count is back to zero.
    pub reset_after_us: u64,
    /// When not allowed: microseconds until the same cost would be.
    pub retry_after_us: u64,
}

/// Counts rate limits, atomically per request.
pub trait RateLimitStore: Clone + Send + Sync + 'static {
    /// Checks every one of `checks` at the store's current time, in one
    /// atomic step: when any check with `enforce` is not allowed, nothing is
    /// counted; otherwise every allowed check with a cost is counted.
    /// Outcomes in order. (On Redis Cluster the step is one per slot the
    /// checks fall in: a refusal in one slot does not undo another's count.)
    fn check(
        &self,
        checks: Vec<Check>,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;
}
