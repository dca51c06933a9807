//! Bounded work: with Redis frozen, meterd refuses what it cannot hold at
//! once, its memory stays bounded, and every change applies exactly once
//! when callers retry with their idempotency keys.

mod support;

use std::time::{Duration, Instant};

use meter_api::v1::{DeductRequest, ResetRequest};
use meter_testkit::RedisServer;
use support::MeterdProcess;
use tonic::{Code, transport::Channel};

/// Calls offered while Redis is frozen.
const CALLS: usize = 10_000;
/// HTTP/2 connections they arrive on, as from many client pods.
const CONNECTIONS: usize = 40;
/// The default bound on calls in flight (and on pending Redis commands).
const IN_FLIGHT: usize = 2_048;
/// meterd's peak RSS under that load, with the default bounds (measured
/// in a debug build: 77 MiB when this test was written, 91 MiB before
/// per-call request ids, spans and metrics, 94 MiB with them; a release
/// build takes less). Unbounded queueing would take hundreds.
const RSS_BOUND_MIB: u64 = 112;

fn deduct(i: usize) -> DeductRequest {
    DeductRequest {
        account_id: "u-overload".into(),
        amount: 1,
        idempotency_key: format!("call-{i}"),
        ..DeductRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_under_ten_thousand_calls_keeps_memory_bounded_and_totals_exact() {
    let redis = RedisServer::start();
    // The default bounds (2,048 calls in flight, 2,048 Redis commands
    // pending); a Redis timeout longer than the freeze, so the calls that
    // were admitted are answered once Redis runs again.
    let mut meterd = MeterdProcess::start(
        &["--listen", "127.0.0.1:0", "--redis-timeout", "20s"],
        &[("REDIS_URL", &redis.url())],
    );
    let addr = meterd.addr();
    meterd.wait_for_log("store answers");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        channels.push(channel);
    }
    let client = |i: usize| {
        meter_api::v1::credits_service_client::CreditsServiceClient::new(
            channels[i % CONNECTIONS].clone(),
        )
    };
    client(0)
        .reset(ResetRequest {
            account_id: "u-overload".into(),
            total: Some(1_000_000),
            idempotency_key: String::new(),
        })
        .await
        .expect("reset");
    let before_kib = meterd.peak_rss_kib();

    redis.freeze();
    let frozen_at = Instant::now();
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut client = client(i);
            tokio::spawn(async move {
                let outcome = client.deduct(deduct(i)).await;
                (outcome, frozen_at.elapsed())
            })
        })
        .collect();
    // Those past the bounds are refused while Redis is still frozen.
    let refused_by = Duration::from_secs(4);
    tokio::time::sleep(refused_by).await;
    let peak_kib = meterd.peak_rss_kib();
    redis.thaw();

    let mut refused = 0;
    let mut failed_otherwise = Vec::new();
    for call in calls {
        let (outcome, took) = call.await.expect("task");
        match outcome {
            Ok(_) => {}
            Err(status)
                if status.code() == Code::Unavailable
                    && status.message().contains("nothing was applied") =>
            {
                refused += 1;
                assert!(took < refused_by, "refused only after {took:?}");
            }
            Err(status) => failed_otherwise.push(status),
        }
    }
    // While Redis is frozen no admitted call ends, so at most IN_FLIGHT get in.
    assert!(
        refused >= CALLS - IN_FLIGHT,
        "only {refused} of {CALLS} calls were refused at once; others failed: {:?}",
        failed_otherwise.first()
    );
    assert!(
        failed_otherwise.is_empty(),
        "admitted calls are answered once Redis runs again: {:?}",
        failed_otherwise.first()
    );
    assert!(
        peak_kib < RSS_BOUND_MIB * 1024,
        "meterd's peak RSS was {} MiB (from {} MiB before the freeze); the bound is {RSS_BOUND_MIB} MiB",
        peak_kib / 1024,
        before_kib / 1024
    );
    eprintln!(
        "peak RSS {} MiB (before the freeze {} MiB); {refused} of {CALLS} refused at once",
        peak_kib / 1024,
        before_kib / 1024
    );

    // Callers retry every call with its key: each applies exactly once.
    let mut retried = 0;
    for chunk in (0..CALLS).collect::<Vec<_>>().chunks(500) {
        let retries: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let mut client = client(i);
                tokio::spawn(async move { client.deduct(deduct(i)).await })
            })
            .collect();
        for retry in retries {
            let reply = retry.await.expect("task").expect("the retry succeeds");
            assert!(reply.into_inner().applied);
            retried += 1;
        }
    }
    assert_eq!(retried, CALLS);
    let balance = support::balance(&mut client(0), "u-overload").await;
    assert_eq!(
        balance.used, CALLS as i64,
        "every deduct applied exactly once"
    );
}
