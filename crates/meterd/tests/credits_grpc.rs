//! CreditsService end to end: a real redis-server, the real meterd, real gRPC.

mod support;

use std::time::{Duration, Instant};

use meter_api::v1::{
    CommitRequest, DeductRequest, GetBalanceRequest, GrantRequest, ListHistoryRequest,
    ReserveRequest, ResetRequest, credits_service_client::CreditsServiceClient,
};
use meter_redis::RedisConfig;
use meter_testkit::{FixedClock, RedisServer};
use meterd::StoreConfig;
use redis::AsyncCommands;
use support::{Meterd, config};
use tonic::{Code, transport::Channel};

fn deduct(account: &str, amount: i64, key: &str) -> DeductRequest {
    DeductRequest {
        account_id: account.into(),
        amount,
        idempotency_key: key.into(),
        reason: "test".into(),
        ..DeductRequest::default()
    }
}

/// A deduct of `quantity` units of `feature`, priced by meterd's catalog.
fn priced(account: &str, feature: &str, quantity: i64, key: &str) -> DeductRequest {
    DeductRequest {
        account_id: account.into(),
        idempotency_key: key.into(),
        feature: feature.into(),
        quantity,
        ..DeductRequest::default()
    }
}

async fn reset_to(client: &mut CreditsServiceClient<Channel>, account: &str, total: i64) {
    client
        .reset(ResetRequest {
            account_id: account.into(),
            total: Some(total),
            idempotency_key: String::new(),
        })
        .await
        .expect("reset");
}

