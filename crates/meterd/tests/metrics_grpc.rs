//! `GET /metrics` over real HTTP while meterd serves real gRPC: the text
//! passes `promtool check metrics`, and the counters move by exactly the
//! calls made. One test in this file: the metrics are the process'.

mod support;

use std::collections::HashMap;

use meter_api::v1::{
    CheckQuotaRequest, CommitRequest, DeductRequest, GrantRequest, RecordUsageRequest,
    RegisterAccountRequest, ReserveRequest, UsageEvent,
    subscription_service_client::SubscriptionServiceClient,
    usage_service_client::UsageServiceClient,
};
use meter_testkit::http::http_get as get;
use meterd::StoreConfig;
use support::{Meterd, config, scrape};
use tonic::Code;

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`; fails saying how to install it.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "promtool is needed to check /metrics ({error}): `sudo apt-get install -y \
             --no-install-recommends prometheus` (Debian/Ubuntu), or `make test-deps`"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_exactly_the_calls_made() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let meterd = Meterd::start(meterd::Config {
        metrics_listen: Some(addr),
        ..config(StoreConfig::Memory)
    })
    .await;
    let before = scrape(addr).await.1;

    let mut credits = meterd.credits();
    credits
        .grant(GrantRequest {
            account_id: "org_metrics".into(),
            amount: 50,
            idempotency_key: "pack-1".into(),
            ..GrantRequest::default()
        })
        .await
        .expect("grant");
    let deduct = |key: &str, amount: i64| DeductRequest {
        account_id: "org_metrics".into(),
        amount,
        idempotency_key: key.into(),
        ..DeductRequest::default()
    };
    for (key, amount) in [("d-1", 5), ("d-2", 7), ("d-1", 5)] {
        credits.deduct(deduct(key, amount)).await.expect("deduct");
    }
    let bad = credits
        .deduct(deduct("d-3", 0))
        .await
        .expect_err("an amount of 0 is refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let held = credits
        .reserve(ReserveRequest {
            account_id: "org_metrics".into(),
            amount: 10,
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            idempotency_key: "h-1".into(),
            ..ReserveRequest::default()
        })
        .await
        .expect("reserve")
        .into_inner();
    for _ in 0..2 {
        credits
            .commit(CommitRequest {
                account_id: "org_metrics".into(),
                hold_id: held.hold_id.clone(),
                amount: 4,
                reason: String::new(),
            })
            .await
            .expect("commit (the second answers the first)");
    }
    let mut accounts = SubscriptionServiceClient::new(meterd.channel());
    for _ in 0..2 {
        accounts
            .register_account(RegisterAccountRequest {
                account_id: "org_metrics_2".into(),
                idempotency_key: "signup".into(),
                ..RegisterAccountRequest::default()
            })
            .await
            .expect("register");
    }
    let mut usage = UsageServiceClient::new(meterd.channel());
    let event = |id: &str| UsageEvent {
        account_id: "org_metrics".into(),
        metric: "api_request".into(),
        value: 1,
        event_id: id.into(),
        ..UsageEvent::default()
    };
    usage
        .record_usage(RecordUsageRequest {
            events: vec![event("e-1"), event("e-2"), event("e-1")],
        })
        .await
        .expect("record");
    let denied = usage
        .check_quota(CheckQuotaRequest {
            account_id: "org_metrics".into(),
            metric: "api_request".into(),
            amount: 1_000_000,
            consume: false,
            idempotency_key: String::new(),
        })
        .await
        .expect("quota")
        .into_inner();
    assert!(!denied.allowed);

    let (text, after) = scrape(addr).await;
    promtool_check(&text);
    let moved = |name: &str| value(&after, name) - value(&before, name);
    let calls = |method: &str, code: &str| {
        moved(&format!(
            "meter_grpc_requests_total{{service=\"meter.v1.CreditsService\",method=\"{method}\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(calls("Deduct", "OK"), 3.0, "{text}");
    assert_eq!(calls("Deduct", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(calls("Grant", "OK"), 1.0);
    assert_eq!(
        moved(
            "meter_grpc_request_duration_seconds_count{service=\"meter.v1.CreditsService\",method=\"Deduct\"}"
        ),
        4.0
    );
    assert_eq!(
        moved("meter_credits_deducted_total"),
        12.0 + 4.0,
        "two deducts and a commit; replays are not counted twice"
    );
    assert_eq!(moved("meter_holds_total{outcome=\"reserved\"}"), 1.0);
    assert_eq!(moved("meter_holds_total{outcome=\"committed\"}"), 1.0);
    assert_eq!(
        moved(
            "meter_idempotent_replays_total{service=\"meter.v1.CreditsService\",method=\"Commit\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            "meter_idempotent_replays_total{service=\"meter.v1.SubscriptionService\",method=\"RegisterAccount\"}"
        ),
        1.0
    );
    assert!(after.contains_key("meter_redis_pending"), "{text}");
    assert_eq!(moved("meter_credits_granted_total"), 50.0);
    assert_eq!(
        moved(
            "meter_idempotent_replays_total{service=\"meter.v1.CreditsService\",method=\"Deduct\"}"
        ),
        1.0
    );
    assert_eq!(moved("meter_usage_events_total{outcome=\"recorded\"}"), 2.0);
    assert_eq!(
        moved("meter_usage_events_total{outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(moved("meter_quota_denials_total"), 1.0);
    assert_eq!(value(&after, "meter_grpc_in_flight"), 0.0);
    assert_eq!(value(&after, "meter_store_serving"), 1.0);
    assert_eq!(get(addr, "/nothing").await.0, 404);
}
