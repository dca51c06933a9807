//! UsageService end to end: the real meterd on a real redis-server, real gRPC.

mod support;

use meter_api::v1::{
    EventStatus, GetUsageRequest, ListUsageEventsRequest, RecordUsageRequest, StreamUsageRequest,
    TopConsumersRequest, UsageEvent, usage_service_client::UsageServiceClient,
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

/// The same 10,000 events streamed twice by 8 concurrent StreamUsage
/// calls count once; a malformed event is rejected and named while the
/// rest of its stream is recorded; the rankings and the event log follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_streamed_twice_from_eight_streams_count_once() {
    let redis = RedisServer::start();
    let clock = FixedClock::at("2026-12-15T12:00:00.000Z");
    let meterd =
        Meterd::start_with_clock(support::config(support::redis(redis.url())), clock).await;
    // org_n used n + 1 units per event it owns, 2,500 events each.
    let events: Vec<UsageEvent> = (0..10_000)
        .map(|i| {
            let owner = i % 4;
            let mut e = event(
                &format!("org_{owner}"),
                format!("evt-{i}"),
                "2026-12-15T11:00:00.000Z",
            );
            e.value = i64::from(owner) + 1;
            if i % 1_000 == 0 {
                e.metadata = [("route".to_owned(), format!("/v1/{i}"))].into();
            }
            e
        })
        .collect();
    let streams: Vec<_> = (0..8)
        .map(|caller| {
            let mut client = UsageServiceClient::new(meterd.channel());
            let mut slice: Vec<UsageEvent> =
                events[(caller % 4) * 2_500..(caller % 4 + 1) * 2_500].to_vec();
            if caller == 0 {
                // Position 250 of stream 0: malformed, the rest still counts.
                slice[250].metric = "Not A Metric".into();
            }
            tokio::spawn(async move {
                let messages: Vec<StreamUsageRequest> = slice
                    .chunks(100)
                    .map(|chunk| StreamUsageRequest {
                        events: chunk.to_vec(),
                    })
                    .collect();
                client
                    .stream_usage(tokio_stream::iter(messages))
                    .await
                    .expect("stream")
                    .into_inner()
            })
        })
        .collect();
    let mut summaries = Vec::new();
    for stream in streams {
        summaries.push(stream.await.expect("task"));
    }
    let recorded: i64 = summaries.iter().map(|s| s.recorded).sum();
    let duplicates: i64 = summaries.iter().map(|s| s.duplicates).sum();
    assert_eq!(recorded, 10_000, "each event counted once");
    assert_eq!(duplicates, 20_000 - 10_000 - 1);
    assert!(summaries.iter().all(|s| s.batches == 25), "{summaries:?}");
    assert_eq!(summaries[0].rejected, 1);
    let rejection = &summaries[0].rejections[0];
    assert_eq!(
        (rejection.index, rejection.event_id.as_str()),
        (250, "evt-250")
    );
    assert!(rejection.reason.contains("metric"), "{}", rejection.reason);
    let mut client = UsageServiceClient::new(meterd.channel());
    for n in 0..4_i64 {
        let reply = client
            .get_usage(GetUsageRequest {
                account_id: format!("org_{n}"),
                period: "2026-12".into(),
                metrics: vec!["api_request".into()],
            })
            .await
            .expect("usage")
            .into_inner();
        assert_eq!(reply.values["api_request"], 2_500 * (n + 1), "org_{n}");
    }
    let top = client
        .top_consumers(TopConsumersRequest {
            metric: "api_request".into(),
            period: "2026-12".into(),
            limit: 3,
        })
        .await
        .expect("top")
        .into_inner();
    let ranked: Vec<(&str, i64)> = top
        .consumers
        .iter()
        .map(|c| (c.account_id.as_str(), c.used))
        .collect();
    assert_eq!(
        ranked,
        [("org_3", 10_000), ("org_2", 7_500), ("org_1", 5_000)]
    );
    // org_0's events with metadata: evt-0, evt-1000, ... evt-9000 (3 of 4 owners skip).
    let logged = client
        .list_usage_events(ListUsageEventsRequest {
            account_id: "org_0".into(),
            metric: "api_request".into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("log")
        .into_inner();
    assert_eq!(logged.events.len(), 2);
    assert!(!logged.next_page_token.is_empty());
    let first = logged.events[0].event.as_ref().expect("event");
    assert!(first.event_id.starts_with("evt-") && first.metadata["route"].starts_with("/v1/"));
    assert_eq!(
        logged.events[0].record_time,
        Some(ts("2026-12-15T12:00:00.000Z"))
    );
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_usage_events(ListUsageEventsRequest {
                account_id: "org_0".into(),
                metric: String::new(),
                page_size: 3,
                page_token: token,
            })
            .await
            .expect("log")
            .into_inner();
        ids.extend(
            page.events
                .into_iter()
                .map(|e| e.event.expect("event").event_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.sort();
    let expected: Vec<String> = (0..10).map(|k| format!("evt-{}", k * 1_000)).collect();
    assert_eq!(ids, expected, "every logged event once, none twice");
    for (request, field) in [
        (
            TopConsumersRequest {
                metric: "api_request".into(),
                period: "2026-13".into(),
                limit: 0,
            },
            "period",
        ),
        (
            TopConsumersRequest {
                metric: "api_request".into(),
                period: "2026-12".into(),
                limit: 1_001,
            },
            "limit",
        ),
        (
            TopConsumersRequest {
                metric: "API".into(),
                period: "2026-12".into(),
                limit: 0,
            },
            "metric",
        ),
    ] {
        let status = client.top_consumers(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let status = client
        .list_usage_events(ListUsageEventsRequest {
            account_id: "org_0".into(),
            metric: String::new(),
            page_size: 0,
            page_token: "next".into(),
        })
        .await
        .expect_err("token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("page_token"),
        "{}",
        status.message()
    );
    // An empty message ends the stream with INVALID_ARGUMENT.
    let status = client
        .stream_usage(tokio_stream::iter(vec![StreamUsageRequest {
            events: vec![],
        }]))
        .await
        .expect_err("empty message");
    assert_eq!(status.code(), Code::InvalidArgument);
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
    assert!(bill.provisional, "the month is still running");
    let november = client
        .compute_bill(ComputeBillRequest {
            account_id: "org_bill".into(),
            period: "2026-11".into(),
        })
        .await
        .expect("bill")
        .into_inner()
        .bill
        .expect("bill");
    assert!(!november.provisional, "past its grace: final");
    let day = client
        .compute_bill(ComputeBillRequest {
            account_id: "org_bill".into(),
            period: "2026-12-10".into(),
        })
        .await
        .expect_err("a day");
    assert_eq!(day.code(), Code::InvalidArgument);
}