/// 64 concurrent callers × 100 deducts of 1 against 5,000 credits.
async fn hammer(meterd: &Meterd, account: &str) -> i64 {
    let mut client = meterd.credits();
    reset_to(&mut client, account, 5_000).await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut client = meterd.credits();
            let account = account.to_owned();
            tokio::spawn(async move {
                let mut applied = 0;
                for _ in 0..100 {
                    let reply = client
                        .deduct(deduct(&account, 1, ""))
                        .await
                        .expect("deduct")
                        .into_inner();
                    let balance = reply.balance.expect("balance");
                    assert!(
                        balance.remaining >= 0 && balance.used <= 5_000,
                        "{balance:?}"
                    );
                    applied += i64::from(reply.applied);
                }
                applied
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.expect("task");
    }
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deducts_on_redis_end_exact_and_never_below_zero() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    assert_eq!(hammer(&meterd, "hot-account").await, 5_000);
    let balance = support::balance(&mut meterd.credits(), "hot-account").await;
    assert_eq!(
        (balance.total, balance.used, balance.remaining),
        (5_000, 5_000, 0)
    );
    let used: String = redis
        .connection()
        .await
        .hget("user:{hot-account}:credits", "used")
        .await
        .expect("hget");
    assert_eq!(used, "5000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deducts_on_the_embedded_store_end_exact() {
    let meterd = Meterd::memory().await;
    assert_eq!(hammer(&meterd, "hot-account").await, 5_000);
}

#[tokio::test]
async fn an_idempotent_replay_applies_once() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    let mut client = meterd.credits();
    let grant = GrantRequest {
        account_id: "org_7".into(),
        amount: 1_000,
        idempotency_key: "evt_1MqqbKLt4dXK03v5qaIbiNCC".into(),
        reason: "invoice.paid".into(),
        ..GrantRequest::default()
    };
    let first = client
        .grant(grant.clone())
        .await
        .expect("grant")
        .into_inner();
    let again = client.grant(grant).await.expect("grant").into_inner();
    assert!(!first.replayed && again.replayed);
    assert_eq!(again.balance, first.balance);
    let first = client
        .deduct(deduct("org_7", 40, "chat-9"))
        .await
        .expect("deduct")
        .into_inner();
    let again = client
        .deduct(deduct("org_7", 40, "chat-9"))
        .await
        .expect("deduct")
        .into_inner();
    assert!(first.applied && again.applied && again.replayed);
    let balance = support::balance(&mut client, "org_7").await;
    assert_eq!((balance.total, balance.used), (1_000, 40));

    let conflict = client
        .deduct(deduct("org_7", 41, "chat-9"))
        .await
        .expect_err("conflict");
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert!(
        conflict.message().contains("chat-9"),
        "{}",
        conflict.message()
    );
}

#[tokio::test]
async fn a_passed_reset_time_resets_lazily_on_the_next_call() {
    let redis = RedisServer::start();
    let mut conn = redis.connection().await;
    // Left over from before a long downtime: the period ended months ago.
    let fields = [
        ("total", "1000"),
        ("used", "990"),
        ("resetAnchor", "2025-01-31T10:00:00.000Z"),
        ("resetPeriod", "month"),
        ("resetDate", "2025-02-28T10:00:00.000Z"),
        ("lastUpdate", "2025-02-01T00:00:00.000Z"),
        ("isTrialCredits", "false"),
    ];
    let _: () = conn
        .hset_multiple("user:{sleeper}:credits", &fields)
        .await
        .expect("hset");
    let meterd = Meterd::redis(redis.url()).await;
    let mut client = meterd.credits();
    let read = support::balance(&mut client, "sleeper").await;
    assert_eq!((read.used, read.remaining), (0, 1_000));
    let next_reset = read.reset_time.expect("scheduled");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let now = i64::try_from(now).expect("fits");
    assert!(
        next_reset.seconds > now && next_reset.seconds <= now + 31 * 86_400,
        "{next_reset:?}"
    );
    let untouched: String = conn
        .hget("user:{sleeper}:credits", "used")
        .await
        .expect("hget");
    assert_eq!(untouched, "990", "reads never write");

    let charged = client
        .deduct(deduct("sleeper", 10, ""))
        .await
        .expect("deduct")
        .into_inner();
    assert!(charged.applied);
    assert_eq!(charged.balance.as_ref().map(|b| b.used), Some(10));
    let stored: std::collections::HashMap<String, String> = conn
        .hgetall("user:{sleeper}:credits")
        .await
        .expect("hgetall");
    assert_eq!(stored["used"], "10");
    assert!(
        stored["resetDate"].ends_with("T10:00:00.000Z"),
        "the anchor time of day is kept: {}",
        stored["resetDate"]
    );
    assert_ne!(stored["resetDate"], "2025-02-28T10:00:00.000Z");
}

/// `status` is INVALID_ARGUMENT and its message starts with `field`.
fn assert_invalid(status: &tonic::Status, field: &str, request: &impl std::fmt::Debug) {
    assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{request:?}: {}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_writes_nothing() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    let mut client = meterd.credits();
    let long = "x".repeat(129);
    let cases: Vec<(DeductRequest, &str)> = vec![
        (deduct("", 1, ""), "account_id"),
        (deduct("user:{1}", 1, ""), "account_id"),
        (deduct(&long, 1, ""), "account_id"),
        (deduct("u1", 0, ""), "amount"),
        (deduct("u1", -5, ""), "amount"),
        (deduct("u1", i64::MAX, ""), "amount"),
        (deduct("u1", 1, &long), "idempotency_key"),
        (deduct("u1", 1, "has space"), "idempotency_key"),
        (
            DeductRequest {
                reason: "r".repeat(257),
                ..deduct("u1", 1, "")
            },
            "reason",
        ),
        (
            DeductRequest {
                amount: 5,
                ..priced("u1", "report", 1, "")
            },
            "amount",
        ),
        (priced("u1", "no-such-feature", 0, ""), "feature"),
        (priced("u1", "Report", 0, ""), "feature"),
        (priced("u1", "report", -1, ""), "quantity"),
        (priced("u1", "report", i64::MAX, ""), "quantity"),
        (
            DeductRequest {
                quantity: 2,
                ..deduct("u1", 1, "")
            },
            "quantity",
        ),
    ];
    for (request, field) in cases {
        let status = client.deduct(request.clone()).await.expect_err("invalid");
        assert_invalid(&status, field, &request);
    }
    let grant = |amount| GrantRequest {
        account_id: "u1".into(),
        amount,
        ..GrantRequest::default()
    };
    assert_eq!(
        client.grant(grant(0)).await.expect_err("zero").code(),
        Code::InvalidArgument
    );
    client
        .grant(grant((1 << 53) - 1))
        .await
        .expect("the maximum balance");
    let overflow = client.grant(grant(1)).await.expect_err("overflow");
    assert_eq!(overflow.code(), Code::InvalidArgument);
    assert!(
        overflow.message().starts_with("amount: "),
        "{}",
        overflow.message()
    );
    let negative_total = ResetRequest {
        account_id: "u2".into(),
        total: Some(-1),
        idempotency_key: String::new(),
    };
    let status = client
        .reset(negative_total)
        .await
        .expect_err("negative total");
    assert!(
        status.message().starts_with("total: "),
        "{}",
        status.message()
    );
    let in_past = GrantRequest {
        expire_time: Some(prost_types::Timestamp {
            seconds: 1_000,
            nanos: 0,
        }),
        ..grant(5)
    };
    let bad_grants = [
        (
            GrantRequest {
                kind: 99,
                ..grant(5)
            },
            "kind",
        ),
        (
            GrantRequest {
                kind: 3,
                trial: true,
                ..grant(5)
            },
            "trial",
        ),
        (in_past, "expire_time"),
    ];
    for (request, field) in bad_grants {
        let status = client.grant(request.clone()).await.expect_err("invalid");
        assert_invalid(&status, field, &request);
    }
    let reserve = |amount, ttl: Option<i64>| ReserveRequest {
        account_id: "u1".into(),
        amount,
        ttl: ttl.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        ..ReserveRequest::default()
    };
    for (request, field) in [
        (reserve(5, None), "ttl"),
        (reserve(5, Some(0)), "ttl"),
        (reserve(5, Some(-1)), "ttl"),
        (reserve(5, Some(86_401)), "ttl"),
        (reserve(0, Some(60)), "amount"),
    ] {
        let status = client.reserve(request.clone()).await.expect_err("invalid");
        assert_invalid(&status, field, &request);
    }
    let commit = |hold: &str, amount| CommitRequest {
        account_id: "u1".into(),
        hold_id: hold.into(),
        amount,
        ..CommitRequest::default()
    };
    for (request, field) in [
        (commit("h1", 0), "amount"),
        (commit("", 5), "hold_id"),
        (commit("h 1", 5), "hold_id"),
    ] {
        let status = client.commit(request.clone()).await.expect_err("invalid");
        assert_invalid(&status, field, &request);
    }
    let history = |page_size, page_token: &str| ListHistoryRequest {
        account_id: "u1".into(),
        page_size,
        page_token: page_token.into(),
    };
    for (request, field) in [
        (history(501, ""), "page_size"),
        (history(-1, ""), "page_size"),
        (history(10, "not-a-token"), "page_token"),
    ] {
        let status = client
            .list_history(request.clone())
            .await
            .expect_err("invalid");
        assert!(
            status.code() == Code::InvalidArgument
                && status.message().starts_with(&format!("{field}: ")),
            "{request:?}: {status:?}"
        );
    }
    let mut keys: Vec<String> = redis.connection().await.keys("*").await.expect("keys");
    keys.sort();
    assert_eq!(
        keys,
        ["user:{u1}:credits", "user:{u1}:grants", "user:{u1}:history"],
        "only the valid grant wrote"
    );
}

#[tokio::test]
async fn reset_without_a_total_gives_the_free_plan_credits() {
    let meterd = Meterd::memory().await;
    let mut client = meterd.credits();
    let balance = client
        .reset(ResetRequest {
            account_id: "new-user".into(),
            total: None,
            idempotency_key: String::new(),
        })
        .await
        .expect("reset")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(
        (balance.total, balance.used, balance.trial),
        (100, 0, false)
    );
    assert!(balance.reset_time.is_some());
}

#[tokio::test]
async fn redis_down_is_unavailable_and_calls_recover_when_it_returns() {
    let mut redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    let mut client = meterd.credits();
    reset_to(&mut client, "u-down", 10).await;
    redis.stop();
    for _ in 0..3 {
        let status = client
            .deduct(deduct("u-down", 1, "k1"))
            .await
            .expect_err("redis is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let status = client
            .get_balance(GetBalanceRequest {
                account_id: "u-down".into(),
            })
            .await
            .expect_err("down");
        assert_eq!(status.code(), Code::Unavailable);
    }
    redis.restart();
    support::eventually(
        Duration::from_secs(5),
        "calls succeed after Redis returns",
        || {
            let mut client = client.clone();
            async move {
                client
                    .get_balance(GetBalanceRequest {
                        account_id: "u-down".into(),
                    })
                    .await
                    .is_ok()
            }
        },
    )
    .await;
}

/// A DeductRequest whose account_id is raw bytes, as a buggy client might send it.
#[derive(Clone, PartialEq, prost::Message)]
struct RawDeductRequest {
    #[prost(bytes = "vec", tag = "1")]
    account_id: Vec<u8>,
    #[prost(int64, tag = "2")]
    amount: i64,
}

#[tokio::test]
async fn a_request_that_does_not_decode_is_invalid_argument_naming_the_field() {
    let meterd = Meterd::memory().await;
    let mut grpc = tonic::client::Grpc::new(meterd.channel());
    grpc.ready().await.expect("ready");
    let codec =
        tonic_prost::ProstCodec::<RawDeductRequest, meter_api::v1::DeductResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/meter.v1.CreditsService/Deduct");
    let request = RawDeductRequest {
        account_id: vec![b'u', 0xff, 0xfe],
        amount: 1,
    };
    let status = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .expect_err("invalid UTF-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("account_id: "),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_reason_is_limited_in_characters_not_bytes() {
    let meterd = Meterd::memory().await;
    let mut client = meterd.credits();
    let grant = |reason: String| GrantRequest {
        account_id: "u-accents".into(),
        amount: 1,
        reason,
        ..GrantRequest::default()
    };
    client
        .grant(grant("é".repeat(256)))
        .await
        .expect("256 characters (512 bytes) are accepted");
    let refused = client
        .grant(grant("é".repeat(257)))
        .await
        .expect_err("257 characters");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("reason: is 257 characters long"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn corrupt_stored_credits_are_internal_naming_the_account_and_are_left_alone() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    let mut conn = redis.connection().await;
    let _: () = conn
        .hset_multiple("user:{c-1}:credits", &[("total", "1e3"), ("used", "0")])
        .await
        .expect("hset");
    let mut client = meterd.credits();
    let read = client
        .get_balance(GetBalanceRequest {
            account_id: "c-1".into(),
        })
        .await
        .expect_err("corrupt");
    let write = client
        .deduct(deduct("c-1", 1, "k"))
        .await
        .expect_err("corrupt");
    for status in [read, write] {
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status.message().contains("credits of account c-1")
                && status.message().contains("corrupt"),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("user:{c-1}"),
            "the key goes to the log only: {}",
            status.message()
        );
    }
    let total: String = conn
        .hget("user:{c-1}:credits", "total")
        .await
        .expect("hget");
    assert_eq!(total, "1e3", "left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_redis_does_not_answer_says_it_may_have_been_applied_and_respects_the_deadline() {
    let redis = RedisServer::start();
    let meterd = Meterd::start(config(StoreConfig::Redis(RedisConfig {
        response_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(500),
        ..RedisConfig::new(redis.url())
    })))
    .await;
    let mut client = meterd.credits();
    reset_to(&mut client, "u-frozen", 10).await;
    redis.freeze();
    let status = client
        .deduct(deduct("u-frozen", 1, "k-frozen"))
        .await
        .expect_err("no answer");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("may or may not have been applied")
            && status.message().contains("same idempotency_key"),
        "{}",
        status.message()
    );
    redis.thaw();

    // A caller's deadline shorter than --redis-timeout ends the wait sooner.
    let patient = Meterd::start(config(StoreConfig::Redis(RedisConfig {
        response_timeout: Duration::from_secs(10),
        ..RedisConfig::new(redis.url())
    })))
    .await;
    let mut client = patient.credits();
    reset_to(&mut client, "u-deadline", 10).await;
    redis.freeze();
    let mut request = tonic::Request::new(deduct("u-deadline", 1, "k-deadline"));
    // meterd answers 50 ms before the deadline, before this client's own timer.
    request.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let status = client.deduct(request).await.expect_err("deadline");
    let took = started.elapsed();
    redis.thaw();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("may or may not have been applied"),
        "{}",
        status.message()
    );
    assert!(
        took < Duration::from_secs(3),
        "the 1 s deadline took {took:?}"
    );
    // The retry with the same key applies the deduct once, whatever the first did.
    let mut retried = None;
    for _ in 0..100 {
        if let Ok(reply) = client.deduct(deduct("u-deadline", 1, "k-deadline")).await {
            retried = Some(reply.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retried = retried.expect("the retry succeeds once Redis answers");
    assert_eq!(retried.balance.map(|b| b.used), Some(1));
}

#[tokio::test]
async fn a_period_resets_when_the_clock_passes_it_without_anyone_waiting() {
    let clock = FixedClock::at("2026-01-31T10:00:00.000Z");
    let redis = RedisServer::start();
    for meterd in [
        Meterd::start_with_clock(config(StoreConfig::Memory), clock.clone()).await,
        Meterd::start_with_clock(config(support::redis(redis.url())), clock.clone()).await,
    ] {
        clock.set("2026-01-31T10:00:00.000Z");
        let mut client = meterd.credits();
        reset_to(&mut client, "u-clock", 100).await;
        let charged = client
            .deduct(deduct("u-clock", 60, ""))
            .await
            .expect("deduct")
            .into_inner();
        assert!(charged.applied);
        clock.set("2026-02-28T09:59:59.999Z");
        assert_eq!(
            support::balance(&mut client, "u-clock").await.used,
            60,
            "a millisecond before"
        );
        clock.advance(Duration::from_millis(1));
        let after = support::balance(&mut client, "u-clock").await;
        assert_eq!(
            (after.used, after.remaining),
            (0, 100),
            "Feb 28: the anchor day clamped"
        );
        let next = after.reset_time.expect("scheduled");
        let march_31 = meter_testkit::timestamp("2026-03-31T10:00:00.000Z").as_millis() / 1000;
        assert_eq!(next.seconds, march_31);
    }
}

#[tokio::test]
async fn a_feature_is_charged_at_its_price_times_the_quantity_and_replays_by_key() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    let mut client = meterd.credits();
    reset_to(&mut client, "u-priced", 100).await;
    // deploy/plans.toml, the built-in catalog: report = 10 credits.
    let reply = client
        .deduct(priced("u-priced", "report", 3, "run-1"))
        .await
        .expect("deduct")
        .into_inner();
    assert!(reply.applied);
    assert_eq!(reply.charged, 30);
    assert_eq!(reply.balance.expect("balance").used, 30);
    let replay = client
        .deduct(priced("u-priced", "report", 3, "run-1"))
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.replayed && replay.charged == 30);
    let other = client
        .deduct(priced("u-priced", "report", 4, "run-1"))
        .await
        .expect_err("same key, other quantity");
    assert_eq!(other.code(), Code::FailedPrecondition);
    // Quantity 0 means 1; too few credits left declines and says the price.
    let one = client
        .deduct(priced("u-priced", "chat:gpt-4o", 0, ""))
        .await
        .expect("one unit")
        .into_inner();
    assert_eq!((one.applied, one.charged), (true, 3));
    let declined = client
        .deduct(priced("u-priced", "report", 7, ""))
        .await
        .expect("declined")
        .into_inner();
    assert_eq!((declined.applied, declined.charged), (false, 70));
    assert_eq!(support::balance(&mut client, "u-priced").await.used, 33);
}
