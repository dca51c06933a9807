//! The connection pool, and the one place Redis errors are sorted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bb8_redis::{RedisConnectionManager, bb8};
use meter_core::StoreError;
use redis::{IntoConnectionInfo, RedisError, aio::MultiplexedConnection, io::tcp::TcpSettings};

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Multiplexed connections kept open; each carries many calls at once.
    pub connections: u32,
    /// How long a call waits for a connection before it fails `Unavailable`.
    pub connect_timeout: Duration,
}

/// The Redis URL does not parse; the message says why (never the password).
#[derive(Debug, thiserror::Error)]
#[error(
    "REDIS_URL is not a valid Redis URL ({0}); expected redis://[user:password@]host:port[/db] or rediss://…"
)]
pub struct InvalidRedisUrl(String);

/// A pool of multiplexed Redis connections.
#[derive(Clone, Debug)]
pub struct RedisStore {
    pool: bb8::Pool<FlaggingManager>,
}

/// bb8-redis's manager, plus a flag a call sets when its connection dropped,
/// so the pool replaces it instead of handing it out again.
///
/// Calls clone the multiplexed connection out of the pool and give the slot
/// back at once, so many calls share (and pipeline on) one socket; bb8 then
/// never sees the errors, hence the flag. Testing each connection on
/// check-out instead would cost a PING round trip per call.
#[derive(Debug)]
struct FlaggingManager {
    inner: RedisConnectionManager,
}

#[derive(Clone)]
struct FlaggedConnection {
    connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl bb8::ManageConnection for FlaggingManager {
    type Connection = FlaggedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(FlaggedConnection {
            connection: self.inner.connect().await?,
            broken: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.inner.is_valid(&mut conn.connection).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// A connection lent to one call; reports a dropped socket back to the pool.
pub(crate) struct Lease {
    pub(crate) connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl Lease {
    /// Sorts `error`, flagging the connection for replacement when it is gone.
    pub(crate) fn sort(&self, error: RedisError) -> StoreError {
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
            || error.is_timeout()
        {
            self.broken.store(true, Ordering::Relaxed);
        }
        sort_error(error)
    }
}

impl RedisStore {
    /// Opens the pool. Fails only on a malformed URL: an unreachable Redis is
    /// retried in the background and reported by [`RedisStore::ping`].
    pub fn open(config: &RedisConfig) -> Result<Self, InvalidRedisUrl> {
        // Pick rustls's ring provider for rediss:// once, process-wide;
        // an error means one was installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let invalid = |e: RedisError| InvalidRedisUrl(e.to_string());
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(invalid)?
            // Without TCP_NODELAY, Nagle's algorithm holds small commands back
            // until the previous reply's ACK: tens of ms per call at low load.
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let inner = RedisConnectionManager::new(info).map_err(invalid)?;
        let pool = bb8::Pool::builder()
            .max_size(config.connections.max(1))
            .min_idle(Some(1))
            .connection_timeout(config.connect_timeout)
            .test_on_check_out(false)
            .build_unchecked(FlaggingManager { inner });
        Ok(Self { pool })
    }

    /// Lends a connection; fails `Unavailable` when none can be had in time.
    pub(crate) async fn lease(&self) -> Result<Lease, StoreError> {
        let pooled = self.pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => sort_error(e),
            bb8::RunError::TimedOut => {
                StoreError::Unavailable("no Redis connection could be opened in time".into())
            }
        })?;
        Ok(Lease {
            connection: pooled.connection.clone(),
            broken: Arc::clone(&pooled.broken),
        })
    }

    /// Round-trips a PING; `Unavailable` when Redis does not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut lease = self.lease().await?;
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut lease.connection).await;
        match pong {
            Ok(_) => Ok(()),
            Err(e) => Err(lease.sort(e)),
        }
    }
}

/// Sorts a Redis error into the store errors the domain knows.
pub(crate) fn sort_error(error: RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
    {
        return StoreError::Unavailable(error.to_string());
    }
    match error.code() {
        // Scripts report unparseable stored data as `CORRUPT <key> field …`.
        Some("CORRUPT") => {
            let detail = error.detail().unwrap_or_default().to_owned();
            let key = detail
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            StoreError::Corrupt { key, detail }
        }
        // Passing states of the server: retrying later succeeds.
        Some(
            "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "OOM",
        ) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Protocol(error.to_string()),
    }
}
