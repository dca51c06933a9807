//! The Redis store: the system of record of `meter` in production.
//!
//! One [`RedisStore`] owns the connection pool, the auto-pipeline in front
//! of it and the health ping; every adapter ([`RedisCreditLedger`],
//! [`RedisAccounts`]; stats and usage later) borrows it. Each mutation is one
//! Lua script run with `EVALSHA` (one round trip, atomic on the server);
//! reads are one `HMGET` or one read-only script. Scripts are built from small Lua libraries
//! ([`script`]), and what they read and reply is named by [`layout!`]s.
//!
//! This is the only crate that knows Redis. It must not import tonic.

pub mod accounts;
mod cluster;
mod config;
mod connection;
pub mod credits;
pub mod keys;
mod pipeliner;
pub mod ratelimit;
pub mod script;
pub mod slot;
pub mod stats;
mod store;
pub mod usage;

pub use accounts::RedisAccounts;
pub use config::{InvalidRedisUrl, RedisConfig, RedisTls};
pub use credits::RedisCreditLedger;
pub use ratelimit::RedisRateLimits;
pub use stats::RedisStats;
pub use store::RedisStore;
pub use usage::RedisUsage;
