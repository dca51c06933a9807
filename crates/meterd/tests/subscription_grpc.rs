//! SubscriptionService end to end: the real meterd, real gRPC.

mod support;

use meter_api::v1::{
    BillingInterval, CommitRequest, CreditPeriod, DeductRequest, DeleteAccountRequest,
    GrantRequest, ListPlansRequest, ReserveRequest, ResetRequest,
    subscription_service_client::SubscriptionServiceClient,
};
use meter_testkit::RedisServer;
use support::Meterd;

#[tokio::test]
async fn list_plans_answers_the_catalog_as_configured_with_prices_and_billing_ids() {
    let meterd = Meterd::memory().await;
    let mut client = SubscriptionServiceClient::new(meterd.channel());
    let catalog = client
        .list_plans(ListPlansRequest {})
        .await
        .expect("list plans")
        .into_inner();
    let names: Vec<&str> = catalog.plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["enterprise", "free", "pro", "pro-yearly", "standard"],
        "every plan of deploy/plans.toml, by name"
    );
    assert_eq!(
        (catalog.default_plan.as_str(), catalog.currency.as_str()),
        ("free", "usd")
    );
    let pro = &catalog.plans[2];
    assert_eq!(
        (
            pro.credits,
            pro.credit_period(),
            pro.billing_interval(),
            pro.price_micros
        ),
        (
            1_000,
            CreditPeriod::Month,
            BillingInterval::Month,
            29_000_000
        )
    );
    assert_eq!(pro.billing_price_ids, ["price_1MoS37LgUG5tbmjcCA3GTNX8"]);
    assert_eq!(pro.billing_product_ids, ["prod_NZbFOV0OmNHxwl"]);
    let api = pro
        .usage
        .iter()
        .find(|u| u.metric == "api_request")
        .expect("api_request allowance");
    assert_eq!((api.included, api.overage_micros), (Some(100_000), 100));
    let yearly = &catalog.plans[3];
    assert_eq!(
        (yearly.billing_interval(), yearly.credit_period()),
        (BillingInterval::Year, CreditPeriod::Month),
        "a yearly plan resets credits monthly"
    );
    let unlimited = catalog.plans[0]
        .usage
        .iter()
        .find(|u| u.metric == "api_request")
        .expect("enterprise api_request");
    assert_eq!(unlimited.included, None, "unlimited is unset, not 0");
    let gpt = catalog
        .prices
        .iter()
        .find(|p| p.feature == "chat:gpt-4o")
        .expect("a price");
    assert_eq!(gpt.credits, 3);
}

/// Every key of the account on the real Redis (`SCAN` by its hash tag).
async fn keys_of(redis: &RedisServer, account: &str) -> Vec<String> {
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{{{account}}}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            keys.sort();
            return keys;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_leaves_no_key_of_the_account_and_every_key_of_the_others() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    let mut credits = meterd.credits();
    for account in ["org_del", "org_stay"] {
        credits
            .reset(ResetRequest {
                account_id: account.into(),
                total: Some(100),
                idempotency_key: "plan-start".into(),
            })
            .await
            .expect("reset");
        credits
            .grant(GrantRequest {
                account_id: account.into(),
                amount: 50,
                idempotency_key: "pack-1".into(),
                ..GrantRequest::default()
            })
            .await
            .expect("grant");
        credits
            .deduct(DeductRequest {
                account_id: account.into(),
                amount: 120,
                idempotency_key: "msg-1".into(),
                ..DeductRequest::default()
            })
            .await
            .expect("deduct");
        let held = credits
            .reserve(ReserveRequest {
                account_id: account.into(),
                amount: 10,
                ttl: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                idempotency_key: "call-1".into(),
                ..ReserveRequest::default()
            })
            .await
            .expect("reserve")
            .into_inner();
        credits
            .commit(CommitRequest {
                account_id: account.into(),
                hold_id: held.hold_id,
                amount: 4,
                reason: String::new(),
            })
            .await
            .expect("commit");
    }
    let before = keys_of(&redis, "org_del").await;
    assert!(
        before.len() >= 9,
        "credits, grants, history, the idempotency index and 5 records: {before:?}"
    );
    let kept_before = keys_of(&redis, "org_stay").await;
    let mut accounts = SubscriptionServiceClient::new(meterd.channel());
    let delete = || DeleteAccountRequest {
        account_id: "org_del".into(),
    };
    let first = accounts.delete_account(delete()).await.expect("delete");
    assert!(first.into_inner().deleted);
    assert_eq!(keys_of(&redis, "org_del").await, Vec::<String>::new());
    assert_eq!(keys_of(&redis, "org_stay").await, kept_before);
    let again = accounts
        .delete_account(delete())
        .await
        .expect("delete again");
    assert!(!again.into_inner().deleted);
    let bad = accounts
        .delete_account(DeleteAccountRequest {
            account_id: "user:{1}".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().starts_with("account_id: "),
        "{}",
        bad.message()
    );
}
