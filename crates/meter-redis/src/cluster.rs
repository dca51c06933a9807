//! Redis Cluster: which master serves each slot, learnt from the cluster and
//! kept current, with a pool of connections per master.
//!
//! The slot map comes from `CLUSTER SLOTS`, asked of a known master (or of a
//! seed node when no master answers). It is asked again every few seconds,
//! and at once (at most every [`MIN_GAP`]) when a command meets a `MOVED`
//! redirect or a node stops answering, as after a failover. Following
//! `MOVED`, `ASK` and `TRYAGAIN` per command is the pipeline's job
//! ([`crate::pipeliner`]).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use meter_core::StoreError;
use redis::{ConnectionInfo, Value};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    InvalidRedisUrl, RedisConfig,
    config::at_address,
    connection::{NodePool, sort_command_error, sort_request_error},
    slot::SLOTS,
};

/// How often the slot map is asked for when nothing suggests a change.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The least time between two asks, however often a change is suspected.
const MIN_GAP: Duration = Duration::from_millis(100);

/// In [`SlotMap::owners`]: no master serves the slot.
const NO_MASTER: u16 = u16::MAX;

/// Most pools kept for nodes outside the slot map.
const MAX_OTHERS: usize = 16;

/// A Redis Cluster as meterd sees it: its seeds, its current slot map, and
/// whether that map is suspected to be out of date.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The nodes of the URL; also the template (user, password, TLS) of
    /// every node learnt from the cluster.
    seeds: Vec<ConnectionInfo>,
    config: RedisConfig,
    map: RwLock<Arc<SlotMap>>,
    /// Pools of nodes that serve no slot in the map: seeds asked for the
    /// map, and `ASK` targets still importing their first slot.
    others: Mutex<HashMap<String, NodePool>>,
    stale: Notify,
    /// Whether a slot map has been learnt: calls wait for the first.
    known: watch::Sender<bool>,
}

/// Which master serves each slot.
#[derive(Debug)]
pub(crate) struct SlotMap {
    /// An index into `masters` per slot, or [`NO_MASTER`].
    owners: Box<[u16]>,
    masters: Vec<Master>,
}

/// A master node: its `host:port` and the pool of connections to it.
#[derive(Clone, Debug)]
pub(crate) struct Master {
    pub(crate) address: String,
    pub(crate) pool: NodePool,
}

impl SlotMap {
    fn empty() -> Self {
        Self {
            owners: vec![NO_MASTER; SLOTS].into_boxed_slice(),
            masters: Vec::new(),
        }
    }

    /// The index of the master serving `slot` (any master for a command
    /// without a key); `None` when no master serves it.
    pub(crate) fn owner(&self, slot: Option<u16>) -> Option<usize> {
        match slot {
            Some(slot) => match self.owners.get(usize::from(slot)) {
                Some(&owner) if owner != NO_MASTER => Some(usize::from(owner)),
                _ => None,
            },
            None => (!self.masters.is_empty()).then_some(0),
        }
    }

    /// The master at `index`, as [`SlotMap::owner`] gave it.
    pub(crate) fn master(&self, index: usize) -> &Master {
        &self.masters[index]
    }

    /// The first slot no master serves, if any.
    fn first_unserved(&self) -> Option<usize> {
        self.owners.iter().position(|&owner| owner == NO_MASTER)
    }

    /// The masters that serve at least one slot.
    fn serving(&self) -> Vec<&Master> {
        let owners: HashSet<u16> = self.owners.iter().copied().collect();
        (0..self.masters.len())
            .filter(|&i| u16::try_from(i).is_ok_and(|i| owners.contains(&i)))
            .map(|i| &self.masters[i])
            .collect()
    }

    fn index_of(&self, address: &str) -> Option<usize> {
        self.masters.iter().position(|m| m.address == address)
    }
}

impl Cluster {
    /// A cluster reached through `seeds`, its slot map not known yet (see
    /// [`Cluster::keep_current`]).
    pub(crate) fn new(seeds: Vec<ConnectionInfo>, config: &RedisConfig) -> Arc<Self> {
        Arc::new(Self {
            seeds,
            config: config.clone(),
            map: RwLock::new(Arc::new(SlotMap::empty())),
            others: Mutex::default(),
            stale: Notify::new(),
            known: watch::Sender::new(false),
        })
    }

    /// How long a command answered `TRYAGAIN` is tried again: as long as a
    /// reply may take.
    pub(crate) fn patience(&self) -> Duration {
        self.config.response_timeout
    }

    /// The current slot map.
    pub(crate) fn map(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn install(&self, map: SlotMap) {
        let known = !map.masters.is_empty();
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        if known {
            self.known
                .send_if_modified(|was| !std::mem::replace(was, true));
        }
    }

    /// Waits, at most the connect timeout, until a slot map has been learnt
    /// (right after start); `Unavailable` when none has (nothing was sent).
    pub(crate) async fn wait_known(&self) -> Result<(), StoreError> {
        if *self.known.borrow() {
            return Ok(());
        }
        let mut known = self.known.subscribe();
        match tokio::time::timeout(self.config.connect_timeout, known.wait_for(|k| *k)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StoreError::Unavailable(
                "no node of the Redis Cluster has answered yet".into(),
            )),
        }
    }

