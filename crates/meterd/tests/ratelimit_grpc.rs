//! RateLimitService and Envoy's ShouldRateLimit over real gRPC, on a real
//! redis-server and on the embedded store.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use meter_api::{
    envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse, rate_limit_response::Code as EnvoyCode,
            rate_limit_service_client::RateLimitServiceClient as EnvoyClient,
        },
    },
    v1::{
        CheckRateLimitRequest, CheckRateLimitResponse, RateLimitAlgorithm, RateLimitFailMode,
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use meter_ratelimit::LimitsConfig;
use meter_testkit::RedisServer;
use meterd::{Config, StoreConfig};
use support::{Meterd, config, redis};
use tonic::{Code, transport::Channel};

const LIMITS: &str = r#"
[policies.tight]
limit = 1
window = "1h"

[policies.open]
limit = 1
window = "1h"
fail = "open"

[policies.rollout]
limit = 1
window = "1h"
shadow = true

[[domains]]
domain = "test"

[[domains.descriptors]]
key = "a"
rate_limit = { requests_per_unit = 10, unit = "minute" }

[[domains.descriptors]]
key = "b"
rate_limit = { requests_per_unit = 1, unit = "hour" }

[[domains.descriptors]]
key = "shadow"
shadow_mode = true
rate_limit = { requests_per_unit = 1, unit = "hour" }

[[domains.descriptors]]
key = "failopen"
fail = "open"
rate_limit = { requests_per_unit = 5, unit = "hour" }
"#;

fn with_limits(store: StoreConfig) -> Config {
    Config {
        limits: Arc::new(LimitsConfig::from_toml("test", LIMITS).expect("valid limits")),
        ..config(store)
    }
}

fn client(meterd: &Meterd) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::new(meterd.channel())
}

fn envoy(meterd: &Meterd) -> EnvoyClient<Channel> {
    EnvoyClient::new(meterd.channel())
}

fn inline(
    key: &str,
    limit: u64,
    window: Duration,
    algorithm: RateLimitAlgorithm,
) -> CheckRateLimitRequest {
    CheckRateLimitRequest {
        key: key.into(),
        limit,
        window: Some(prost_types::Duration {
            seconds: i64::try_from(window.as_secs()).expect("fits"),
            nanos: i32::try_from(window.subsec_nanos()).expect("fits"),
        }),
        algorithm: algorithm.into(),
        ..Default::default()
    }
}

async fn check(
    client: &mut RateLimitServiceClient<Channel>,
    request: CheckRateLimitRequest,
) -> CheckRateLimitResponse {
    client
        .check_rate_limit(request)
        .await
        .unwrap_or_else(|s| panic!("CheckRateLimit: {s:?}"))
        .into_inner()
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

async fn should(
    client: &mut EnvoyClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
) -> RateLimitResponse {
    client
        .should_rate_limit(RateLimitRequest {
            domain: "test".into(),
            descriptors,
            hits_addend: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("ShouldRateLimit: {s:?}"))
        .into_inner()
}

fn codes(response: &RateLimitResponse) -> Vec<EnvoyCode> {
    response
        .statuses
        .iter()
        .map(|s| EnvoyCode::try_from(s.code).expect("known code"))
        .collect()
}

fn header<'a>(response: &'a RateLimitResponse, key: &str) -> Option<&'a str> {
    response
        .response_headers_to_add
        .iter()
        .find(|h| h.key == key)
        .map(|h| h.value.as_str())
}

/// 200 concurrent checks against a limit of 50 admit exactly 50, for each algorithm.
async fn two_hundred_racers_get_exactly_fifty(meterd: &Meterd) {
    let year = Duration::from_secs(365 * 86_400);
    for algorithm in [
        RateLimitAlgorithm::SlidingWindow,
        RateLimitAlgorithm::FixedWindow,
        RateLimitAlgorithm::TokenBucket,
    ] {
        let key = format!("race-{algorithm:?}");
        let racers: Vec<_> = (0..200)
            .map(|_| {
                let mut client = client(meterd);
                let request = inline(&key, 50, year, algorithm);
                tokio::spawn(async move { check(&mut client, request).await.allowed })
            })
            .collect();
        let mut allowed = 0;
        for racer in racers {
            allowed += usize::from(racer.await.expect("racer"));
        }
        assert_eq!(allowed, 50, "{algorithm:?}");
        let after = check(&mut client(meterd), inline(&key, 50, year, algorithm)).await;
        assert!(
            !after.allowed && after.remaining == 0,
            "{algorithm:?}: {after:?}"
        );
        assert!(
            after.retry_after.is_some_and(|d| d.seconds > 0),
            "{after:?}"
        );
    }
}

