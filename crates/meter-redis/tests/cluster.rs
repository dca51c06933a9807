//! The Redis store on a real Redis Cluster (three masters, a replica each):
//! the contract suite unchanged, accounts spread over every master, a
//! master killed under load, and a slot moved under load.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use meter_core::{
    AccountId, CreditLedger, CreditPeriod, DeductCredits, HistoryRetention, IdempotencyKey,
    IdempotencyWindow, MeterError, Reason, ResetCredits, ResetTo, StoreError,
};
use meter_redis::{RedisConfig, RedisCreditLedger, RedisStore, keys, slot::key_slot};
use meter_testkit::{RedisCluster, timestamp as at};

const NOW: &str = "2026-01-01T00:00:00.000Z";

/// A store on `cluster`, once it has learnt the slot map and every master answers.
async fn store_on(cluster: &RedisCluster) -> RedisStore {
    let store = RedisStore::open(&RedisConfig::new(cluster.url())).expect("valid url");
    wait_serving(&store).await;
    store
}

/// Waits until the store's health check passes, as meterd's readiness does.
async fn wait_serving(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.ping().await {
            Ok(()) => return,
            Err(error) => assert!(
                Instant::now() < deadline,
                "the cluster store is not serving after 30 s: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ledger(store: &RedisStore) -> RedisCreditLedger {
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid window");
    RedisCreditLedger::new(store.clone(), window, HistoryRetention::DEFAULT)
}

fn account(name: &str) -> AccountId {
    AccountId::parse("account_id", name).expect("valid")
}

fn deduct(who: &AccountId, amount: i64, idem: &str) -> DeductCredits {
    let key = IdempotencyKey::parse_optional("idempotency_key", idem).expect("valid");
    DeductCredits::new(who.clone(), amount, Reason::default(), key).expect("valid")
}

fn reset(who: &AccountId, total: i64) -> ResetCredits {
    ResetCredits {
        account: who.clone(),
        to: ResetTo::Fixed {
            total,
            period: CreditPeriod::Month,
        },
        idempotency: None,
    }
}

mod contract {
    use super::*;

    meter_testkit::credit_ledger_contract!(window, retention => async move {
        let cluster = RedisCluster::start();
        let store = store_on(&cluster).await;
        (RedisCreditLedger::new(store, window, retention), cluster)
    });

    meter_testkit::account_store_contract!(window => async move {
        let cluster = RedisCluster::start();
        let store = store_on(&cluster).await;
        (
            RedisCreditLedger::new(store.clone(), window, HistoryRetention::DEFAULT),
            meter_redis::RedisAccounts::new(store, window, HistoryRetention::DEFAULT),
            cluster,
        )
    });

    meter_testkit::usage_store_contract!(async move {
        let cluster = RedisCluster::start();
        let store = store_on(&cluster).await;
        (
            meter_redis::RedisUsage::new(store.clone()),
            meter_redis::RedisAccounts::new(
                store,
                meter_core::IdempotencyWindow::new(std::time::Duration::from_secs(3600))
                    .expect("valid window"),
                meter_core::HistoryRetention::DEFAULT,
            ),
            cluster,
        )
    });

    meter_testkit::stats_store_contract!(window => async move {
        let cluster = RedisCluster::start();
        let store = store_on(&cluster).await;
        (
            meter_redis::RedisStats::new(store.clone(), window),
            meter_redis::RedisAccounts::new(store, window, HistoryRetention::DEFAULT),
            cluster,
        )
    });
}

/// `count` accounts whose slots are spread over every master of `cluster`.
fn accounts_on_every_master(cluster: &RedisCluster, count: usize) -> Vec<AccountId> {
    let accounts: Vec<AccountId> = (0..count).map(|i| account(&format!("org_{i}"))).collect();
    let mut masters = BTreeSet::new();
    for who in &accounts {
        let key = keys::credits(who);
        let slot = cluster.key_slot(&key);
        assert_eq!(
            slot,
            key_slot(key.as_bytes()),
            "meter and Redis agree on {key}'s slot"
        );
        masters.insert(cluster.master_of(slot));
    }
    assert_eq!(masters.len(), 3, "the accounts live on all three masters");
    accounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_spread_over_every_master_and_concurrent_deducts_end_exact() {
    let cluster = RedisCluster::start();
    // Not waiting for health: the first call waits for the slot map, as a
    // call to one node waits for its first connection.
    let store = RedisStore::open(&RedisConfig::new(cluster.url())).expect("valid url");
    let ledger = ledger(&store);
    ledger
        .reset(&reset(&account("first"), 1), at(NOW))
        .await
        .expect("the first call, right after the store opened");
    let accounts = accounts_on_every_master(&cluster, 8);
    for who in &accounts {
        ledger
            .reset(&reset(who, 1_000_000), at(NOW))
            .await
            .expect("reset");
    }
    // 64 callers × 100 deducts, each caller on one account, 8 callers per account.
    let tasks: Vec<_> = (0..64)
        .map(|caller| {
            let ledger = ledger.clone();
            let who = accounts[caller % accounts.len()].clone();
            tokio::spawn(async move {
                for n in 0..100 {
                    let recorded = ledger
                        .deduct(&deduct(&who, 1, &format!("c{caller}-{n}")), at(NOW))
                        .await
                        .expect("deduct");
                    assert!(recorded.outcome.applied, "applied");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    for who in &accounts {
        let balance = ledger.balance(who, at(NOW)).await.expect("balance");
        assert_eq!(balance.used(), 800, "{who}: 8 callers × 100 deducts");
    }
}

#[tokio::test]
async fn a_plain_redis_url_to_a_cluster_node_says_to_use_the_cluster_scheme() {
    let cluster = RedisCluster::start();
    let url = format!("redis://127.0.0.1:{}", cluster.nodes()[0].port());
    let ledger = ledger(&RedisStore::open(&RedisConfig::new(url)).expect("valid url"));
    // Some of these accounts live on another master than node 0.
    let mut refused = 0;
    for who in accounts_on_every_master(&cluster, 8) {
        match ledger.reset(&reset(&who, 10), at(NOW)).await {
            Ok(_) => {}
            Err(MeterError::Store(StoreError::Unavailable(message))) => {
                assert!(message.contains("redis+cluster://"), "{message}");
                refused += 1;
            }
            Err(other) => panic!("{who}: {other:?}"),
        }
    }
    assert!(
        refused > 0,
        "a node redirects the accounts it does not serve"
    );
}

/// What one caller of [`deduct_until`] did.
struct Caller {
    account: AccountId,
    /// Deducts that answered applied.
    applied: i64,
    /// Attempts that failed and were retried with the same key.
    retries: u64,
}

/// Deducts 1 credit at a time by `callers` callers spread over `accounts`
/// until `stop` is set; each retries a failed call with the same
/// idempotency key until it answers, as a client of meterd should.
fn deduct_until(
    ledger: &RedisCreditLedger,
    accounts: &[AccountId],
    callers: usize,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Caller>> {
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let ledger = ledger.clone();
            let stop = Arc::clone(stop);
            let account = accounts[caller % accounts.len()].clone();
            tokio::spawn(async move {
                let mut done = Caller {
                    account,
                    applied: 0,
                    retries: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    let call = deduct(&done.account, 1, &format!("c{caller}-{}", done.applied));
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        match ledger.deduct(&call, at(NOW)).await {
                            Ok(recorded) => {
                                assert!(recorded.outcome.applied, "applied");
                                break;
                            }
                            // What a failover or a migration may answer; any
                            // other error is a fault of the store.
                            Err(MeterError::Store(
                                error @ (StoreError::Unavailable(_)
                                | StoreError::OutcomeUnknown(_)
                                | StoreError::Overloaded(_)),
                            )) => {
                                done.retries += 1;
                                assert!(
                                    Instant::now() < deadline,
                                    "{}: still failing after 30 s: {error}",
                                    done.account
                                );
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(other) => panic!("{}: {other:?}", done.account),
                        }
                    }
                    done.applied += 1;
                }
                done
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut callers = Vec::new();
        for task in tasks {
            callers.push(task.await.expect("caller"));
        }
        callers
    })
}

/// Checks that each account's stored `used` is exactly what its callers applied.
async fn assert_exact(ledger: &RedisCreditLedger, accounts: &[AccountId], callers: &[Caller]) {
    for who in accounts {
        let applied: i64 = callers
            .iter()
            .filter(|c| &c.account == who)
            .map(|c| c.applied)
            .sum();
        assert!(applied > 0, "{who}: callers got through");
        let balance = ledger.balance(who, at(NOW)).await.expect("balance");
        assert_eq!(balance.used(), applied, "{who}: every applied deduct, once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over_and_retried_deducts_end_exact() {
    let mut cluster = RedisCluster::start();
    // Redis replicates after it answers: without WAIT, a change the master
    // answered in its last instant may never reach the replica that takes
    // over. With it, every answered change is on the replica.
    let store = RedisStore::open(&RedisConfig {
        wait_replicas: 1,
        ..RedisConfig::new(cluster.url())
    })
    .expect("valid url");
    wait_serving(&store).await;
    let ledger = ledger(&store);
    let accounts = accounts_on_every_master(&cluster, 6);
    for who in &accounts {
        ledger
            .reset(&reset(who, 1_000_000), at(NOW))
            .await
            .expect("reset");
    }
    let victim = cluster.master_of(key_slot(keys::credits(&accounts[0]).as_bytes()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = deduct_until(&ledger, &accounts, 24, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(victim);
    // The replica takes over; the killed master comes back as its replica,
    // so that the promoted one's changes can be confirmed again.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_until_ok();
        cluster.restart(victim);
        cluster.wait_until_ok();
        cluster
    })
    .await
    .expect("failover");
    wait_serving(&store).await;
    // Some more traffic on the promoted replica before the count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let callers = load.await.expect("load");
    assert!(
        callers.iter().map(|c| c.retries).sum::<u64>() > 0,
        "the killed master failed some calls"
    );
    assert!(
        !cluster.masters().contains(&victim),
        "a replica took the killed master's place"
    );
    assert_exact(&ledger, &accounts, &callers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_under_load_follows_ask_and_moved_and_loses_nothing() {
    let cluster = RedisCluster::start();
    // The move takes about half a second here; calls wait out TRYAGAIN for
    // as long as a reply may take, so give them ample time on a slow machine.
    let store = RedisStore::open(&RedisConfig {
        response_timeout: Duration::from_secs(5),
        ..RedisConfig::new(cluster.url())
    })
    .expect("valid url");
    wait_serving(&store).await;
    let ledger = ledger(&store);
    let accounts = vec![account("org_moving"), account("org_staying")];
    for who in &accounts {
        ledger
            .reset(&reset(who, 1_000_000), at(NOW))
            .await
            .expect("reset");
    }
    let slot = key_slot(keys::credits(&accounts[0]).as_bytes());
    let from = cluster.master_of(slot);
    let to = *cluster
        .masters()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    let stop = Arc::new(AtomicBool::new(false));
    let load = deduct_until(&ledger, &accounts, 16, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.move_slot(slot, to, Duration::from_millis(5));
        cluster
    })
    .await
    .expect("move");
    assert_eq!(cluster.master_of(slot), to, "the slot moved");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let callers = load.await.expect("load");
    // The old owner sent calls on (ASK once the account's keys had moved),
    // and the store followed every redirect: no caller saw an error.
    assert!(
        cluster.errors(from, "ASK") > 0,
        "the old owner answered ASK during the move"
    );
    assert_eq!(
        callers.iter().map(|c| c.retries).sum::<u64>(),
        0,
        "every redirect was followed inside the store"
    );
    assert_exact(&ledger, &accounts, &callers).await;
}

/// On a cluster a ranking is raised after the account's script; one a
/// failure left behind is raised again by the retry of the same events,
/// which the script answers as duplicates with the totals as they stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranking_left_behind_is_raised_by_the_retry() {
    use meter_core::{MetricKind, RecordUsage, UsageEvent, UsagePeriod, UsageStore};

    let cluster = RedisCluster::start();
    let store = store_on(&cluster).await;
    let usage = meter_redis::RedisUsage::new(store.clone());
    let now = at("2026-03-10T12:00:00.000Z");
    let account = AccountId::parse("account_id", "org_ranked").expect("account");
    let request = RecordUsage {
        account: account.clone(),
        events: vec![(
            UsageEvent {
                account: account.clone(),
                metric: "api_request".into(),
                value: 5,
                event_id: "r1".into(),
                time: now,
                metadata: Default::default(),
            },
            MetricKind::Sum,
        )],
        retention: meter_core::UsageRetention::default(),
    };
    let month = UsagePeriod::month_of(now);
    let top = || async {
        usage
            .top_consumers("api_request", month, 10, now)
            .await
            .expect("top")
            .into_iter()
            .map(|c| (c.account.to_string(), c.used))
            .collect::<Vec<_>>()
    };
    usage.record(&request, now).await.expect("record");
    assert_eq!(top().await, [("org_ranked".to_owned(), 5)]);
    // A raise lost (meterd stopped after the script).
    let ranking = keys::usage_ranking("api_request", month);
    let mut lose = redis::cmd("ZREM");
    lose.arg(&ranking).arg("org_ranked");
    store.command(lose, &ranking).await.expect("zrem");
    assert!(top().await.is_empty());
    let retried = usage.record(&request, now).await.expect("retry");
    assert_eq!(retried, [meter_core::EventOutcome::Duplicate]);
    assert_eq!(
        top().await,
        [("org_ranked".to_owned(), 5)],
        "the retry raised it"
    );
}

mod ratelimit_contract {
    use std::sync::Arc;

    use meter_testkit::{FixedClock, RedisCluster};

    use super::store_on;

    meter_testkit::rate_limit_store_contract!(|clock: FixedClock| async move {
        let cluster = RedisCluster::start();
        let store = store_on(&cluster).await;
        (
            meter_redis::RedisRateLimits::with_clock(store, Arc::new(clock)),
            cluster,
        )
    });
}