    /// Asks for a fresh slot map soon: a node did not answer, or redirected.
    pub(crate) fn suspect(&self) {
        self.stale.notify_one();
    }

    /// Learns from a `MOVED` that `address` serves `slot` now, and asks for
    /// the whole map soon; the pool of that master.
    pub(crate) fn learn(&self, slot: u16, address: &str) -> Result<NodePool, StoreError> {
        self.suspect();
        // Under the lock, so that two redirects at once both count.
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut masters = map.masters.clone();
        let index = match map.index_of(address) {
            Some(index) => index,
            None => {
                masters.push(self.master(address)?);
                masters.len() - 1
            }
        };
        let pool = masters[index].pool.clone();
        let mut owners = map.owners.clone();
        if let (Some(owner), Ok(index)) = (owners.get_mut(usize::from(slot)), u16::try_from(index))
        {
            *owner = index;
        }
        *map = Arc::new(SlotMap { owners, masters });
        Ok(pool)
    }

    /// The pool of the node at `address` (an `ASK` target): the master's
    /// own when it is one, else one kept for it.
    pub(crate) fn node(&self, address: &str) -> Result<NodePool, StoreError> {
        let current = self.map();
        match current.index_of(address) {
            Some(index) => Ok(current.masters[index].pool.clone()),
            None => Ok(self.master(address)?.pool),
        }
    }

    /// The node at `address` as a master: the pool kept for it among the
    /// others, or a new one.
    fn master(&self, address: &str) -> Result<Master, StoreError> {
        let kept = self
            .others
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .cloned();
        let pool = match kept {
            Some(pool) => pool,
            None => {
                let pool = self.open(address)?;
                self.keep(address, &pool);
                pool
            }
        };
        Ok(Master {
            address: address.to_owned(),
            pool,
        })
    }

    /// Keeps `pool` among the others, at most [`MAX_OTHERS`] of them.
    fn keep(&self, address: &str, pool: &NodePool) {
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if others.len() >= MAX_OTHERS {
            others.clear();
        }
        others.insert(address.to_owned(), pool.clone());
    }

