//! Test helpers shared by every `meter` crate: a redis-server launcher and the
//! store contract suite that every storage adapter must pass.
//!
//! A dev-dependency only; it must never be a dependency of a shipped crate.

pub mod credits_contract;
mod redis_server;

pub use redis_server::RedisServer;
