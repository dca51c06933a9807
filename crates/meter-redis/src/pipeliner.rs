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
//!
//! On a Redis Cluster a batch is split by the master of each command's slot,
//! one pipeline per master. A command answered `MOVED` or `ASK` was not run:
//! it is sent again to the node named (after `ASKING` for `ASK`), and a
//! `TRYAGAIN` (a slot half-way through a migration) after a short pause, at
//! most [`MAX_REDIRECTS`] times.

use std::{sync::Arc, time::Duration};

use meter_core::StoreError;
use redis::{Cmd, Pipeline, Value, aio::ConnectionLike};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use crate::{
    cluster::{Cluster, Refresher},
    connection::{NodePool, sort_request_error},
    script::LuaScript,
};

/// Most commands in one pipeline; a larger queue leaves in several.
const MAX_BATCH: usize = 256;

/// Most times one command follows `MOVED` or `ASK`.
const MAX_REDIRECTS: u8 = 5;

/// The first pause before a command answered `TRYAGAIN` is sent again;
/// doubled each time up to [`TRY_AGAIN_AT_MOST`]. A command is tried again
/// for as long as a reply may take ([`RedisConfig::response_timeout`]).
///
/// [`RedisConfig::response_timeout`]: crate::RedisConfig::response_timeout
const TRY_AGAIN_AFTER: Duration = Duration::from_millis(5);
const TRY_AGAIN_AT_MOST: Duration = Duration::from_millis(100);

/// Where commands go: one node, or the master of each command's slot.
#[derive(Clone, Debug)]
pub(crate) enum Nodes {
    /// One Redis node.
    Single(NodePool),
    /// A Redis Cluster.
    Cluster(Arc<Cluster>),
}

/// A command's reply: a value (which may be an error reply), or why none came.
pub(crate) type Reply = Result<Value, StoreError>;

struct Job {
    command: Cmd,
    call: Call,
}

/// A command's call, apart from the command itself.
struct Call {
    /// The script an `EVALSHA` runs, to load it on `NOSCRIPT`.
    script: Option<&'static LuaScript>,
    /// The cluster slot of the command's keys; `None` for a command without keys.
    slot: Option<u16>,
    /// How many `MOVED` and `ASK` redirects the command has followed.
    redirects: u8,
    /// When it was first answered `TRYAGAIN`, and the pause before its next try.
    try_again: Option<(Instant, Duration)>,
    reply: oneshot::Sender<Reply>,
    /// Held until the reply is delivered: the bound on pending commands.
    _permit: Pending,
}

/// A pending command's permit, counted in `meter_redis_pending` until the
/// command's reply is delivered (or it fails), whether or not its caller
/// still waits.
#[derive(Debug)]
struct Pending {
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        meter_metrics::metrics().redis_pending.inc();
        Self { _permit: permit }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        meter_metrics::metrics().redis_pending.dec();
    }
}

/// The queue in front of the driver task.
#[derive(Debug)]
pub(crate) struct Pipeliner {
    queue: mpsc::UnboundedSender<Job>,
    permits: Arc<Semaphore>,
    max_pending: usize,
}

/// What ends the driver task: the signal, and its handle to await; and the
/// cluster's slot-map task, if any, which ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Driver {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    refresher: Option<Refresher>,
}

impl Driver {
    /// Stops taking commands, lets the queued and in-flight ones finish, and
    /// waits for the task to end.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the Redis pipeline task failed");
        }
        drop(self.refresher);
    }
}

impl Pipeliner {
    /// Starts the driver task on the current Tokio runtime; [`Driver::stop`]
    /// also ends `refresher`. With `wait`, every batch that holds a script
    /// call ends with a `WAIT` for the replicas.
    pub(crate) fn start(
        nodes: Nodes,
        max_pending: usize,
        refresher: Option<Refresher>,
        wait: Option<Wait>,
    ) -> (Self, Driver) {
        let (queue, jobs) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(drive(nodes, wait, jobs, stopped));
        let max_pending = max_pending.max(1);
        let pipeliner = Self {
            queue,
            permits: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        };
        (
            pipeliner,
            Driver {
                stop,
                task,
                refresher,
            },
        )
    }