/// An Envoy request with two descriptors, one over its limit: OVER_LIMIT,
/// statuses [OK, OVER_LIMIT], the headers a proxy forwards, and the
/// descriptor under its limit not counted for the refused request.
async fn one_descriptor_over_its_limit_refuses_the_request(meterd: &Meterd) {
    let mut envoy = envoy(meterd);
    let first = should(
        &mut envoy,
        vec![descriptor(&[("a", "x")]), descriptor(&[("b", "x")])],
    )
    .await;
    assert_eq!(first.overall_code, i32::from(EnvoyCode::Ok));
    assert_eq!(codes(&first), [EnvoyCode::Ok, EnvoyCode::Ok]);
    assert_eq!(first.statuses[0].limit_remaining, 9);
    assert_eq!(first.statuses[1].limit_remaining, 0);
    let limit = first.statuses[0].current_limit.as_ref().expect("a limit");
    assert_eq!(
        (limit.requests_per_unit, limit.name.as_str()),
        (10, "test/a")
    );

    let second = should(
        &mut envoy,
        vec![descriptor(&[("a", "x")]), descriptor(&[("b", "x")])],
    )
    .await;
    assert_eq!(second.overall_code, i32::from(EnvoyCode::OverLimit));
    assert_eq!(codes(&second), [EnvoyCode::Ok, EnvoyCode::OverLimit]);
    assert_eq!(
        second.statuses[0].limit_remaining, 9,
        "a is not counted for a refused request"
    );
    assert!(
        second.statuses[1]
            .duration_until_reset
            .is_some_and(|d| d.seconds > 3_500)
    );
    assert_eq!(header(&second, "x-ratelimit-limit"), Some("1, 1;w=3600"));
    assert_eq!(header(&second, "x-ratelimit-remaining"), Some("0"));
    assert!(
        header(&second, "retry-after").is_some_and(|s| s.parse::<u64>().expect("seconds") > 3_500)
    );

    // A descriptor no limit matches is OK, with no limit.
    let unmatched = should(&mut envoy, vec![descriptor(&[("c", "x")])]).await;
    assert_eq!(codes(&unmatched), [EnvoyCode::Ok]);
    assert!(unmatched.statuses[0].current_limit.is_none());
    assert!(unmatched.response_headers_to_add.is_empty());
}

/// What a proxy may send never turns into a refused call (which a proxy
/// failing open would let through unchecked): a long value is counted
/// under its digest, an override of 0 requests is over the limit, a
/// descriptor hits_addend of 0 only looks.
async fn odd_descriptors_are_limited_not_refused(meterd: &Meterd) {
    let mut envoy = envoy(meterd);
    let long = format!("/search?q={}", "x".repeat(300));
    for expected in [9, 8] {
        let response = should(&mut envoy, vec![descriptor(&[("a", long.as_str())])]).await;
        assert_eq!(codes(&response), [EnvoyCode::Ok]);
        assert_eq!(
            response.statuses[0].limit_remaining, expected,
            "counted under its digest"
        );
    }
    let other_long = format!("/search?q={}", "y".repeat(300));
    let response = should(&mut envoy, vec![descriptor(&[("a", other_long.as_str())])]).await;
    assert_eq!(
        response.statuses[0].limit_remaining, 9,
        "another value, another count"
    );

    let blocked = RateLimitDescriptor {
        limit: Some(meter_api::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride {
            requests_per_unit: 0,
            unit: meter_api::envoy::r#type::v3::RateLimitUnit::Minute.into(),
        }),
        ..descriptor(&[("a", "blocked")])
    };
    let response = should(
        &mut envoy,
        vec![descriptor(&[("a", "beside-blocked")]), blocked],
    )
    .await;
    assert_eq!(response.overall_code, i32::from(EnvoyCode::OverLimit));
    assert_eq!(codes(&response), [EnvoyCode::Ok, EnvoyCode::OverLimit]);
    let look = RateLimitDescriptor {
        hits_addend: Some(0),
        ..descriptor(&[("a", "beside-blocked")])
    };
    let response = should(&mut envoy, vec![look.clone()]).await;
    assert_eq!(
        response.statuses[0].limit_remaining, 10,
        "nothing was counted, and looking counts nothing"
    );
    let response = should(&mut envoy, vec![look]).await;
    assert_eq!(response.statuses[0].limit_remaining, 10);
}

