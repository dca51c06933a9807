//! meterd on a real redis-server over TLS (`rediss://`, a private CA,
//! `tls-auth-clients yes`) as the ACL user `deploy/README.md` tells
//! operators to create: every service's calls work with exactly the
//! permissions documented there, and Redis refuses a meterd without the
//! client certificate.

mod support;

use std::{cell::Cell, time::Duration};

use meter_api::v1::{
    CheckRateLimitRequest, DeleteAccountRequest, GetBalanceRequest, GetStatsRequest,
    GetUsageRequest, GrantRequest, RecordUsageRequest, UsageEvent,
    rate_limit_service_client::RateLimitServiceClient, stats_service_client::StatsServiceClient,
    subscription_service_client::SubscriptionServiceClient,
    usage_service_client::UsageServiceClient,
};
use meter_redis::{RedisConfig, RedisTls};
use meter_testkit::{
    RedisServer,
    tls::{certificates, read},
};
use meterd::StoreConfig;
use support::{Meterd, config, fill_account, keys_of};
use tonic::Code;

const PASSWORD: &str = "meterd-acl-test-password";

/// The `ACL SETUSER meterd …` command of deploy/README.md, with `PASSWORD`.
fn documented_acl() -> Vec<String> {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/README.md"),
    )
    .expect("deploy/README.md");
    let start = readme
        .find("`ACL SETUSER meterd ")
        .expect("deploy/README.md documents the ACL user");
    let command = readme[start + 1..]
        .split('`')
        .next()
        .expect("a closing backtick");
    command
        .split_whitespace()
        .skip(1)
        .map(|word| word.replace("PASSWORD", PASSWORD))
        .collect()
}

fn meterd_config(url: String, tls: RedisTls) -> meterd::Config {
    config(StoreConfig::Redis(RedisConfig {
        connect_timeout: Duration::from_millis(500),
        tls: Some(tls),
        ..RedisConfig::new(url)
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_works_over_tls_as_the_documented_acl_user() {
    let certs = certificates();
    let dir = certs.path();
    let file = |name: &str| dir.join(name).display().to_string();
    let tls_port = Cell::new(0);
    let redis = RedisServer::start_with_fresh(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        tls_port.set(port);
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("client-ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    });
    let mut admin = redis.connection().await;
    let acl = documented_acl();
    let mut setuser = redis::cmd("ACL");
    for word in &acl {
        setuser.arg(word);
    }
    setuser
        .query_async::<()>(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("ACL {acl:?}: {e}"));

    let url = format!("rediss://meterd:{PASSWORD}@127.0.0.1:{}", tls_port.get());
    let meterd = Meterd::start(meterd_config(
        url.clone(),
        RedisTls {
            ca: Some(read(dir, "server-ca.pem")),
            client: Some((read(dir, "client.pem"), read(dir, "client.key"))),
        },
    ))
    .await;
    let account = "org_tls_acl";
    // Every kind of key meterd keeps for an account, through every script.
    fill_account(&meterd, account).await;
    let balance = meterd
        .credits()
        .get_balance(GetBalanceRequest {
            account_id: account.into(),
        })
        .await
        .expect("GetBalance")
        .into_inner()
        .balance
        .expect("a balance");
    // 124 taken from 100 of allowance and pack-1's 50, before the plan began.
    assert_eq!(
        balance.grants.first().map(|g| g.remaining),
        Some(26),
        "{balance:?}"
    );
    let stats = StatsServiceClient::new(meterd.channel())
        .get_stats(GetStatsRequest {
            account_id: account.into(),
        })
        .await
        .expect("GetStats");
    assert!(stats.into_inner().stats.is_some());
    let mut usage = UsageServiceClient::new(meterd.channel());
    usage
        .record_usage(RecordUsageRequest {
            events: vec![UsageEvent {
                account_id: account.into(),
                metric: "api_request".into(),
                value: 3,
                event_id: "e-1".into(),
                ..UsageEvent::default()
            }],
        })
        .await
        .expect("RecordUsage");
    let month = meter_core::Clock::now(&meter_core::SystemClock).to_string()[..7].to_owned();
    let used = usage
        .get_usage(GetUsageRequest {
            account_id: account.into(),
            period: month,
            ..GetUsageRequest::default()
        })
        .await
        .expect("GetUsage")
        .into_inner();
    assert_eq!(used.values.get("api_request"), Some(&3), "{used:?}");
    // The rate limit script reads the server's TIME (+time in the ACL).
    let check = RateLimitServiceClient::new(meterd.channel())
        .check_rate_limit(CheckRateLimitRequest {
            key: format!("api:{account}"),
            limit: 10,
            window: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..CheckRateLimitRequest::default()
        })
        .await
        .expect("CheckRateLimit")
        .into_inner();
    assert!(check.allowed);
    let deleted = SubscriptionServiceClient::new(meterd.channel())
        .delete_account(DeleteAccountRequest {
            account_id: account.into(),
        })
        .await
        .expect("DeleteAccount")
        .into_inner();
    assert!(deleted.deleted);
    let keys = keys_of(&redis, account).await;
    assert!(keys.is_empty(), "left after DeleteAccount: {keys:?}");
    meterd.stop().await.expect("meterd stops");

    // Without its client certificate Redis refuses the handshake: calls
    // fail UNAVAILABLE, nothing applied.
    let stranger = Meterd::start(meterd_config(
        url,
        RedisTls {
            ca: Some(read(dir, "server-ca.pem")),
            client: None,
        },
    ))
    .await;
    let refused = stranger
        .credits()
        .grant(GrantRequest {
            account_id: account.into(),
            amount: 50,
            idempotency_key: "pack-2".into(),
            ..GrantRequest::default()
        })
        .await
        .expect_err("no client certificate");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let keys = keys_of(&redis, account).await;
    assert!(keys.is_empty(), "nothing applied: {keys:?}");
}
