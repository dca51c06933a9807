//! Connections to one Redis node: the pool, the settings check on every new
//! connection, and the one place Redis errors are sorted. A cluster has a
//! pool per master ([`crate::cluster`]).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bb8::{ManageConnection, Pool, RunError};
use meter_core::StoreError;
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, RedisError, aio::MultiplexedConnection,
    io::tcp::TcpSettings,
};

use crate::{InvalidRedisUrl, RedisConfig};

/// A pool of multiplexed connections to one Redis node.
#[derive(Clone, Debug)]
pub(crate) struct NodePool {
    pool: Pool<NodeManager>,
    size: u32,
    /// `host:port`, for redirects and messages.
    address: Arc<str>,
}

/// Opens connections with the configured timeouts and checks each new one's settings.
#[derive(Debug)]
struct NodeManager {
    client: Client,
    config: AsyncConnectionConfig,
}

/// A multiplexed connection and the flag that retires it.
///
/// Calls clone the connection out of the pool and give the slot back at
/// once, so many calls share (and pipeline on) one socket; bb8 then never
/// sees their errors, hence the flag. A call whose connection failed sets
/// it; the pool drops a flagged connection the next time it would lend it
/// (see [`NodePool::lease`]) instead of handing it out again.
#[derive(Clone)]
pub(crate) struct NodeConnection {
    pub(crate) connection: MultiplexedConnection,
    broken: Arc<Broken>,
}

/// Whether a connection failed; shared by its clones, and counted in
/// `meter_redis_connections` until the last of them is dropped.
#[derive(Debug)]
struct Broken(AtomicBool);

impl Broken {
    fn new() -> Self {
        let metrics = meter_metrics::metrics();
        metrics.redis_connections.inc();
        metrics.redis_connections_opened.inc();
        Self(AtomicBool::new(false))
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        meter_metrics::metrics().redis_connections.dec();
    }
}

impl NodeConnection {
    /// Flags the connection for replacement when `error` means it is unusable.
    pub(crate) fn retire_on(&self, error: &RedisError) {
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
            || error.is_timeout()
        {
            self.broken.0.store(true, Ordering::Relaxed);
        }
    }

    fn is_broken(&self) -> bool {
        self.broken.0.load(Ordering::Relaxed)
    }
}

impl ManageConnection for NodeManager {
    type Connection = NodeConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        report_eviction_policy(&mut connection).await;
        Ok(NodeConnection {
            connection,
            broken: Arc::new(Broken::new()),
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING")
            .query_async::<()>(&mut conn.connection)
            .await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_broken()
    }
}

impl NodePool {
    /// Opens a pool of connections to the node `info` names. Fails only on
    /// settings the client refuses: an unreachable node is retried in the
    /// background and reported by calls and pings.
    pub(crate) fn open(
        info: ConnectionInfo,
        config: &RedisConfig,
    ) -> Result<Self, InvalidRedisUrl> {
        let invalid = |e: RedisError| InvalidRedisUrl(e.to_string());
        // Without TCP_NODELAY, Nagle's algorithm holds small commands back
        // until the previous reply's ACK: tens of ms per call at low load.
        let info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let address = Arc::from(info.addr().to_string());
        let client = match &config.tls {
            None => Client::open(info),
            Some(tls) => Client::build_with_tls(info, tls.certificates()),
        }
        .map_err(invalid)?;
        // Chosen here, not inherited: redis-rs would otherwise time every
        // request (a whole pipelined batch) out after its own 500 ms.
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let size = config.connections.max(1);
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(config.connect_timeout)
            .test_on_check_out(false)
            .build_unchecked(NodeManager {
                client,
                config: connection_config,
            });
        Ok(Self {
            pool,
            size,
            address,
        })
    }

    /// The node's host, as the URL or the cluster named it.
    pub(crate) fn host(&self) -> &str {
        self.address
            .rsplit_once(':')
            .map_or(&self.address, |(host, _)| host)
    }