    /// Sends `command`, whose keys are in `slot`, in the next batch and
    /// waits for its reply. A server error reply comes back as
    /// `Ok(Value::ServerError)`.
    pub(crate) async fn send(
        &self,
        command: Cmd,
        script: Option<&'static LuaScript>,
        slot: Option<u16>,
    ) -> Reply {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(StoreError::Overloaded(format!(
                "{} Redis commands are already queued or awaiting a reply",
                self.max_pending
            )));
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            call: Call {
                script,
                slot,
                redirects: 0,
                try_again: None,
                reply,
                _permit: Pending::new(permit),
            },
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
    nodes: Nodes,
    wait: Option<Wait>,
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
                batch.retain(|job| !job.call.reply.is_closed());
                for (pool, jobs) in nodes.split(batch) {
                    in_flight.spawn(send_batch(nodes.clone(), pool, jobs, false, wait));
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

impl Nodes {
    /// The batch as one group of jobs per node. On a cluster, a job whose
    /// slot no master serves fails `Unavailable` here, unsent.
    fn split(&self, batch: Vec<Job>) -> Vec<(NodePool, Vec<Job>)> {
        let cluster = match self {
            Nodes::Single(_) if batch.is_empty() => return Vec::new(),
            Nodes::Single(pool) => return vec![(pool.clone(), batch)],
            Nodes::Cluster(cluster) => cluster,
        };
        let map = cluster.map();
        let mut groups: Vec<(usize, Vec<Job>)> = Vec::new();
        for job in batch {
            let Some(owner) = map.owner(job.call.slot) else {
                cluster.suspect();
                let _ = job.call.reply.send(Err(StoreError::Unavailable(format!(
                    "no master of the Redis Cluster is known to serve slot {}",
                    job.call.slot.unwrap_or_default()
                ))));
                continue;
            };
            match groups.iter_mut().find(|(index, _)| *index == owner) {
                Some((_, jobs)) => jobs.push(job),
                None => groups.push((owner, vec![job])),
            }
        }
        groups
            .into_iter()
            .map(|(index, jobs)| (map.master(index).pool.clone(), jobs))
            .collect()
    }
}

impl Call {
    /// Hands `reply` to the caller, if it still waits; what a credits
    /// script settled is counted either way.
    fn answer(self, reply: Reply) {
        if let (Some(script), Ok(value)) = (self.script, &reply)
            && script.settles()
        {
            crate::credits::count_settled(value);
        }
        let _ = self.reply.send(reply);
    }

    /// Counts one more `TRYAGAIN`: `false` once the command has been tried
    /// again for `patience`, else `true` with the next pause set.
    fn try_again(&mut self, patience: Duration) -> bool {
        match &mut self.try_again {
            None => {
                self.try_again = Some((Instant::now(), TRY_AGAIN_AFTER));
                true
            }
            Some((since, _)) if since.elapsed() >= patience => false,
            Some((_, pause)) => {
                *pause = (*pause * 2).min(TRY_AGAIN_AT_MOST);
                true
            }
        }
    }
}

/// Where a command was sent instead of being run.
enum Redirect {
    /// `MOVED <slot> <host:port>`: the slot lives there now.
    Moved(u16, String),
    /// `ASK <slot> <host:port>`: the key is being migrated there; ask once.
    Ask(String),
    /// `TRYAGAIN`: the keys are split by a migration in progress.
    TryAgain,
}

/// The redirect `reply` asks for; a node without a host in it is `host`.
fn redirect(reply: &Reply, host: &str) -> Option<Redirect> {
    let Ok(Value::ServerError(error)) = reply else {
        return None;
    };
    let target = || {
        let mut parts = error.details()?.split_whitespace();
        let slot = parts.next()?.parse().ok()?;
        let address = parts.next()?;
        let address = match address.strip_prefix(':') {
            Some(port) => format!("{host}:{port}"),
            None => address.to_owned(),
        };
        Some((slot, address))
    };
    match error.code() {
        "MOVED" => target().map(|(slot, address)| Redirect::Moved(slot, address)),
        "ASK" => target().map(|(_, address)| Redirect::Ask(address)),
        "TRYAGAIN" => Some(Redirect::TryAgain),
        _ => None,
    }
}

/// Sends `jobs` to the node of `pool` (each after `ASKING` when `asking`),
/// answers each call, and on a cluster follows redirects.
async fn send_batch(
    nodes: Nodes,
    pool: NodePool,
    jobs: Vec<Job>,
    asking: bool,
    wait: Option<Wait>,
) {
    let mut rounds = vec![(pool, jobs, asking)];
    while let Some((pool, jobs, asking)) = rounds.pop() {
        let mut pipeline = Pipeline::with_capacity(jobs.len());
        let mut calls = Vec::with_capacity(jobs.len());
        for Job { command, call } in jobs {
            pipeline.add_command(command);
            calls.push(call);
        }
        let replies = exchange(&pool, &pipeline, &calls, asking, wait).await;
        let Nodes::Cluster(cluster) = &nodes else {
            for (call, reply) in calls.into_iter().zip(replies) {
                call.answer(reply);
            }
            continue;
        };
        let next = follow(cluster, &pool, asking, &pipeline, calls, replies);
        rounds.extend(next.moved);
        if !next.try_again.is_empty() || !next.try_again_here.is_empty() {
            let pause = next
                .try_again
                .iter()
                .chain(&next.try_again_here)
                .filter_map(|job| job.call.try_again.map(|(_, pause)| pause))
                .max()
                .unwrap_or(TRY_AGAIN_AFTER);
            tokio::time::sleep(pause).await;
            rounds.extend(
                nodes
                    .split(next.try_again)
                    .into_iter()
                    .map(|(pool, jobs)| (pool, jobs, false)),
            );
            if !next.try_again_here.is_empty() {
                rounds.push((pool, next.try_again_here, true));
            }
        }
    }
}

/// What one round on a cluster left to send again.
#[derive(Default)]
struct Rounds {
    /// Redirected by `MOVED` or `ASK`: per node, and whether to ask.
    moved: Vec<(NodePool, Vec<Job>, bool)>,
    /// Answered `TRYAGAIN` by a slot's owner: sent by the slot map again.
    try_again: Vec<Job>,
    /// Answered `TRYAGAIN` by an importing node: asked there again.
    try_again_here: Vec<Job>,
}

/// Answers each call of a round sent to `pool` on `cluster`, except those
/// redirected (they did not run) within their budget: those are returned
/// to be sent again.
fn follow(
    cluster: &Cluster,
    pool: &NodePool,
    asking: bool,
    pipeline: &Pipeline,
    calls: Vec<Call>,
    replies: Vec<Reply>,
) -> Rounds {
    if replies.iter().any(Result::is_err) {
        cluster.suspect();
    }
    let mut next = Rounds::default();
    for ((mut call, reply), command) in calls.into_iter().zip(replies).zip(pipeline.cmd_iter()) {
        let redirect = match redirect(&reply, pool.host()) {
            None => {
                call.answer(reply);
                continue;
            }
            Some(Redirect::TryAgain) if call.try_again(cluster.patience()) => Redirect::TryAgain,
            Some(redirect @ (Redirect::Moved(..) | Redirect::Ask(_)))
                if call.redirects < MAX_REDIRECTS =>
            {
                call.redirects += 1;
                redirect
            }
            // TRYAGAIN past the patience: Redis's own refusal says it.
            Some(Redirect::TryAgain) => {
                call.answer(reply);
                continue;
            }
            Some(_) => {
                let _ = call.reply.send(Err(StoreError::Unavailable(format!(
                    "the Redis Cluster redirected the call {MAX_REDIRECTS} times \
                     (slots are moving); it was not applied"
                ))));
                continue;
            }
        };
        // A redirected command did not run; one whose caller has gone is
        // not sent again.
        if call.reply.is_closed() {
            continue;
        }
        let job = Job {
            command: command.clone(),
            call,
        };
        let (target, ask) = match redirect {
            // Asked of an importing node, TRYAGAIN means the keys are still
            // split: that node is asked again, not the old owner.
            Redirect::TryAgain if asking => {
                next.try_again_here.push(job);
                continue;
            }
            Redirect::TryAgain => {
                next.try_again.push(job);
                continue;
            }
            Redirect::Moved(slot, address) => (cluster.learn(slot, &address), false),
            Redirect::Ask(address) => (cluster.node(&address), true),
        };
        let target = match target {
            Ok(target) => target,
            Err(error) => {
                let _ = job.call.reply.send(Err(error));
                continue;
            }
        };
        match next
            .moved
            .iter_mut()
            .find(|(pool, _, asked)| pool.same_node(&target) && *asked == ask)
        {
            Some((_, jobs, _)) => jobs.push(job),
            None => next.moved.push((target, vec![job], ask)),
        }
    }
    next
}

/// Sends `pipeline` (each command after `ASKING` when `asking`) and reloads
/// the scripts Redis did not know; one reply per call.
async fn exchange(
    pool: &NodePool,
    pipeline: &Pipeline,
    calls: &[Call],
    asking: bool,
    wait: Option<Wait>,
) -> Vec<Reply> {
    // Reads alone change nothing to wait for.
    let wait = wait.filter(|_| {
        calls
            .iter()
            .any(|call| call.script.is_some_and(|s| s.writes()))
    });
    match send_commands(pool, pipeline, asking, wait).await {
        Ok((values, confirmed)) => {
            let mut replies: Vec<Reply> = values.into_iter().map(Ok).collect();
            if let Err(why) = confirmed {
                let all: Vec<usize> = (0..calls.len()).collect();
                unconfirmed(&why, calls, &all, &mut replies);
            }
            reload_unknown_scripts(pool, pipeline, calls, &mut replies, asking, wait).await;
            replies
        }
        Err(error) => vec![Err(error); calls.len()],
    }
}

/// How many replicas must have every change before its call is answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    /// `WAIT`'s number of replicas.
    pub(crate) replicas: u32,
    /// `WAIT`'s timeout.
    pub(crate) timeout: Duration,
}

/// Whether the replicas confirmed a batch's changes; `Err` says why not.
type Confirmation = Result<(), String>;

/// Sends the commands of `pipeline`, each after `ASKING` when `asking`,
/// then `WAIT` when `wait` is set; their replies, and whether the replicas
/// confirmed them (always, without `wait`).
async fn send_commands(
    pool: &NodePool,
    pipeline: &Pipeline,
    asking: bool,
    wait: Option<Wait>,
) -> Result<(Vec<Value>, Confirmation), StoreError> {
    let count = pipeline.len();
    if !asking && wait.is_none() {
        return Ok((round_trip(pool, pipeline, count).await?, Ok(())));
    }
    let mut wire = if asking {
        with_asking(pipeline)
    } else {
        pipeline.clone()
    };
    let sent = wire.len();
    if let Some(wait) = wait {
        let mut command = redis::cmd("WAIT");
        command
            .arg(wait.replicas)
            .arg(wait.timeout.as_millis().max(1));
        wire.add_command(command);
    }
    let mut values = round_trip(pool, &wire, wire.len()).await?;
    let confirmed = match wait {
        Some(wait) => match values.drain(sent..).next() {
            Some(Value::Int(acked)) if acked >= i64::from(wait.replicas) => Ok(()),
            Some(Value::Int(acked)) => Err(format!(
                "{acked} of {} replica(s) confirmed it within {:?}",
                wait.replicas, wait.timeout
            )),
            // WAIT refused (on a replica, by an ACL, by a proxy): the changes
            // may still have been made.
            Some(Value::ServerError(error)) => Err(format!("WAIT failed: {error}")),
            other => Err(format!("WAIT answered {other:?}")),
        },
        None => Ok(()),
    };
    let values = if asking {
        answers_after_asking(values)
    } else {
        values
    };
    Ok((values, confirmed))
}

/// Turns the replies of the script calls at `indices` that ran into
/// "outcome unknown": their change is on the master but not confirmed on
/// the replicas (`why`), so a failover may lose it.
fn unconfirmed(why: &str, calls: &[Call], indices: &[usize], replies: &mut [Reply]) {
    for &i in indices {
        let ran = matches!(&replies[i], Ok(value) if !matches!(value, Value::ServerError(_)));
        if calls[i].script.is_some_and(|s| s.writes()) && ran {
            replies[i] = Err(StoreError::OutcomeUnknown(format!(
                "the change is on the Redis master, but {why}; a failover may lose it"
            )));
        }
    }
}

/// `pipeline` with `ASKING` before each command.
fn with_asking(pipeline: &Pipeline) -> Pipeline {
    let mut asked = Pipeline::with_capacity(pipeline.len() * 2);
    for command in pipeline.cmd_iter() {
        asked.add_command(redis::cmd("ASKING"));
        asked.add_command(command.clone());
    }
    asked
}

/// The replies of the commands of a [`with_asking`] pipeline, not of its `ASKING`s.
fn answers_after_asking(values: Vec<Value>) -> Vec<Value> {
    values.into_iter().skip(1).step_by(2).collect()
}

/// Loads each script Redis answered `NOSCRIPT` for, and resends those calls,
/// all in one more round trip.
async fn reload_unknown_scripts(
    pool: &NodePool,
    pipeline: &Pipeline,
    jobs: &[Call],
    replies: &mut [Reply],
    asking: bool,
    wait: Option<Wait>,
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
    match send_commands(pool, &retry, asking, wait).await {
        Ok((values, confirmed)) => {
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
            if let Err(why) = confirmed {
                unconfirmed(&why, jobs, &stale, replies);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error_reply(resp: &str) -> Reply {
        Ok(redis::parse_redis_value(resp.as_bytes()).expect("a RESP error"))
    }

    #[test]
    fn redirects_name_the_slot_and_node_and_a_missing_host_is_the_asked_one() {
        let moved = redirect(&error_reply("-MOVED 3999 10.0.0.2:6381\r\n"), "10.0.0.1");
        assert!(matches!(moved, Some(Redirect::Moved(3999, a)) if a == "10.0.0.2:6381"));
        let moved = redirect(&error_reply("-MOVED 3999 :6381\r\n"), "10.0.0.1");
        assert!(matches!(moved, Some(Redirect::Moved(3999, a)) if a == "10.0.0.1:6381"));
        let ask = redirect(&error_reply("-ASK 12 [::1]:7002\r\n"), "h");
        assert!(matches!(ask, Some(Redirect::Ask(a)) if a == "[::1]:7002"));
        let again = redirect(
            &error_reply("-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            "h",
        );
        assert!(matches!(again, Some(Redirect::TryAgain)));
        for other in [
            "-ERR unknown\r\n",
            "-MOVED nonsense\r\n",
            "-CLUSTERDOWN down\r\n",
        ] {
            assert!(redirect(&error_reply(other), "h").is_none(), "{other}");
        }
        assert!(redirect(&Ok(Value::Okay), "h").is_none());
        assert!(redirect(&Err(StoreError::OutcomeUnknown("x".into())), "h").is_none());
    }

    #[test]
    fn replies_after_asking_are_the_commands_own() {
        let values = vec![Value::Okay, Value::Int(1), Value::Okay, Value::Int(2)];
        assert_eq!(answers_after_asking(values), [Value::Int(1), Value::Int(2)]);
        let mut pipeline = Pipeline::new();
        pipeline.add_command(redis::cmd("GET").arg("a").clone());
        pipeline.add_command(redis::cmd("GET").arg("b").clone());
        let asked: Vec<Vec<u8>> = with_asking(&pipeline)
            .cmd_iter()
            .map(Cmd::get_packed_command)
            .collect();
        assert_eq!(
            asked,
            [
                redis::cmd("ASKING").get_packed_command(),
                redis::cmd("GET").arg("a").get_packed_command(),
                redis::cmd("ASKING").get_packed_command(),
                redis::cmd("GET").arg("b").get_packed_command(),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn try_again_backs_off_and_gives_up_after_its_patience() {
        let (reply, _answer) = oneshot::channel();
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let mut call = Call {
            script: None,
            slot: None,
            redirects: 0,
            try_again: None,
            reply,
            _permit: Pending::new(permit),
        };
        let patience = Duration::from_millis(300);
        let mut pauses = Vec::new();
        while call.try_again(patience) {
            let pause = call.try_again.expect("counting").1;
            pauses.push(pause.as_millis());
            tokio::time::advance(pause).await;
        }
        assert_eq!(pauses, [5, 10, 20, 40, 80, 100, 100]);
    }
}
