//! Access control over real gRPC: bearer tokens with a scope, health open
//! to probes, reflection open unless asked otherwise.

mod support;

use std::sync::Arc;

use meter_api::v1::{
    CheckQuotaRequest, CheckRateLimitRequest, DeductRequest, GetBalanceRequest, GrantRequest,
    rate_limit_service_client::RateLimitServiceClient, usage_service_client::UsageServiceClient,
};
use meter_grpc::Tokens;
use meterd::StoreConfig;
use support::{Meterd, config};
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1;

const WRITE: &str = "w-0123456789abcdef0123456789abcdef";
const READ: &str = "r-0123456789abcdef0123456789abcdef";

fn tokens() -> Arc<Tokens> {
    let file = format!("billing write {WRITE}\ndashboard read {READ}\n");
    Arc::new(Tokens::parse(&file, "test tokens", false).expect("tokens"))
}

async fn guarded(auth_reflection: bool) -> Meterd {
    Meterd::start(meterd::Config {
        tokens: tokens(),
        auth_reflection,
        ..config(StoreConfig::Memory)
    })
    .await
}

/// `message` with `authorization: Bearer <token>`, or none.
fn with<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

fn deduct(key: &str) -> DeductRequest {
    DeductRequest {
        account_id: "org_auth".into(),
        amount: 1,
        idempotency_key: key.into(),
        ..DeductRequest::default()
    }
}

fn balance() -> GetBalanceRequest {
    GetBalanceRequest {
        account_id: "org_auth".into(),
    }
}

#[tokio::test]
async fn a_read_token_reads_but_cannot_spend_and_no_token_is_turned_away() {
    let meterd = guarded(false).await;
    let mut credits = meterd.credits();
    credits
        .grant(with(
            Some(WRITE),
            GrantRequest {
                account_id: "org_auth".into(),
                amount: 10,
                idempotency_key: "pack-1".into(),
                ..GrantRequest::default()
            },
        ))
        .await
        .expect("a write token grants");

    let denied = credits
        .deduct(with(Some(READ), deduct("d-1")))
        .await
        .expect_err("a read token cannot deduct");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("dashboard") && !denied.message().contains(READ),
        "names the token, never its secret: {}",
        denied.message()
    );
    let read = credits
        .get_balance(with(Some(READ), balance()))
        .await
        .expect("a read token reads")
        .into_inner();
    assert_eq!(
        read.balance.map(|b| b.remaining),
        Some(10),
        "nothing was spent"
    );

    for (token, what) in [
        (None, "no token"),
        (
            Some("w-0123456789abcdef0123456789abcdeX"),
            "an unknown token",
        ),
    ] {
        let refused = credits
            .get_balance(with(token, balance()))
            .await
            .expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}");
    }
    let mut raw = with(None, balance());
    raw.metadata_mut()
        .insert("authorization", WRITE.parse().expect("ascii"));
    let refused = credits.get_balance(raw).await.expect_err("not Bearer");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Health answers without a token: Kubernetes' probes send none.
    let health = HealthClient::new(meterd.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    let spent = credits
        .deduct(with(Some(WRITE), deduct("d-2")))
        .await
        .expect("a write token deducts")
        .into_inner();
    assert_eq!(spent.balance.map(|b| b.remaining), Some(9));

    // CheckQuota reads; with `consume` it spends, and needs a write token.
    let mut usage = UsageServiceClient::new(meterd.channel());
    let quota = |consume: bool| CheckQuotaRequest {
        account_id: "org_auth".into(),
        metric: "api_request".into(),
        amount: 1,
        consume,
        idempotency_key: if consume { "q-1".into() } else { String::new() },
    };
    usage
        .check_quota(with(Some(READ), quota(false)))
        .await
        .expect("a look is a read");
    let denied = usage
        .check_quota(with(Some(READ), quota(true)))
        .await
        .expect_err("consuming is a write");
    assert_eq!(denied.code(), Code::PermissionDenied);
    usage
        .check_quota(with(Some(WRITE), quota(true)))
        .await
        .expect("a write token consumes");

    // A rate limit check counts: a read token may not spend a limit.
    let mut limits = RateLimitServiceClient::new(meterd.channel());
    let check = || CheckRateLimitRequest {
        key: "login:org_auth".into(),
        limit: 5,
        window: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..CheckRateLimitRequest::default()
    };
    let denied = limits
        .check_rate_limit(with(Some(READ), check()))
        .await
        .expect_err("a read token cannot count");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let counted = limits
        .check_rate_limit(with(Some(WRITE), check()))
        .await
        .expect("a write token counts")
        .into_inner();
    assert_eq!(counted.remaining, 4, "the refused check counted nothing");
}

fn list_services() -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    }
}

async fn reflect(meterd: &Meterd, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(meterd.channel());
    let mut replies = client
        .server_reflection_info(with(token, tokio_stream::iter([list_services()])))
        .await?
        .into_inner();
    replies.next().await.expect("a reply").map(drop)
}

#[tokio::test]
async fn reflection_is_open_unless_asked_to_need_a_token() {
    let open = guarded(false).await;
    reflect(&open, None).await.expect("open for grpcurl");
    let closed = guarded(true).await;
    let refused = reflect(&closed, None).await.expect_err("needs a token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    reflect(&closed, Some(READ))
        .await
        .expect("a read token lists");
}

#[tokio::test]
async fn a_changed_tokens_file_is_in_force_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens");
    let old = format!("billing write {WRITE}\n");
    std::fs::write(&file, &old).expect("write");
    let sources = meterd::config::TokenSources {
        file: file.clone(),
        list: None,
    };
    let meterd = Meterd::start(meterd::Config {
        tokens: Arc::new(sources.tokens(&old).expect("tokens")),
        token_sources: Some(sources),
        tokens_reload_interval: std::time::Duration::from_millis(20),
        ..config(StoreConfig::Memory)
    })
    .await;
    let mut credits = meterd.credits();
    let code = |result: Result<
        tonic::Response<meter_api::v1::GetBalanceResponse>,
        tonic::Status,
    >| { result.map_or_else(|status| status.code(), |_| Code::Ok) };
    assert_eq!(
        code(credits.get_balance(with(Some(WRITE), balance())).await),
        Code::Ok
    );
    assert_eq!(
        code(credits.get_balance(with(Some(READ), balance())).await),
        Code::Unauthenticated
    );

    // Rotated: the new token in, the old one out.
    std::fs::write(&file, format!("dashboard read {READ}\n")).expect("write");
    let mut rotated = false;
    for _ in 0..200 {
        if code(credits.get_balance(with(Some(READ), balance())).await) == Code::Ok {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(rotated, "the new token was never accepted");
    assert_eq!(
        code(credits.get_balance(with(Some(WRITE), balance())).await),
        Code::Unauthenticated,
        "the old token is revoked"
    );

    // A broken or empty file leaves the tokens in force as they are.
    for broken in ["dashboard sudo short\n", "# nothing\n"] {
        std::fs::write(&file, broken).expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            code(credits.get_balance(with(Some(READ), balance())).await),
            Code::Ok,
            "{broken:?}"
        );
        assert_eq!(
            code(credits.get_balance(with(None, balance())).await),
            Code::Unauthenticated,
            "{broken:?}: never every call let in"
        );
    }
}