    /// Whether both pools connect to the same `host:port`.
    pub(crate) fn same_node(&self, other: &NodePool) -> bool {
        self.address == other.address
    }

    /// Lends a connection not known to be broken; `Unavailable` when none
    /// can be had within the connect timeout (nothing was sent then).
    pub(crate) async fn lease(&self) -> Result<NodeConnection, StoreError> {
        // Each broken connection met here is dropped by the pool as it
        // returns (has_broken), so this ends within size + 1 rounds.
        for _ in 0..=self.size {
            let pooled = self.pool.get().await.map_err(|e| match e {
                RunError::User(e) => StoreError::Unavailable(format!("cannot connect: {e}")),
                RunError::TimedOut => {
                    StoreError::Unavailable("no Redis connection could be opened in time".into())
                }
            })?;
            if !pooled.is_broken() {
                return Ok(pooled.clone());
            }
        }
        Err(StoreError::Unavailable(
            "every Redis connection was broken; new ones are being opened".into(),
        ))
    }
}

/// Logs an error when Redis may evict keys: an evicted idempotency record
/// turns a retry into a second charge, an evicted balance loses credits.
async fn report_eviction_policy(connection: &mut MultiplexedConnection) {
    let reply: Result<HashMap<String, String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(connection)
        .await;
    match reply
        .as_ref()
        .map(|settings| settings.get("maxmemory-policy"))
    {
        Ok(Some(policy)) if policy == "noeviction" => {
            tracing::debug!(%policy, "Redis maxmemory-policy is noeviction");
        }
        Ok(Some(policy)) => tracing::error!(
            %policy,
            "Redis maxmemory-policy is {policy}, not noeviction: under memory pressure Redis may \
             evict idempotency records (a retried call would then apply twice) and balances \
             (credits would vanish). Set maxmemory-policy noeviction"
        ),
        Ok(None) => tracing::warn!(
            "Redis did not report its maxmemory-policy; make sure it is noeviction, or evicted \
             idempotency records and balances lose money"
        ),
        Err(error) => tracing::warn!(
            %error,
            "cannot read Redis maxmemory-policy (CONFIG may be disabled); make sure it is \
             noeviction, or evicted idempotency records and balances lose money"
        ),
    }
}

/// Sorts the error of a request that was sent, or may have been: whether it
/// ran is unknown unless the connection was refused.
pub(crate) fn sort_request_error(error: &RedisError) -> StoreError {
    if error.is_connection_refusal() {
        StoreError::Unavailable(error.to_string())
    } else if error.is_timeout() {
        StoreError::OutcomeUnknown(format!("Redis did not answer in time: {error}"))
    } else {
        StoreError::OutcomeUnknown(error.to_string())
    }
}

/// Sorts the error reply of one command. Redis refuses a command in a
/// passing state without running it, so those are `Unavailable`.
pub(crate) fn sort_command_error(error: &RedisError) -> StoreError {
    match error.code() {
        // Scripts report unparseable stored data as `CORRUPT <key> field …`,
        // before they write anything.
        Some("CORRUPT") => {
            let detail = error.detail().unwrap_or_default().to_owned();
            let key = detail
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            StoreError::Corrupt {
                what: String::new(),
                key,
                detail,
            }
        }
        // Each refuses a command (a script: its first write) before it
        // changes anything: a replica, a failover, too few replicas to write
        // to, a failed snapshot, full memory, a script still loading.
        Some(
            "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "OOM"
            | "NOREPLICAS" | "MISCONF" | "NOSCRIPT",
        ) => StoreError::Unavailable(format!("Redis refused the command: {error}")),
        // A cluster node names the node that serves the key instead of
        // running the command. The cluster path follows these; here, they
        // mean a plain redis:// URL names one node of a cluster.
        Some("MOVED" | "ASK") => StoreError::Unavailable(format!(
            "Redis sent the command to another node ({error}); if REDIS_URL names a node of \
             a Redis Cluster, use redis+cluster://host:port"
        )),
        _ => StoreError::Protocol(error.to_string()),
    }
}
