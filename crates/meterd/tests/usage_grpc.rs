//! UsageService end to end: the real meterd on a real redis-server, real gRPC.

mod support;

use meter_api::v1::{
    EventStatus, GetUsageRequest, RecordUsageRequest, UsageEvent,
    usage_service_client::UsageServiceClient,
};
use meter_testkit::{FixedClock, RedisServer};
use support::{Meterd, ts};
use tonic::Code;

fn event(account: &str, id: String, time: &str) -> UsageEvent {
    UsageEvent {
        account_id: account.into(),
        metric: "api_request".into(),
        value: 1,
        event_id: id,
        time: Some(ts(time)),
        metadata: Default::default(),
    }
}

/// The same 10,000 events sent twice by 8 concurrent callers count once;
/// the month rolls over at UTC midnight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_sent_twice_concurrently_count_once() {
    let redis = RedisServer::start();
    let clock = FixedClock::at("2027-01-01T00:10:00.000Z");
    let meterd =
        Meterd::start_with_clock(support::config(support::redis(redis.url())), clock).await;
    // 10,000 events: half on Dec 31, half on Jan 1, over 4 accounts.
    let events: Vec<UsageEvent> = (0..10_000)
        .map(|i| {
            let time = if i % 2 == 0 {
                "2026-12-31T23:59:59.999Z"
            } else {
                "2027-01-01T00:00:00.000Z"
            };
            event(&format!("org_{}", i % 4), format!("evt-{i}"), time)
        })
        .collect();
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let mut client = UsageServiceClient::new(meterd.channel());
            // Each event twice overall: callers c and c + 4 send the same slice.
            let slice: Vec<UsageEvent> =
                events[(caller % 4) * 2_500..(caller % 4 + 1) * 2_500].to_vec();
            tokio::spawn(async move {
                let mut recorded = 0;
                for chunk in slice.chunks(500) {
                    let reply = client
                        .record_usage(RecordUsageRequest {
                            events: chunk.to_vec(),
                        })
                        .await
                        .expect("record")
                        .into_inner();
                    recorded += reply.recorded;
                    assert_eq!(reply.recorded + reply.duplicates, 500);
                }
                recorded
            })
        })
        .collect();
    let mut recorded = 0;
    for caller in callers {
        recorded += caller.await.expect("task");
    }
    assert_eq!(recorded, 10_000, "each event counted once");
    let mut client = UsageServiceClient::new(meterd.channel());
    let mut december = 0;
    let mut january = 0;
    for n in 0..4 {
        for (period, total) in [("2026-12", &mut december), ("2027-01", &mut january)] {
            let reply = client
                .get_usage(GetUsageRequest {
                    account_id: format!("org_{n}"),
                    period: period.into(),
                    metrics: vec!["api_request".into()],
                })
                .await
                .expect("usage")
                .into_inner();
            *total += reply.values["api_request"];
        }
    }
    assert_eq!(
        (december, january),
        (5_000, 5_000),
        "rollover at UTC midnight"
    );
}

