//! Rate limiting: limits and named policies, Envoy descriptor matching
//! against a limits file, the three algorithms (sliding window, fixed
//! window, token bucket), shadow and fail modes, and the store port that
//! counts.
//!
//! Nothing here does I/O or knows accounts or plans: the stores
//! (`meter-memory`, `meter-redis`) implement [`RateLimitStore`] with the
//! algorithms of [`algorithm`], and `meter-grpc` turns both APIs into
//! [`RateLimiter`] calls.

pub mod algorithm;
pub mod config;
pub mod limit;
pub mod service;
pub mod store;

pub use algorithm::State;
pub use config::{LimitsConfig, LimitsError, Match};
pub use limit::{Algorithm, FailMode, Limit, Rule, Unit};
pub use service::EnvoyVerdict;
pub use service::{
    CheckRequest, Descriptor, DescriptorVerdict, RateLimitCounters, RateLimiter, Verdict,
    VerdictCode,
};
pub use store::{Check, Outcome, RateLimitStore};
