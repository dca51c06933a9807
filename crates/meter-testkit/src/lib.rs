//! Test helpers shared by every `meter` crate: a fixed clock, the store
//! contract suite that every storage adapter must pass, and a redis-server
//! launcher.
//!
//! A dev-dependency, and a dependency of the benchmark; never of `meterd`
//! or any other crate that ships.

mod clock;
pub mod contract;
mod redis_server;

pub use clock::{FixedClock, timestamp};
pub use redis_server::RedisServer;
