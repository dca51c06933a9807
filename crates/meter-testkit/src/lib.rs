//! Test helpers shared by every `meter` crate: a fixed clock, the store
//! contract suite that every storage adapter must pass, launchers of a
//! redis-server and of a Redis Cluster, and certificates for TLS tests.
//!
//! A dev-dependency, and a dependency of the benchmark; never of `meterd`
//! or any other crate that ships.

mod clock;
pub mod contract;
pub mod http;
mod redis_cluster;
mod redis_server;
pub mod tls;

pub use clock::{FixedClock, timestamp};
pub use redis_cluster::{ClusterNode, NODE_TIMEOUT_MS, RedisCluster};
pub use redis_server::RedisServer;