    fn open(&self, address: &str) -> Result<NodePool, StoreError> {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse().ok()?)))
            .ok_or_else(|| {
                StoreError::Protocol(format!("the cluster named a node at {address:?}"))
            })?;
        let info = at_address(&self.seeds[0], host, port);
        NodePool::open(info, &self.config).map_err(|InvalidRedisUrl(e)| StoreError::Unavailable(e))
    }

    /// Asks a master (or, when none answers, a seed) for the slot map and
    /// installs it. `Err` when no node answered, or some slot has no master.
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        let current = self.map();
        let mut last_error = StoreError::Unavailable("the cluster URL names no node".into());
        let masters = current.masters.iter().map(|m| m.address.clone());
        // The seeds only when no master answers (at start, or after a
        // change the known masters no longer see); their pools are kept.
        let seeds = self
            .seeds
            .iter()
            .map(|seed| seed.addr().to_string())
            .filter(|address| current.index_of(address).is_none());
        for address in masters.chain(seeds) {
            let pool = match current.index_of(&address) {
                Some(index) => current.masters[index].pool.clone(),
                None => match self.master(&address) {
                    Ok(master) => master.pool,
                    Err(error) => {
                        last_error = error;
                        continue;
                    }
                },
            };
            let host = pool.host().to_owned();
            match query(&pool, redis::cmd("CLUSTER").arg("SLOTS"))
                .await
                .and_then(|reply| parse_slots(reply, &host))
            {
                Ok(ranges) => {
                    let map = self.build(&current, &ranges)?;
                    let unserved = map.first_unserved();
                    self.install(map);
                    return match unserved {
                        None => Ok(()),
                        Some(slot) => Err(StoreError::Unavailable(format!(
                            "the cluster (asked {address}) has no master for slot {slot}"
                        ))),
                    };
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The slot map of `ranges`, reusing the pools of `current`'s masters.
    fn build(&self, current: &SlotMap, ranges: &[SlotRange]) -> Result<SlotMap, StoreError> {
        let mut map = SlotMap::empty();
        for range in ranges {
            let index = match map.index_of(&range.master) {
                Some(index) => index,
                None => {
                    let master = match current.index_of(&range.master) {
                        Some(i) => current.masters[i].clone(),
                        None => self.master(&range.master)?,
                    };
                    map.masters.push(master);
                    map.masters.len() - 1
                }
            };
            let index = u16::try_from(index)
                .map_err(|_| StoreError::Protocol("the cluster named too many masters".into()))?;
            let end = range.end.min(SLOTS - 1);
            for owner in map.owners.get_mut(range.start..=end).unwrap_or_default() {
                *owner = index;
            }
        }
        Ok(map)
    }

    /// Checks that every slot has a master and that each answers and
    /// reports `cluster_state:ok`; `Err` names the first that does not.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let map = self.map();
        if let Some(slot) = map.first_unserved() {
            self.suspect();
            return Err(StoreError::Unavailable(if map.masters.is_empty() {
                "no node of the Redis Cluster has answered yet".to_owned()
            } else {
                format!("no master of the Redis Cluster serves slot {slot}")
            }));
        }
        for master in map.serving() {
            let reply = query(&master.pool, redis::cmd("CLUSTER").arg("INFO")).await;
            let state = match &reply {
                Ok(Value::BulkString(bytes)) => {
                    String::from_utf8_lossy(bytes).lines().find_map(|line| {
                        line.trim()
                            .strip_prefix("cluster_state:")
                            .map(str::to_owned)
                    })
                }
                Ok(Value::VerbatimString { text, .. }) => text.lines().find_map(|line| {
                    line.trim()
                        .strip_prefix("cluster_state:")
                        .map(str::to_owned)
                }),
                _ => None,
            };
            match (reply, state) {
                (Err(error), _) => {
                    self.suspect();
                    return Err(StoreError::Unavailable(format!(
                        "Redis Cluster master {} does not answer: {error}",
                        master.address
                    )));
                }
                (Ok(_), Some(state)) if state == "ok" => {}
                (Ok(_), state) => {
                    self.suspect();
                    return Err(StoreError::Unavailable(format!(
                        "Redis Cluster master {} reports cluster_state:{}",
                        master.address,
                        state.as_deref().unwrap_or("unknown")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Keeps the slot map current until the [`Refresher`] is dropped: asks
    /// at once, then every [`REFRESH_EVERY`], or sooner when [`Cluster::suspect`]ed.
    pub(crate) fn keep_current(self: &Arc<Self>) -> Refresher {
        let cluster = Arc::clone(self);
        Refresher(tokio::spawn(async move {
            let mut healthy = true;
            loop {
                match cluster.refresh().await {
                    Ok(()) if !healthy => {
                        healthy = true;
                        tracing::info!("Redis Cluster slot map complete again");
                    }
                    Ok(()) => {}
                    Err(error) if healthy => {
                        healthy = false;
                        tracing::warn!(%error, "cannot learn the Redis Cluster's slot map; retrying");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(MIN_GAP).await;
                tokio::select! {
                    () = cluster.stale.notified() => {}
                    () = tokio::time::sleep(REFRESH_EVERY) => {}
                }
            }
        }))
    }
}

/// The task that keeps a slot map current; dropping it ends the task.
#[derive(Debug)]
pub(crate) struct Refresher(JoinHandle<()>);

impl Drop for Refresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One command on a pooled connection, outside the pipeline.
async fn query(pool: &NodePool, command: &redis::Cmd) -> Result<Value, StoreError> {
    let lease = pool.lease().await?;
    let mut connection = lease.connection.clone();
    match command.query_async::<Value>(&mut connection).await {
        Ok(value) => value.extract_error().map_err(|e| sort_command_error(&e)),
        Err(error) if error.code().is_some() => Err(sort_command_error(&error)),
        Err(error) => {
            lease.retire_on(&error);
            Err(sort_request_error(&error))
        }
    }
}

/// Slots `start..=end` and the `host:port` of their master.
#[derive(Debug, PartialEq, Eq)]
struct SlotRange {
    start: usize,
    end: usize,
    master: String,
}

/// The ranges of a `CLUSTER SLOTS` reply; a master without an endpoint
/// (`""` or `"?"`) is on `asked_host`, the node that answered.
fn parse_slots(reply: Value, asked_host: &str) -> Result<Vec<SlotRange>, StoreError> {
    let bad = |what: &str| StoreError::Protocol(format!("CLUSTER SLOTS reply: {what}"));
    let Value::Array(entries) = reply else {
        return Err(bad("not an array"));
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(entry) = entry else {
                return Err(bad("an entry is not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
                (entry.first(), entry.get(1), entry.get(2))
            else {
                return Err(bad("an entry lacks its range or master"));
            };
            let host = match node.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(bad("a master has no host")),
            };
            let Some(Value::Int(port)) = node.get(1) else {
                return Err(bad("a master has no port"));
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let slot = |n: i64| usize::try_from(n).map_err(|_| bad("a negative slot"));
            Ok(SlotRange {
                start: slot(*start)?,
                end: slot(*end)?,
                master: format!("{host}:{port}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_replies_name_each_range_and_its_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("10.0.0.4"), Value::Int(7003), bulk("id4")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id2")]),
            ]),
        ]);
        assert_eq!(
            parse_slots(reply, "seed"),
            Ok(vec![
                SlotRange {
                    start: 0,
                    end: 5460,
                    master: "10.0.0.1:7000".into()
                },
                SlotRange {
                    start: 5461,
                    end: 16383,
                    master: "seed:7001".into()
                },
            ])
        );
        assert!(parse_slots(Value::Int(1), "seed").is_err());
    }
}
