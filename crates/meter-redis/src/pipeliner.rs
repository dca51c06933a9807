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
//! Bounded: at most `max_pending` commands are queued or awaiting their
//! reply (a permit each). Past that, a call fails `Overloaded` at once and
//! nothing is sent, so a frozen Redis cannot make meterd's memory grow.
//! A call whose caller has gone (deadline, cancellation) before its batch
//! leaves is dropped unsent. A script that Redis no longer knows (`NOSCRIPT`,
//! after a restart or `SCRIPT FLUSH`) is loaded and its calls resent in one
//! more round trip per batch.

use std::sync::Arc;

use meter_core::StoreError;
use redis::{Cmd, Pipeline, Value, aio::ConnectionLike};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
};

use crate::{
    connection::{NodePool, sort_request_error},
    script::LuaScript,
};

/// Most commands in one pipeline; a larger queue leaves in several.
const MAX_BATCH: usize = 256;

/// A command's reply: a value (which may be an error reply), or why none came.
pub(crate) type Reply = Result<Value, StoreError>;

struct Job {
    command: Cmd,
    /// The script an `EVALSHA` runs, to load it on `NOSCRIPT`.
    script: Option<&'static LuaScript>,
    reply: oneshot::Sender<Reply>,
    /// Held until the reply is delivered: the bound on pending commands.
    _permit: OwnedSemaphorePermit,
}

/// The queue in front of the driver task.
#[derive(Debug)]
pub(crate) struct Pipeliner {
    queue: mpsc::UnboundedSender<Job>,
    permits: Arc<Semaphore>,
    max_pending: usize,
}

/// What ends the driver task: the signal, and its handle to await.
#[derive(Debug)]
pub(crate) struct Driver {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Driver {
    /// Stops taking commands, lets the queued and in-flight ones finish, and
    /// waits for the task to end.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the Redis pipeline task failed");
        }
    }
}

impl Pipeliner {
    /// Starts the driver task on the current Tokio runtime.
    pub(crate) fn start(pool: NodePool, max_pending: usize) -> (Self, Driver) {
        let (queue, jobs) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(drive(pool, jobs, stopped));
        let max_pending = max_pending.max(1);
        let pipeliner = Self {
            queue,
            permits: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        };
        (pipeliner, Driver { stop, task })
    }

    /// Sends `command` in the next batch and waits for its reply. A server
    /// error reply comes back as `Ok(Value::ServerError)`.
    pub(crate) async fn send(&self, command: Cmd, script: Option<&'static LuaScript>) -> Reply {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(StoreError::Overloaded(format!(
                "{} Redis commands are already queued or awaiting a reply",
                self.max_pending
            )));
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            script,
            reply,
            _permit: permit,
        };
        self.queue
            .send(job)
            .map_err(|_| StoreError::Unavailable("the Redis store is closed".into()))?;
        // The driver drops a call unanswered only if its batch task died,
        // which may have been after the batch was sent.
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::OutcomeUnknown(
                "the Redis pipeline dropped the call".into(),
            ))
        })
    }
}

async fn drive(
    pool: NodePool,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut in_flight = JoinSet::new();
    let mut stopping = false;
    loop {
        tokio::select! {
            // Dropping the store without closing it stops the driver too.
            _ = &mut stop, if !stopping => {
                stopping = true;
                // Refuse new calls; those already queued are still sent.
                jobs.close();
            }
            job = jobs.recv() => {
                let Some(first) = job else { break };
                tokio::task::yield_now().await;
                let mut batch = Vec::with_capacity(MAX_BATCH.min(jobs.len() + 1));
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                // A caller that has gone will never read the reply; its
                // command is not sent at all.
                batch.retain(|job| !job.reply.is_closed());
                if !batch.is_empty() {
                    in_flight.spawn(send_batch(pool.clone(), batch));
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// Sends `pipeline` on a leased connection; the replies, one per command.
async fn round_trip(
    pool: &NodePool,
    pipeline: &Pipeline,
    count: usize,
) -> Result<Vec<Value>, StoreError> {
    let mut lease = pool.lease().await?;
    let values = lease
        .connection
        .req_packed_commands(pipeline, 0, count)
        .await
        .map_err(|e| {
            lease.retire_on(&e);
            sort_request_error(&e)
        })?;
    if values.len() == count {
        Ok(values)
    } else {
        // The commands were sent: which ran cannot be told from a reply
        // that does not line up with them.
        Err(StoreError::OutcomeUnknown(format!(
            "{count} commands got {} replies",
            values.len()
        )))
    }
}

/// A job whose command is in a pipeline.
struct Sent {
    script: Option<&'static LuaScript>,
    reply: oneshot::Sender<Reply>,
    _permit: OwnedSemaphorePermit,
}

async fn send_batch(pool: NodePool, batch: Vec<Job>) {
    let count = batch.len();
    let mut pipeline = Pipeline::with_capacity(count);
    let mut jobs = Vec::with_capacity(count);
    for Job {
        command,
        script,
        reply,
        _permit,
    } in batch
    {
        pipeline.add_command(command);
        jobs.push(Sent {
            script,
            reply,
            _permit,
        });
    }
    let replies: Vec<Reply> = match round_trip(&pool, &pipeline, count).await {
        Ok(values) => {
            let mut replies: Vec<Reply> = values.into_iter().map(Ok).collect();
            reload_unknown_scripts(&pool, &pipeline, &jobs, &mut replies).await;
            replies
        }
        Err(error) => vec![Err(error); count],
    };
    for (job, reply) in jobs.into_iter().zip(replies) {
        let _ = job.reply.send(reply);
    }
}

/// Loads each script Redis answered `NOSCRIPT` for, and resends those calls,
/// all in one more round trip.
async fn reload_unknown_scripts(
    pool: &NodePool,
    pipeline: &Pipeline,
    jobs: &[Sent],
    replies: &mut [Reply],
) {
    let stale: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].script.is_some() && is_noscript(&replies[i]))
        .collect();
    if stale.is_empty() {
        return;
    }
    let mut scripts: Vec<&'static LuaScript> = Vec::new();
    for &i in &stale {
        if let Some(script) = jobs[i].script
            && !scripts.iter().any(|s| s.hash() == script.hash())
        {
            scripts.push(script);
        }
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut retry = Pipeline::with_capacity(scripts.len() + stale.len());
    for script in &scripts {
        retry.add_command(script.load_command());
    }
    for &i in &stale {
        retry.add_command(commands[i].clone());
    }
    let outcome = round_trip(pool, &retry, scripts.len() + stale.len()).await;
    match outcome {
        Ok(values) => {
            let (loads, resent) = values.split_at(scripts.len());
            for (&i, value) in stale.iter().zip(resent) {
                // A call whose own script failed to load did not run (its
                // resend met NOSCRIPT again): it answers that failure. Every
                // other call answers its own resent reply, whatever it says.
                let load = jobs[i]
                    .script
                    .and_then(|script| scripts.iter().position(|s| s.hash() == script.hash()))
                    .and_then(|position| loads.get(position))
                    .filter(|load| matches!(load, Value::ServerError(_)));
                replies[i] = Ok(match load {
                    Some(failed) if is_noscript_value(value) => failed.clone(),
                    _ => value.clone(),
                });
            }
        }
        Err(error) => {
            for &i in &stale {
                replies[i] = Err(error.clone());
            }
        }
    }
}

fn is_noscript(reply: &Reply) -> bool {
    matches!(reply, Ok(value) if is_noscript_value(value))
}

fn is_noscript_value(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}
