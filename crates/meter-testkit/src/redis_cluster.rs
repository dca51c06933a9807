//! Starts a real Redis Cluster: three masters with a replica each, on free
//! ports, created with `redis-cli --cluster create`.

use std::{
    env,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{RedisServer, redis_server::free_port};

/// How long a new cluster, or one after a failover, may take to be `ok`.
const OK_WITHIN: Duration = Duration::from_secs(30);

/// How long a master may be silent before its replica takes over, in ms.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// A Redis Cluster owned by one test; every node is killed when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    /// The node's id.
    pub id: String,
    /// Its port.
    pub port: u16,
    /// Whether it is a master that has not failed.
    pub master: bool,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster of three masters with one
    /// replica each, and waits until every node reports `cluster_state:ok`
    /// and every replica is in sync.
    ///
    /// Panics, saying how to install them, when `redis-server` or
    /// `redis-cli` (`$REDIS_CLI`) is missing.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with_fresh(|| {
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &free_port().to_string(),
                        "--cluster-node-timeout",
                        &NODE_TIMEOUT_MS.to_string(),
                    ]
                    .map(str::to_owned)
                    .to_vec()
                })
            })
            .collect();
        let cluster = Self { nodes };
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let output = redis_cli(&create);
        assert!(
            output.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{output}"
        );
        cluster.wait_until_ok();
        cluster
    }

    /// `redis+cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Runs `redis-cli` against node `index` with `args`; its output.
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        let mut all = vec!["-p".to_owned(), self.nodes[index].port().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        redis_cli(&all)
    }

    /// The cluster as the first running node sees it (`CLUSTER NODES`).
    pub fn topology(&self) -> Vec<ClusterNode> {
        let asked = (0..self.nodes.len())
            .find(|&i| self.nodes[i].pid().is_some())
            .expect("a running node");
        self.cli(asked, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(parse_node)
            .collect()
    }

    /// The index of the node whose port is `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on {port}"))
    }

    /// The index of the master serving `slot`.
    pub fn master_of(&self, slot: u16) -> usize {
        let node = self
            .topology()
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.index_of(node.port)
    }

    /// The indices of the masters that serve slots.
    pub fn masters(&self) -> Vec<usize> {
        self.topology()
            .into_iter()
            .filter(|n| n.master && !n.slots.is_empty())
            .map(|n| self.index_of(n.port))
            .collect()
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn key_slot(&self, key: &str) -> u16 {
        let text = self.cli(self.masters()[0], &["CLUSTER", "KEYSLOT", key]);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key} answered {text:?}: {e}"))
    }

    /// How many error replies with `code` (`MOVED`, `ASK`, …) node `index`
    /// has sent (`INFO errorstats`).
    pub fn errors(&self, index: usize, code: &str) -> u64 {
        let prefix = format!("errorstat_{code}:count=");
        self.cli(index, &["INFO", "errorstats"])
            .lines()
            .find_map(|line| line.trim().strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0)
    }

    /// Kills node `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].stop();
    }

    /// Starts killed node `index` again on its port with its cluster
    /// config: it rejoins, as a replica if another took its place.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
    }

    /// Waits until every running node reports `cluster_state:ok`, sees every
    /// slot served by a master that has not failed, and every running
    /// replica's link to its master is up.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + OK_WITHIN;
        loop {
            let problem = self.problem();
            let Some(problem) = problem else { return };
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster is not ok after {OK_WITHIN:?}: {problem}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What keeps the cluster from being ok, if anything.
    fn problem(&self) -> Option<String> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.pid().is_none() {
                continue;
            }
            let info = self.cli(i, &["CLUSTER", "INFO"]);
            if !info.contains("cluster_state:ok") {
                return Some(format!("node {} is not ok", node.port()));
            }
            let served: u32 = self
                .cli(i, &["CLUSTER", "NODES"])
                .lines()
                .filter_map(parse_node)
                .filter(|n| n.master)
                .flat_map(|n| n.slots)
                .map(|(a, b)| u32::from(b - a) + 1)
                .sum();
            if served != 16_384 {
                return Some(format!("node {} sees {served} slots served", node.port()));
            }
            let replication = self.cli(i, &["INFO", "replication"]);
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Some(format!("replica {} is not in sync", node.port()));
            }
        }
        None
    }

    /// Moves `slot` to the master at index `to` with `CLUSTER SETSLOT` and
    /// `MIGRATE`, as `redis-cli --cluster reshard` does: `pause` between the
    /// steps and thirty times `pause` once every key has moved, so that traffic
    /// meets `TRYAGAIN` and `ASK` on the way.
    pub fn move_slot(&self, slot: u16, to: usize, pause: Duration) {
        let from = self.master_of(slot);
        assert_ne!(from, to, "slot {slot} is on node {to} already");
        let id = |i: usize| self.cli(i, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        let slot_text = slot.to_string();
        let ok = |output: String, what: &str| {
            assert!(output.trim() == "OK", "{what}: {output}");
        };
        ok(
            self.cli(
                to,
                &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
            ),
            "SETSLOT IMPORTING",
        );
        ok(
            self.cli(
                from,
                &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
            ),
            "SETSLOT MIGRATING",
        );
        std::thread::sleep(pause);
        let to_port = self.nodes[to].port().to_string();
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            // A hundred keys at a time, with a pause, so that traffic sees
            // the migration half-done.
            let mut migrate = vec![
                "MIGRATE",
                "127.0.0.1",
                &to_port,
                "",
                "0",
                "5000",
                "REPLACE",
                "KEYS",
            ];
            migrate.extend(&keys);
            let output = self.cli(from, &migrate);
            assert!(
                output.trim() == "OK" || output.trim() == "NOKEY",
                "MIGRATE: {output}"
            );
            std::thread::sleep(pause);
        }
        // Every key has moved, the slot not yet: calls meet ASK.
        std::thread::sleep(pause * 30);
        for i in self.masters() {
            ok(
                self.cli(i, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]),
                "SETSLOT NODE",
            );
        }
        ok(
            self.cli(from, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]),
            "SETSLOT NODE on the old owner",
        );
    }
}

/// Runs `redis-cli` with `args`; stdout and stderr together.
fn redis_cli(args: &[String]) -> String {
    let binary = env::var_os("REDIS_CLI").map_or_else(|| PathBuf::from("redis-cli"), PathBuf::from);
    let output = Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}. The cluster tests need redis-cli: install it with \
             `sudo apt-get install -y redis-tools` (Debian/Ubuntu) or `brew install redis`, \
             or set REDIS_CLI to the path of a redis-cli binary",
                binary.display()
            )
        });
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// A `CLUSTER NODES` line: `id ip:port@bus flags master ping pong epoch link slots…`.
fn parse_node(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let address = fields.get(1)?;
    let port = address
        .split('@')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let flags = fields.get(2)?;
    let master = flags.contains("master") && !flags.contains("fail");
    let slots = fields
        .iter()
        .skip(8)
        // `[slot->-id]` entries are migrations in progress, not served slots.
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    Some(ClusterNode {
        id: (*fields.first()?).to_owned(),
        port,
        master,
        slots,
    })
}
