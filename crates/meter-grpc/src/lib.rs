//! The gRPC transport: one module per `meter.v1` service, each a thin layer
//! that turns requests into domain calls and domain errors into statuses.
//!
//! It must not import any storage crate: `meterd` plugs a store in.

mod credits;
mod status;

pub use credits::CreditsGrpc;
pub use status::to_status;
