//! Test helpers shared by every `meter` crate: a redis-server launcher and the
//! store contract suite that every storage adapter must pass.
//!
//! A dev-dependency, and a dependency of the benchmark; never of `meterd`
//! or any other crate that ships.

pub mod credits_contract;
mod redis_server;

pub use redis_server::RedisServer;
