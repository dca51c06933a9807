//! How to reach Redis, and how long and how much to wait for it.

use std::time::Duration;

use meter_core::Secret;

/// How to reach Redis and the bounds on waiting for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS; a
    /// [`Secret`] because it may hold a password.
    pub url: Secret,
    /// Multiplexed connections kept open; each carries many calls at once.
    pub connections: u32,
    /// How long a call waits for a connection before it fails `Unavailable`.
    pub connect_timeout: Duration,
    /// How long a batch of commands waits for Redis's replies before its
    /// calls fail `OutcomeUnknown` (they may have been applied).
    pub response_timeout: Duration,
    /// Most commands queued or awaiting their reply; past it, calls fail
    /// `Overloaded` at once and nothing is sent.
    pub max_pending: usize,
}

impl RedisConfig {
    /// The defaults of `meterd` for the Redis at `url`.
    pub fn new(url: impl Into<Secret>) -> Self {
        Self {
            url: url.into(),
            connections: 4,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            max_pending: 2048,
        }
    }
}

/// The Redis URL does not parse; the message says why (never the password).
#[derive(Debug, thiserror::Error)]
#[error(
    "REDIS_URL is not a valid Redis URL ({0}); expected redis://[user:password@]host:port[/db] or rediss://…"
)]
pub struct InvalidRedisUrl(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_never_prints_the_url() {
        let config = RedisConfig::new("redis://default:hunter2@cache:6379");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("cache"),
            "{shown}"
        );
    }
}