#[tokio::test]
async fn bad_events_name_the_field_and_index_and_write_nothing() {
    let meterd = Meterd::memory().await;
    let mut client = UsageServiceClient::new(meterd.channel());
    let good = || UsageEvent {
        account_id: "org_1".into(),
        metric: "api_request".into(),
        value: 1,
        event_id: "e-1".into(),
        time: None,
        metadata: Default::default(),
    };
    for (bad, field) in [
        (
            UsageEvent {
                value: -1,
                ..good()
            },
            "events[1].value",
        ),
        (
            UsageEvent {
                value: 1 << 60,
                ..good()
            },
            "events[1].value",
        ),
        (
            UsageEvent {
                event_id: String::new(),
                ..good()
            },
            "events[1].event_id",
        ),
        (
            UsageEvent {
                metric: "Bad Metric".into(),
                ..good()
            },
            "events[1].metric",
        ),
    ] {
        let refused = client
            .record_usage(RecordUsageRequest {
                events: vec![
                    UsageEvent {
                        event_id: "e-0".into(),
                        ..good()
                    },
                    bad,
                ],
            })
            .await
            .expect_err(field);
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().starts_with(&format!("{field}: ")),
            "{}",
            refused.message()
        );
    }
    for period in ["2025-13", "2025-02-30", "last-month"] {
        let refused = client
            .get_usage(GetUsageRequest {
                account_id: "org_1".into(),
                period: period.into(),
                metrics: vec![],
            })
            .await
            .expect_err(period);
        assert!(
            refused.message().starts_with("period: "),
            "{}",
            refused.message()
        );
    }
    let empty = client
        .get_usage(GetUsageRequest {
            account_id: "org_1".into(),
            period: "2026-12".into(),
            metrics: vec![],
        })
        .await
        .expect("usage")
        .into_inner();
    assert!(
        empty.values.is_empty(),
        "nothing was written: {:?}",
        empty.values
    );
    let first = client
        .record_usage(RecordUsageRequest {
            events: vec![good()],
        })
        .await
        .expect("record")
        .into_inner();
    assert_eq!(first.results[0].status(), EventStatus::Recorded);
}

/// 100 tasks racing for the last 10 units of the account's plan's quota:
/// exactly 10 are allowed, and the month's usage is the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_racers_for_the_last_ten_units_get_exactly_ten() {
    use meter_api::v1::{
        CheckQuotaRequest, SubscriptionStatus, UpdateSubscriptionRequest,
        subscription_service_client::SubscriptionServiceClient,
    };

    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    // free (deploy/plans.toml) includes 1,000 API requests a month, hard.
    let mut client = UsageServiceClient::new(meterd.channel());
    let seed = client
        .record_usage(RecordUsageRequest {
            events: vec![UsageEvent {
                account_id: "org_race".into(),
                metric: "api_request".into(),
                value: 990,
                event_id: "seed".into(),
                time: None,
                metadata: Default::default(),
            }],
        })
        .await
        .expect("seed")
        .into_inner();
    assert_eq!(seed.recorded, 1);
    let racers: Vec<_> = (0..100)
        .map(|i| {
            let mut client = UsageServiceClient::new(meterd.channel());
            tokio::spawn(async move {
                client
                    .check_quota(CheckQuotaRequest {
                        account_id: "org_race".into(),
                        metric: "api_request".into(),
                        amount: 1,
                        consume: true,
                        idempotency_key: format!("call-{i}"),
                    })
                    .await
                    .expect("quota")
                    .into_inner()
            })
        })
        .collect();
    let mut allowed = 0;
    for racer in racers {
        let reply = racer.await.expect("task");
        assert_eq!((reply.plan.as_str(), reply.limit), ("free", 1_000));
        allowed += usize::from(reply.allowed);
    }
    assert_eq!(allowed, 10);
    let check = client
        .check_quota(CheckQuotaRequest {
            account_id: "org_race".into(),
            metric: "api_request".into(),
            amount: 0,
            consume: false,
            idempotency_key: String::new(),
        })
        .await
        .expect("quota")
        .into_inner();
    assert_eq!((check.used, check.remaining), (1_000, 0));
    assert!(check.period_end.is_some());
    let unlimited = client
        .check_quota(CheckQuotaRequest {
            account_id: "org_race".into(),
            metric: "email_sent".into(),
            amount: 1,
            consume: true,
            idempotency_key: "mail-1".into(),
        })
        .await
        .expect("quota")
        .into_inner();
    assert!(
        unlimited.unlimited && unlimited.allowed,
        "free does not limit email_sent"
    );
    // On pro, the plan's limit applies.
    SubscriptionServiceClient::new(meterd.channel())
        .update_subscription(UpdateSubscriptionRequest {
            account_id: "org_race".into(),
            plan: "pro".into(),
            status: SubscriptionStatus::Active.into(),
            ..UpdateSubscriptionRequest::default()
        })
        .await
        .expect("upgrade");
    let pro = client
        .check_quota(CheckQuotaRequest {
            account_id: "org_race".into(),
            metric: "api_request".into(),
            amount: 5_000,
            consume: true,
            idempotency_key: "big-1".into(),
        })
        .await
        .expect("quota")
        .into_inner();
    assert_eq!(
        (pro.plan.as_str(), pro.limit, pro.allowed),
        ("pro", 100_000, true)
    );
    let again = client
        .check_quota(CheckQuotaRequest {
            account_id: "org_race".into(),
            metric: "api_request".into(),
            amount: 5_000,
            consume: true,
            idempotency_key: "big-1".into(),
        })
        .await
        .expect("quota")
        .into_inner();
    assert!(again.duplicate, "the same key takes nothing twice");
    assert_eq!(again.used, 6_000);
}