/// Shadow mode counts and reports but never refuses.
async fn shadow_mode_allows_but_reports(meterd: &Meterd) {
    let mut client = client(meterd);
    let request = || CheckRateLimitRequest {
        key: "shadowed".into(),
        policy: "rollout".into(),
        ..Default::default()
    };
    let first = check(&mut client, request()).await;
    assert!(first.allowed && !first.shadow_denied, "{first:?}");
    let second = check(&mut client, request()).await;
    assert!(
        second.allowed && second.shadow_denied && second.remaining == 0,
        "{second:?}"
    );

    let mut envoy = envoy(meterd);
    for _ in 0..3 {
        let response = should(
            &mut envoy,
            vec![
                descriptor(&[("shadow", "x")]),
                descriptor(&[("a", "shadowed")]),
            ],
        )
        .await;
        assert_eq!(codes(&response), [EnvoyCode::Ok, EnvoyCode::Ok]);
    }
    let again = should(&mut envoy, vec![descriptor(&[("a", "shadowed")])]).await;
    assert_eq!(
        again.statuses[0].limit_remaining, 6,
        "the shadowed requests were admitted and counted"
    );
}

/// Bad input names the field.
async fn bad_input_names_the_field(meterd: &Meterd) {
    let mut client = client(meterd);
    let year = Duration::from_secs(365 * 86_400);
    let cases = [
        (inline("", 5, year, RateLimitAlgorithm::Unspecified), "key"),
        (
            inline("k", 0, year, RateLimitAlgorithm::Unspecified),
            "limit",
        ),
        (
            inline("k", 5, Duration::ZERO, RateLimitAlgorithm::Unspecified),
            "window",
        ),
        (
            CheckRateLimitRequest {
                cost: 6,
                ..inline("k", 5, year, RateLimitAlgorithm::Unspecified)
            },
            "cost",
        ),
        (
            CheckRateLimitRequest {
                key: "k".into(),
                policy: "nope".into(),
                ..Default::default()
            },
            "policy",
        ),
        (
            CheckRateLimitRequest {
                policy: "tight".into(),
                ..inline("k", 5, year, RateLimitAlgorithm::Unspecified)
            },
            "policy",
        ),
        (
            CheckRateLimitRequest {
                algorithm: 9,
                ..inline("k", 5, year, RateLimitAlgorithm::Unspecified)
            },
            "algorithm",
        ),
    ];
    for (request, field) in cases {
        let status = client
            .check_rate_limit(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let status = envoy(meterd)
        .should_rate_limit(RateLimitRequest {
            domain: "test".into(),
            descriptors: vec![descriptor(&[("a", "x")]), descriptor(&[])],
            hits_addend: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("descriptors[1].entries"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_over_grpc_on_redis() {
    let server = RedisServer::start();
    let meterd = Meterd::start(with_limits(redis(server.url()))).await;
    two_hundred_racers_get_exactly_fifty(&meterd).await;
    one_descriptor_over_its_limit_refuses_the_request(&meterd).await;
    shadow_mode_allows_but_reports(&meterd).await;
    odd_descriptors_are_limited_not_refused(&meterd).await;
    bad_input_names_the_field(&meterd).await;
    // Every key expires by itself.
    let mut connection = server.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rl:*")
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    assert!(keys.len() >= 5, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("PTTL");
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
        assert!(key.starts_with("rl:{"), "{key} carries its hash tag");
        if key.ends_with(":sl") {
            let sealed: i64 = redis::cmd("LLEN")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .expect("LLEN");
            assert!(sealed <= 60, "{key} holds {sealed} sealed buckets");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_over_grpc_on_the_embedded_store() {
    let meterd = Meterd::start(with_limits(StoreConfig::Memory)).await;
    two_hundred_racers_get_exactly_fifty(&meterd).await;
    one_descriptor_over_its_limit_refuses_the_request(&meterd).await;
    shadow_mode_allows_but_reports(&meterd).await;
    odd_descriptors_are_limited_not_refused(&meterd).await;
    bad_input_names_the_field(&meterd).await;
}

/// The sliding window in real time on Redis's clock, with a short window:
/// however the checks fall across window edges, no `limit + 1` admissions
/// fit in one window (by the client's own clock, which can only make the
/// span it sees longer than the server's by the round trips).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_window_never_admits_more_than_the_limit_in_real_time() {
    let server = RedisServer::start();
    let meterd = Meterd::redis(server.url()).await;
    let mut client = client(&meterd);
    let window = Duration::from_millis(400);
    let limit = 5;
    let started = Instant::now();
    let mut admitted: Vec<(Instant, Instant)> = Vec::new();
    let mut step = 0u64;
    while started.elapsed() < Duration::from_millis(2_500) {
        step += 1;
        let sent = Instant::now();
        let answer = check(
            &mut client,
            inline("realtime", limit, window, RateLimitAlgorithm::SlidingWindow),
        )
        .await;
        if answer.allowed {
            admitted.push((sent, Instant::now()));
        }
        // Irregular gaps, 0-29 ms.
        tokio::time::sleep(Duration::from_millis(step * 7 % 30)).await;
    }
    let limit = usize::try_from(limit).expect("small");
    assert!(
        admitted.len() >= 2 * limit,
        "the limit admits again as time passes: {}",
        admitted.len()
    );
    for pair in admitted.windows(limit + 1) {
        let (first_sent, _) = pair[0];
        let (_, last_answered) = pair[limit];
        assert!(
            last_answered - first_sent >= window,
            "{} admissions within {:?}",
            limit + 1,
            last_answered - first_sent
        );
    }
}

/// With Redis stopped: a limit that fails open admits and says so; one that
/// fails closed answers UNAVAILABLE; Envoy's request is admitted only when
/// every limit it matches fails open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_and_fail_closed_with_redis_stopped() {
    let mut server = RedisServer::start();
    let meterd = Meterd::start(with_limits(redis(server.url()))).await;
    let mut client = client(&meterd);
    let policy = |name: &str| CheckRateLimitRequest {
        key: "k".into(),
        policy: name.into(),
        ..Default::default()
    };
    assert!(check(&mut client, policy("open")).await.allowed);
    assert!(
        !check(&mut client, policy("open")).await.allowed,
        "Redis up: the limit holds"
    );
    server.stop();

    let open = check(&mut client, policy("open")).await;
    assert!(open.allowed && open.failed_open, "{open:?}");
    let closed = client
        .check_rate_limit(policy("tight"))
        .await
        .expect_err("fails closed");
    assert_eq!(closed.code(), Code::Unavailable);
    assert!(
        closed.message().contains("fail mode OPEN"),
        "{}",
        closed.message()
    );
    let overridden = check(
        &mut client,
        CheckRateLimitRequest {
            fail_mode: RateLimitFailMode::Open.into(),
            ..policy("tight")
        },
    )
    .await;
    assert!(
        overridden.allowed && overridden.failed_open,
        "{overridden:?}"
    );
    let inline_closed = client
        .check_rate_limit(inline(
            "k",
            5,
            Duration::from_secs(60),
            RateLimitAlgorithm::Unspecified,
        ))
        .await
        .expect_err("inline limits fail closed by default");
    assert_eq!(inline_closed.code(), Code::Unavailable);

    let mut envoy = envoy(&meterd);
    let open = should(
        &mut envoy,
        vec![
            descriptor(&[("failopen", "x")]),
            descriptor(&[("unmatched", "x")]),
        ],
    )
    .await;
    assert_eq!(codes(&open), [EnvoyCode::Ok, EnvoyCode::Ok]);
    assert!(
        open.response_headers_to_add.is_empty(),
        "admitted unchecked: no quota to tell"
    );
    let shadow = check(&mut client, policy("rollout")).await;
    assert!(
        shadow.allowed && shadow.failed_open,
        "a shadow limit never refuses: {shadow:?}"
    );
    let shadow = should(&mut envoy, vec![descriptor(&[("shadow", "down")])]).await;
    assert_eq!(codes(&shadow), [EnvoyCode::Ok]);
    let closed = envoy
        .should_rate_limit(RateLimitRequest {
            domain: "test".into(),
            descriptors: vec![descriptor(&[("failopen", "x")]), descriptor(&[("a", "x")])],
            hits_addend: 0,
        })
        .await
        .expect_err("a is fail closed");
    assert_eq!(closed.code(), Code::Unavailable);

    server.restart();
    support::eventually(Duration::from_secs(10), "Redis back", || {
        let mut client = client.clone();
        async move { client.check_rate_limit(policy("tight")).await.is_ok() }
    })
    .await;
}
