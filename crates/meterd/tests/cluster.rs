//! meterd on a real Redis Cluster, over real gRPC: served, exact under
//! concurrency, and healthy again after a master fails over.

mod support;

use std::time::Duration;

use meter_api::v1::{DeductRequest, ResetRequest};
use meter_redis::{keys, slot::key_slot};
use meter_testkit::RedisCluster;
use support::{Meterd, eventually, status};
use tonic_health::pb::health_check_response::ServingStatus;

const ACCOUNTS: [&str; 8] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];

fn account_id(name: &str) -> meter_core::AccountId {
    meter_core::AccountId::parse("account_id", name).expect("valid")
}

async fn health_is(meterd: &Meterd, want: ServingStatus, within: Duration, what: &str) {
    eventually(within, what, || async {
        status(meterd, "").await == Some(want)
            && status(meterd, "meter.v1.CreditsService").await == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meterd_serves_a_cluster_exactly_and_its_health_follows_a_failover() {
    let mut cluster = RedisCluster::start();
    let masters: std::collections::BTreeSet<usize> = ACCOUNTS
        .iter()
        .map(|a| cluster.master_of(key_slot(keys::credits(&account_id(a)).as_bytes())))
        .collect();
    assert_eq!(masters.len(), 3, "the accounts live on all three masters");
    let meterd = Meterd::redis(cluster.url()).await;
    health_is(
        &meterd,
        ServingStatus::Serving,
        Duration::from_secs(10),
        "SERVING on a cluster",
    )
    .await;

    let mut client = meterd.credits();
    for account in ACCOUNTS {
        client
            .reset(ResetRequest {
                account_id: account.into(),
                total: Some(1_000_000),
                idempotency_key: String::new(),
            })
            .await
            .expect("reset");
    }
    // 64 callers × 100 deducts over the eight accounts.
    let tasks: Vec<_> = (0..64)
        .map(|caller| {
            let mut client = meterd.credits();
            tokio::spawn(async move {
                for n in 0..100 {
                    let reply = client
                        .deduct(DeductRequest {
                            account_id: ACCOUNTS[caller % ACCOUNTS.len()].into(),
                            amount: 1,
                            idempotency_key: format!("{caller}-{n}"),
                            ..DeductRequest::default()
                        })
                        .await
                        .expect("deduct")
                        .into_inner();
                    assert!(reply.applied);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    for account in ACCOUNTS {
        let balance = support::balance(&mut client, account).await;
        assert_eq!(balance.used, 800, "{account}: 8 callers × 100 deducts");
    }

    let victim = *masters.first().expect("a master");
    cluster.kill(victim);
    health_is(
        &meterd,
        ServingStatus::NotServing,
        Duration::from_secs(5),
        "NOT_SERVING while a master is down",
    )
    .await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_until_ok();
        cluster
    })
    .await
    .expect("failover");
    assert!(!cluster.masters().contains(&victim), "a replica took over");
    health_is(
        &meterd,
        ServingStatus::Serving,
        Duration::from_secs(10),
        "SERVING again once the replica has taken over",
    )
    .await;
    for account in ACCOUNTS {
        let reply = client
            .deduct(DeductRequest {
                account_id: account.into(),
                amount: 1,
                idempotency_key: "after-failover".into(),
                ..DeductRequest::default()
            })
            .await
            .expect("a deduct on every master after the failover")
            .into_inner();
        assert!(reply.applied);
    }
}