/// A month with overages on two metrics on pro (deploy/plans.toml) is
/// billed as computed by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_with_overages_on_two_metrics_equals_the_table_by_hand() {
    use meter_api::v1::{
        ComputeBillRequest, SubscriptionStatus, UpdateSubscriptionRequest,
        subscription_service_client::SubscriptionServiceClient,
    };

    let redis = RedisServer::start();
    let clock = FixedClock::at("2026-12-20T12:00:00.000Z");
    let meterd =
        Meterd::start_with_clock(support::config(support::redis(redis.url())), clock).await;
    SubscriptionServiceClient::new(meterd.channel())
        .update_subscription(UpdateSubscriptionRequest {
            account_id: "org_bill".into(),
            plan: "pro".into(),
            status: SubscriptionStatus::Active.into(),
            ..UpdateSubscriptionRequest::default()
        })
        .await
        .expect("upgrade");
    let mut client = UsageServiceClient::new(meterd.channel());
    let events = [
        ("api_request", 60_000, "a1"),
        ("api_request", 40_500, "a2"),
        ("email_sent", 10_010, "m1"),
        ("sms", 7, "s1"),
    ]
    .map(|(metric, value, id)| UsageEvent {
        account_id: "org_bill".into(),
        metric: metric.into(),
        value,
        event_id: id.into(),
        time: Some(ts("2026-12-10T09:00:00.000Z")),
        metadata: Default::default(),
    });
    client
        .record_usage(RecordUsageRequest {
            events: events.to_vec(),
        })
        .await
        .expect("record");
    let bill = client
        .compute_bill(ComputeBillRequest {
            account_id: "org_bill".into(),
            period: "2026-12".into(),
        })
        .await
        .expect("bill")
        .into_inner()
        .bill
        .expect("bill");
    /// metric, used, included, overage units, unit price, amount.
    type Row<'a> = (&'a str, i64, Option<i64>, i64, i64, i64);
    let table: Vec<Row<'_>> = bill
        .lines
        .iter()
        .map(|l| {
            (
                l.metric.as_str(),
                l.used,
                l.included,
                l.overage_units,
                l.unit_price_micros,
                l.amount_micros,
            )
        })
        .collect();
    assert_eq!(
        table,
        [
            // 500 requests over 100,000 at 100 µ$ each; 10 emails over 10,000 at 1,000.
            ("api_request", 100_500, Some(100_000), 500, 100, 50_000),
            ("email_sent", 10_010, Some(10_000), 10, 1_000, 10_000),
            ("sms", 7, None, 0, 0, 0),
        ]
    );
    assert_eq!(
        (
            bill.plan.as_str(),
            bill.base_price_micros,
            bill.total_micros,
            bill.currency.as_str()
        ),
        ("pro", 29_000_000, 29_060_000, "usd")
    );
    let day = client
        .compute_bill(ComputeBillRequest {
            account_id: "org_bill".into(),
            period: "2026-12-10".into(),
        })
        .await
        .expect_err("a day");
    assert_eq!(day.code(), Code::InvalidArgument);
}
