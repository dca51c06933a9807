//! What happens inside the stores reaches `/metrics`: what they settle in
//! their atomic steps (grants and holds that expire, allowances that renew)
//! exactly once, on the embedded store and on a real redis-server, with the
//! fixed clock moving time; Redis connections; a call given up at its
//! deadline while Redis hangs. One test in this file: the metrics are the
//! process'.

mod support;

use std::{collections::HashMap, time::Duration};

use meter_api::v1::{
    DeductRequest, GrantRequest, ReserveRequest, ResetRequest, SubscriptionStatus,
    UpdateSubscriptionRequest, subscription_service_client::SubscriptionServiceClient,
};
use meter_testkit::{FixedClock, RedisServer};
use meterd::StoreConfig;
use support::{Meterd, config, redis, scrape, ts};

const NOW: &str = "2026-03-10T12:00:00.000Z";

/// The value of every sample named in `names`, as `/metrics` shows them now.
async fn read(addr: std::net::SocketAddr, names: &[&str]) -> HashMap<String, f64> {
    let all = scrape(addr).await.1;
    names
        .iter()
        .map(|name| ((*name).to_owned(), all.get(*name).copied().unwrap_or(0.0)))
        .collect()
}

const EXPIRED: &str = "meter_credits_expired_total";
const RENEWED: &str = "meter_credits_renewed_total";
const HOLDS_EXPIRED: &str = "meter_holds_total{outcome=\"expired\"}";
const CONNECTIONS: &str = "meter_redis_connections";
const OPENED: &str = "meter_redis_connections_opened_total";
const DEDUCT_DEADLINE: &str = "meter_grpc_requests_total{service=\"meter.v1.CreditsService\",method=\"Deduct\",code=\"DEADLINE_EXCEEDED\"}";
const DEDUCT_CANCELLED: &str = "meter_grpc_requests_total{service=\"meter.v1.CreditsService\",method=\"Deduct\",code=\"CANCELLED\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_events_and_deadlines_are_counted() {
    let redis_server = RedisServer::start();
    for (name, store) in [
        ("memory", StoreConfig::Memory),
        ("redis", redis(redis_server.url())),
    ] {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let clock = FixedClock::at(NOW);
        let idle = meter_metrics::metrics().redis_connections.get();
        let meterd = Meterd::start_with_clock(
            meterd::Config {
                metrics_listen: Some(addr),
                ..config(store)
            },
            clock.clone(),
        )
        .await;
        let names = [
            EXPIRED,
            RENEWED,
            HOLDS_EXPIRED,
            CONNECTIONS,
            OPENED,
            DEDUCT_DEADLINE,
            DEDUCT_CANCELLED,
        ];
        let before = read(addr, &names).await;
        let account = format!("org_settled_{name}");
        let mut credits = meterd.credits();
        credits
            .reset(ResetRequest {
                account_id: account.clone(),
                total: Some(100),
                idempotency_key: "period-1".into(),
            })
            .await
            .expect("reset");
        credits
            .grant(GrantRequest {
                account_id: account.clone(),
                amount: 30,
                idempotency_key: "pack-1".into(),
                expire_time: Some(ts("2026-03-10T13:00:00.000Z")),
                ..GrantRequest::default()
            })
            .await
            .expect("grant");
        // A pack that never expires: its grant text comes before the trailer.
        credits
            .grant(GrantRequest {
                account_id: account.clone(),
                amount: 20,
                idempotency_key: "pack-2".into(),
                ..GrantRequest::default()
            })
            .await
            .expect("grant");
        let deduct = |key: &str, amount: i64| DeductRequest {
            account_id: account.clone(),
            amount,
            idempotency_key: key.into(),
            ..DeductRequest::default()
        };
        credits.deduct(deduct("d-1", 10)).await.expect("deduct");
        credits
            .reserve(ReserveRequest {
                account_id: account.clone(),
                amount: 5,
                ttl: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                idempotency_key: "h-1".into(),
                ..ReserveRequest::default()
            })
            .await
            .expect("reserve");
        let quiet = read(addr, &names).await;
        assert_eq!(quiet[EXPIRED], before[EXPIRED], "{name}: nothing due yet");
        assert_eq!(quiet[HOLDS_EXPIRED], before[HOLDS_EXPIRED], "{name}");

        // Past the period's end, the hold's and the pack's expiry: the next
        // call settles all three (10 deducted + 5 held come back; the pack's 30 go).
        clock.advance(Duration::from_secs(40 * 24 * 3600));
        for _ in 0..2 {
            let answer = credits
                .deduct(deduct("d-2", 1))
                .await
                .expect("deduct")
                .into_inner();
            assert!(answer.applied, "{name}");
            let balance = answer.balance.expect("balance");
            assert_eq!(
                balance.remaining, 119,
                "{name}: 99 of the period and 20 of pack-2"
            );
            assert_eq!(balance.grants.len(), 1, "{name}: {balance:?}");
        }
        credits.deduct(deduct("d-3", 1)).await.expect("deduct");

        let after = read(addr, &names).await;
        let moved = |metric: &str| after[metric] - before[metric];
        assert_eq!(moved(EXPIRED), 30.0, "{name}: the pack's 30, once");
        assert_eq!(moved(HOLDS_EXPIRED), 1.0, "{name}");
        assert_eq!(moved(RENEWED), 15.0, "{name}: the 10 deducted and 5 held");

        // An account script (UpdateSubscription) settles the next period's
        // reset (the 2 deducted since) before its own change.
        clock.advance(Duration::from_secs(40 * 24 * 3600));
        let update = SubscriptionServiceClient::new(meterd.channel())
            .update_subscription(UpdateSubscriptionRequest {
                account_id: account.clone(),
                plan: "pro".into(),
                status: SubscriptionStatus::Active.into(),
                event_time: Some(ts("2026-05-01T00:00:00.000Z")),
                idempotency_key: "evt_upgrade".into(),
                ..UpdateSubscriptionRequest::default()
            })
            .await
            .expect("update")
            .into_inner();
        assert!(update.applied, "{name}");
        let renewed = read(addr, &names).await;
        assert_eq!(
            renewed[RENEWED] - after[RENEWED],
            2.0,
            "{name}: {renewed:?}"
        );
        if name == "redis" {
            assert!(after[CONNECTIONS] >= 1.0, "{name}: {after:?}");
            assert!(after[OPENED] >= after[CONNECTIONS], "{name}: {after:?}");

            // Redis hangs: meterd gives up at the caller's deadline.
            redis_server.freeze();
            let mut request = tonic::Request::new(deduct("d-4", 1));
            request.set_timeout(Duration::from_millis(300));
            let status = credits.deduct(request).await.expect_err("no answer");
            redis_server.thaw();
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
            let given_up = read(addr, &names).await;
            let moved = |metric: &str| given_up[metric] - renewed[metric];
            assert_eq!(moved(DEDUCT_DEADLINE), 1.0, "{given_up:?}");
            assert_eq!(moved(DEDUCT_CANCELLED), 0.0, "{given_up:?}");
        }
        meterd.stop().await.expect("meterd stops");
        if name == "redis" {
            // Every connection closed with the store: none leaks in the gauge.
            let mut open = -1;
            for _ in 0..100 {
                open = meter_metrics::metrics().redis_connections.get();
                if open == idle {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(open, idle, "{name}: connections left counted");
        }
    }
}
