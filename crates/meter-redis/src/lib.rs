//! The Redis store: the system of record of `meter` in production.
//!
//! Each mutation is one Lua script run with `EVALSHA` (one round trip,
//! atomic on the server); reads are one `HMGET`. Connections are multiplexed
//! and pooled with bb8, so concurrent calls pipeline on a few sockets.
//!
//! This is the only crate that knows Redis. It must not import tonic.

mod connection;
pub mod keys;
mod ledger;
mod pipeliner;
pub mod scripts;

pub use connection::{InvalidRedisUrl, RedisConfig, RedisStore};
pub use ledger::RedisCreditLedger;
pub use scripts::LUA_PRELUDE;
