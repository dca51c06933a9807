//! The gRPC transport: one module per `meter.v1` service, each a thin layer
//! that turns requests into domain calls and domain errors into statuses
//! (one mapping, [`to_status`]), and the bounds every call runs within.
//!
//! It must not import any storage crate: `meterd` plugs a store in.

pub mod access;
mod bounds;
mod credits;
pub mod observe;
mod ratelimit;
mod stats;
mod status;
mod subscription;
mod throttle;
mod usage;

pub use access::{Caller, Guarded, Scope, TokenStore, Tokens, TokensError};
pub use bounds::{Bounded, BoundedCall, InFlight, Slot};
pub use credits::CreditsGrpc;
pub use observe::{KnownMethods, Observed};
pub use ratelimit::{EnvoyRateLimitGrpc, RateLimitGrpc};
pub use stats::StatsGrpc;
pub use status::to_status;
pub use subscription::SubscriptionGrpc;
pub use usage::UsageGrpc;
