//! The one Redis store every adapter borrows: the connection pool, the
//! pipeline in front of it, a generic script call and command, and the
//! health ping.
//!
//! Adapters build a [`ScriptCall`] (keys, then arguments) and decode the
//! reply into a [`Layout`]; they never see connections, pipelining,
//! `NOSCRIPT`, or whether Redis is one node or a cluster: on a cluster each
//! command goes to the master of its keys' slot ([`crate::cluster`]).

use std::sync::{Arc, Mutex};

use meter_core::StoreError;
use redis::Value;

use crate::{
    InvalidRedisUrl, RedisConfig,
    cluster::Cluster,
    config::Deployment,
    connection::{NodePool, sort_command_error, sort_request_error},
    pipeliner::{Driver, Nodes, Pipeliner, Wait},
    script::{Layout, ScriptCall},
    slot::key_slot,
};

/// The Redis store; clones share one pool and one pipeline.
#[derive(Clone, Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: Nodes,
    pipeliner: Pipeliner,
    /// Taken by [`RedisStore::close`].
    driver: Mutex<Option<Driver>>,
}

impl RedisStore {
    /// Opens the store. Fails only on a malformed URL: an unreachable Redis
    /// is retried in the background and reported by calls and [`RedisStore::ping`].
    ///
    /// Must be called within a Tokio runtime: it starts the pipeline's task,
    /// which [`RedisStore::close`] ends.
    pub fn open(config: &RedisConfig) -> Result<Self, InvalidRedisUrl> {
        // Pick rustls's ring provider for rediss:// once, process-wide;
        // an error means one was installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (nodes, refresher) = match config.deployment()? {
            Deployment::Node(info) => (Nodes::Single(NodePool::open(*info, config)?), None),
            Deployment::Cluster(seeds) => {
                let cluster = Cluster::new(seeds, config);
                let refresher = cluster.keep_current();
                (Nodes::Cluster(cluster), Some(refresher))
            }
        };
        let wait = (config.wait_replicas > 0).then_some(Wait {
            replicas: config.wait_replicas,
            timeout: config.wait_timeout,
        });
        let (pipeliner, driver) =
            Pipeliner::start(nodes.clone(), config.max_pending, refresher, wait);
        Ok(Self {
            inner: Arc::new(Inner {
                nodes,
                pipeliner,
                driver: Mutex::new(Some(driver)),
            }),
        })
    }

    /// Runs a script and decodes its reply into the layout `R`.
    pub async fn run<R: Layout>(&self, call: ScriptCall) -> Result<R, StoreError> {
        let name = call.script.name();
        let values = self.run_values(call).await?;
        R::from_values(values).map_err(|e| StoreError::Protocol(format!("{name}: {e}")))
    }

    /// Runs a script and returns its reply as Redis sent it; an error reply sorted.
    pub async fn run_raw(&self, call: ScriptCall) -> Result<Value, StoreError> {
        self.ready().await?;
        let value = self
            .send(call.command, Some(call.script), call.slot)
            .await?;
        value.extract_error().map_err(|e| {
            count_error("error_reply");
            sort_command_error(&e)
        })
    }

    /// Runs a script whose reply is an array of strings (`''` and nil are
    /// absent), for replies longer than a layout.
    pub async fn run_values(&self, call: ScriptCall) -> Result<Vec<Option<String>>, StoreError> {
        self.ready().await?;
        let name = call.script.name();
        let value = self
            .send(call.command, Some(call.script), call.slot)
            .await?;
        strings(value, name)
    }

    /// Sends one command on `key` (which picks the cluster node) and returns
    /// its reply; an error reply sorted.
    pub async fn command(&self, command: redis::Cmd, key: &str) -> Result<Value, StoreError> {
        self.ready().await?;
        let slot = Some(key_slot(key.as_bytes()));
        let value = self.send(command, None, slot).await?;
        value.extract_error().map_err(|e| {
            count_error("error_reply");
            sort_command_error(&e)
        })
    }

    /// Sends through the pipeline, timing the round trip and counting failures.
    async fn send(
        &self,
        command: redis::Cmd,
        script: Option<&'static crate::script::LuaScript>,
        slot: Option<u16>,
    ) -> Result<Value, StoreError> {
        let metrics = meter_metrics::metrics();
        let started = std::time::Instant::now();
        let reply = self.inner.pipeliner.send(command, script, slot).await;
        metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &reply {
            count_error(match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::OutcomeUnknown(_) => "outcome_unknown",
                StoreError::Overloaded(_) => "overloaded",
                _ => "error",
            });
        }
        reply
    }

    /// Whether Redis is a cluster (keys of different slots may live on
    /// different nodes) rather than one node.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.nodes, Nodes::Cluster(_))
    }

    /// On a cluster just opened, waits for its slot map (as a call on one
    /// node waits for its first connection).
    async fn ready(&self) -> Result<(), StoreError> {
        match &self.inner.nodes {
            Nodes::Single(_) => Ok(()),
            Nodes::Cluster(cluster) => cluster.wait_known().await,
        }
    }

    /// Round-trips a PING on a pooled connection, outside the pipeline's
    /// bound, so health follows Redis even while meterd sheds load. On a
    /// cluster: every slot has a master, and each master answers and
    /// reports `cluster_state:ok`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pool = match &self.inner.nodes {
            Nodes::Single(pool) => pool,
            Nodes::Cluster(cluster) => return cluster.ping().await,
        };
        let lease = pool.lease().await?;
        let mut connection = lease.connection.clone();
        match redis::cmd("PING").query_async::<()>(&mut connection).await {
            Ok(()) => Ok(()),
            Err(error) => {
                lease.retire_on(&error);
                Err(sort_request_error(&error))
            }
        }
    }

    /// Stops taking calls, lets queued and in-flight ones finish, and ends
    /// the pipeline's task; later calls fail `Unavailable`. Closing twice is harmless.
    pub async fn close(&self) {
        let driver = self
            .inner
            .driver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(driver) = driver {
            driver.stop().await;
        }
    }
}

/// The reply `value` of `what` as an array of strings; an error reply sorted.
fn strings(value: Value, what: &str) -> Result<Vec<Option<String>>, StoreError> {
    let unexpected = |detail: String| StoreError::Protocol(format!("{what} reply: {detail}"));
    let Value::Array(items) = value.extract_error().map_err(|e| {
        count_error("error_reply");
        sort_command_error(&e)
    })?
    else {
        return Err(unexpected("not an array".into()));
    };
    // Straight from the reply's buffers: a bulk string's bytes become the
    // String without a copy.
    items
        .into_iter()
        .map(|item| match item {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => String::from_utf8(bytes)
                .map(|text| Some(text).filter(|t| !t.is_empty()))
                .map_err(|e| unexpected(e.to_string())),
            Value::SimpleString(text) => Ok(Some(text).filter(|t| !t.is_empty())),
            other => Err(unexpected(format!("{other:?} in an array of strings"))),
        })
        .collect()
}

/// Counts a failed Redis round trip of `kind`.
fn count_error(kind: &'static str) {
    meter_metrics::metrics()
        .redis_errors
        .get_or_create(&meter_metrics::Outcome { outcome: kind })
        .inc();
}
