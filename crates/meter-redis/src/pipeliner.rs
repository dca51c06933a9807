//! Auto-pipelining: the commands of concurrent calls leave in one write.
//!
//! Each call hands its command to one driver task and awaits the reply. The
//! driver yields once before it takes a batch, so that every call that is
//! ready to run in this scheduler tick has queued its command first; then
//! the whole batch goes to Redis as one pipeline (one write, one read of the
//! replies) on a pooled connection. A batch is not a transaction: each
//! command, here a script, stays atomic on its own, and Redis answers each
//! on its own. Several batches may be in flight at once.
//!
//! Without this, the multiplexed connection's writer runs right after each
//! call that wakes it and sends one command per write system call: under
//! load, a large part of meterd's and Redis's cost per request (BENCHMARKS.md).
//!
//! The queue is unbounded; what bounds it is the number of calls in flight,
//! which HTTP/2's stream limits and the callers' concurrency bound.

use meter_core::StoreError;
use redis::{Cmd, Pipeline, RedisError, Value, aio::ConnectionLike};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};

use crate::RedisStore;

/// Most commands in one pipeline; a larger queue leaves in several.
const MAX_BATCH: usize = 256;

type Reply = Result<Value, StoreError>;

struct Job {
    command: Cmd,
    reply: oneshot::Sender<Reply>,
}

/// The queue in front of the driver task; the task ends when this is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Pipeliner {
    queue: mpsc::UnboundedSender<Job>,
}

impl Pipeliner {
    /// Starts the driver task on the current Tokio runtime.
    pub(crate) fn start(store: RedisStore) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(drive(store, jobs));
        Self { queue }
    }

    /// Sends `command` in the next batch and waits for its reply. A server
    /// error reply comes back as `Ok(Value::ServerError)`.
    pub(crate) async fn send(&self, command: Cmd) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { command, reply })
            .map_err(|_| StoreError::Unavailable("the Redis pipeline has stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the Redis pipeline dropped the call".into(),
            ))
        })
    }
}

async fn drive(store: RedisStore, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(first) = job else { break };
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                in_flight.spawn(send_batch(store.clone(), batch));
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    // The ledger is gone: finish what was sent, so no call is left hanging.
    while in_flight.join_next().await.is_some() {}
}

async fn send_batch(store: RedisStore, batch: Vec<Job>) {
    let count = batch.len();
    let mut pipeline = Pipeline::with_capacity(count);
    let mut replies = Vec::with_capacity(count);
    for job in batch {
        pipeline.add_command(job.command);
        replies.push(job.reply);
    }
    let answers = match store.lease().await {
        Ok(mut lease) => lease
            .connection
            .req_packed_commands(&pipeline, 0, count)
            .await
            .map_err(|e| lease.sort(e)),
        Err(e) => Err(e),
    };
    match answers {
        Ok(values) if values.len() == count => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(Ok(value));
            }
        }
        Ok(values) => {
            let error =
                StoreError::Protocol(format!("{count} commands got {} replies", values.len()));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// A server error reply as the error it is; other replies pass.
pub(crate) fn server_error(value: Value) -> Result<Value, RedisError> {
    value.extract_error()
}
