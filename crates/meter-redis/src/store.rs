//! The one Redis store every adapter borrows: the connection pool, the
//! pipeline in front of it, a generic script call and hash read, and the
//! health ping.
//!
//! Adapters build a [`ScriptCall`] (keys, then arguments) and decode the
//! reply into a [`Layout`]; they never see connections, pipelining or
//! `NOSCRIPT`. A Redis Cluster connection takes the single node's place
//! here, behind the same calls.

use std::sync::{Arc, Mutex};

use meter_core::StoreError;
use redis::Value;

use crate::{
    InvalidRedisUrl, RedisConfig,
    connection::{NodePool, sort_command_error, sort_request_error},
    pipeliner::{Driver, Pipeliner},
    script::{Layout, ScriptCall},
};

/// The Redis store; clones share one pool and one pipeline.
#[derive(Clone, Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: NodePool,
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
        let pool = NodePool::open(config)?;
        let (pipeliner, driver) = Pipeliner::start(pool.clone(), config.max_pending);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                pipeliner,
                driver: Mutex::new(Some(driver)),
            }),
        })
    }

    /// Runs a script and decodes its reply into the layout `R`.
    pub async fn run<R: Layout>(&self, call: ScriptCall) -> Result<R, StoreError> {
        let name = call.script.name();
        let value = self
            .inner
            .pipeliner
            .send(call.command, Some(call.script))
            .await?;
        decode(value, name)
    }

    /// Reads the fields of layout `R` from the hash at `key` (one `HMGET`);
    /// every field is absent when the hash does not exist.
    pub async fn read_hash<R: Layout>(&self, key: &str) -> Result<R, StoreError> {
        let mut command = redis::cmd("HMGET");
        command.arg(key).arg(R::NAMES);
        let value = self.inner.pipeliner.send(command, None).await?;
        decode(value, "HMGET")
    }

    /// Round-trips a PING on a pooled connection, outside the pipeline's
    /// bound, so health follows Redis even while meterd sheds load.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let lease = self.inner.pool.lease().await?;
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

/// The reply `value` of `what` as layout `R`; an error reply sorted.
fn decode<R: Layout>(value: Value, what: &str) -> Result<R, StoreError> {
    let unexpected = |detail: String| StoreError::Protocol(format!("{what} reply: {detail}"));
    let Value::Array(items) = value.extract_error().map_err(|e| sort_command_error(&e))? else {
        return Err(unexpected("not an array".into()));
    };
    // Straight from the reply's buffers: a bulk string's bytes become the
    // String without a copy.
    let values = items
        .into_iter()
        .map(|item| match item {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| unexpected(e.to_string())),
            Value::SimpleString(text) => Ok(Some(text)),
            other => Err(unexpected(format!("{other:?} in an array of strings"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    R::from_values(values).map_err(|e| StoreError::Protocol(format!("{what}: {e}")))
}
