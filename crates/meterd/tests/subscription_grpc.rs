//! SubscriptionService end to end: the real meterd, real gRPC.

mod support;

use std::time::Duration;

use meter_api::v1::{
    BillingInterval, CancelSubscriptionRequest, CreditPeriod, DeductRequest, DeleteAccountRequest,
    FindAccountRequest, GetAccountRequest, GetSubscriptionRequest, ListPlansRequest, Profile,
    RegisterAccountRequest, SubscriptionStatus, UpdateProfileRequest, UpdateSubscriptionRequest,
    subscription_service_client::SubscriptionServiceClient,
};
use meter_testkit::{FixedClock, RedisServer};
use support::{Meterd, ts};
use tonic::{Code, transport::Channel};

fn register(account: &str, email: &str) -> RegisterAccountRequest {
    RegisterAccountRequest {
        account_id: account.into(),
        profile: Some(Profile {
            email: email.into(),
            name: "Ada".into(),
            ..Profile::default()
        }),
        idempotency_key: String::new(),
    }
}

/// A yearly pro subscription for the billing period `start..end`.
fn yearly(
    account: &str,
    start: &str,
    end: &str,
    event: &str,
    key: &str,
) -> UpdateSubscriptionRequest {
    UpdateSubscriptionRequest {
        account_id: account.into(),
        plan: "pro-yearly".into(),
        status: SubscriptionStatus::Active.into(),
        current_period_start: Some(ts(start)),
        current_period_end: Some(ts(end)),
        billing_customer_id: "cus_NffrFeUfNV2Hib".into(),
        billing_subscription_id: "sub_1MowQVLkdIwHu7ixeRlqHVzs".into(),
        event_time: Some(ts(event)),
        idempotency_key: key.into(),
        ..UpdateSubscriptionRequest::default()
    }
}

async fn allowance(meterd: &Meterd, account: &str) -> (i64, i64, Option<prost_types::Timestamp>) {
    let balance = support::balance(&mut meterd.credits(), account).await;
    let allowance = balance.allowance.expect("allowance");
    (allowance.total, allowance.used, allowance.reset_time)
}

fn accounts(meterd: &Meterd) -> SubscriptionServiceClient<Channel> {
    SubscriptionServiceClient::new(meterd.channel())
}

/// The lifecycle over gRPC on a real redis-server: sign-up, an upgrade to a
/// yearly plan with monthly credits, resets across 13 months, an
/// out-of-order event ignored, a cancellation at period end, free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_lives_its_whole_lifecycle_over_grpc() {
    let redis = RedisServer::start();
    let clock = FixedClock::at("2026-01-15T09:00:00.000Z");
    let config = support::config(support::redis(redis.url()));
    let meterd = Meterd::start_with_clock(config, clock.clone()).await;
    let mut client = accounts(&meterd);
    let signed = client
        .register_account(register("u-grpc", "ada@example.com"))
        .await
        .expect("register")
        .into_inner();
    assert!(signed.created);
    let account = signed.account.expect("account");
    assert_eq!(account.subscription.expect("subscription").plan, "free");
    assert_eq!(account.balance.expect("balance").remaining, 100);
    assert!(!account.active);

    clock.set("2026-01-20T10:00:00.000Z");
    let upgraded = client
        .update_subscription(yearly(
            "u-grpc",
            "2026-01-20T10:00:00.000Z",
            "2027-01-20T10:00:00.000Z",
            "2026-01-20T10:00:00.000Z",
            "evt_upgrade",
        ))
        .await
        .expect("upgrade")
        .into_inner();
    assert!(upgraded.applied);
    let subscription = upgraded.subscription.expect("subscription");
    assert_eq!(
        subscription.next_credit_reset,
        Some(ts("2026-02-20T10:00:00.000Z"))
    );
    assert_eq!(
        subscription.renewal_time,
        Some(ts("2027-01-20T10:00:00.000Z"))
    );
    assert_eq!(subscription.billing_customer_id, "cus_NffrFeUfNV2Hib");

    let stale = client
        .update_subscription(UpdateSubscriptionRequest {
            plan: "standard".into(),
            ..yearly(
                "u-grpc",
                "2026-01-01T00:00:00.000Z",
                "2026-02-01T00:00:00.000Z",
                "2026-01-19T00:00:00.000Z",
                "evt_stale",
            )
        })
        .await
        .expect("an older event")
        .into_inner();
    assert!(!stale.applied);
    assert_eq!(stale.subscription.expect("subscription").plan, "pro-yearly");

    for month in 1..=13u32 {
        let used = meterd
            .credits()
            .deduct(DeductRequest {
                account_id: "u-grpc".into(),
                amount: 300,
                ..DeductRequest::default()
            })
            .await
            .expect("deduct")
            .into_inner();
        assert!(used.applied, "month {month}");
        let (year, m) = (2026 + (month / 12) as i32, month % 12 + 1);
        clock.set(&format!("{year}-{m:02}-20T10:00:00.000Z"));
        clock.advance(Duration::from_secs(60));
        if month == 12 {
            let renewed = client
                .update_subscription(yearly(
                    "u-grpc",
                    "2027-01-20T10:00:00.000Z",
                    "2028-01-20T10:00:00.000Z",
                    "2027-01-20T10:00:30.000Z",
                    "evt_renewal",
                ))
                .await
                .expect("renewal")
                .into_inner();
            assert!(renewed.applied);
        }
        let (total, used, _) = allowance(&meterd, "u-grpc").await;
        assert_eq!((total, used), (1_000, 0), "month {month} resets");
    }

    let canceled = client
        .cancel_subscription(CancelSubscriptionRequest {
            account_id: "u-grpc".into(),
            at_period_end: true,
            idempotency_key: "evt_cancel".into(),
            ..CancelSubscriptionRequest::default()
        })
        .await
        .expect("cancel")
        .into_inner();
    let subscription = canceled.subscription.expect("subscription");
    assert!(subscription.cancel_at_period_end);
    assert_eq!(subscription.plan, "pro-yearly");

    clock.set("2028-01-20T10:00:00.001Z");
    let after = client
        .get_subscription(GetSubscriptionRequest {
            account_id: "u-grpc".into(),
        })
        .await
        .expect("read")
        .into_inner()
        .subscription
        .expect("subscription");
    assert_eq!(
        (after.plan.as_str(), after.status()),
        ("free", SubscriptionStatus::Canceled)
    );
    assert_eq!(
        after.next_credit_reset,
        Some(ts("2028-02-20T10:00:00.000Z"))
    );
    let account = client
        .get_account(GetAccountRequest {
            account_id: "u-grpc".into(),
        })
        .await
        .expect("account")
        .into_inner()
        .account
        .expect("account");
    assert!(!account.active);
    assert_eq!(account.balance.expect("balance").remaining, 100);
    let profile = account.profile.expect("profile");
    assert_eq!(profile.email, "ada@example.com");
    assert_eq!(profile.joined, Some(ts("2026-01-15T09:00:00.000Z")));
}

#[tokio::test]
async fn bad_subscription_input_names_the_field_and_writes_nothing() {
    let meterd = Meterd::memory().await;
    let mut client = accounts(&meterd);
    let mut cases: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
    let mut bad_email = register("u-bad", "not-an-email");
    cases.push((
        "profile.email",
        client.register_account(bad_email.clone()).await.map(|_| ()),
    ));
    bad_email.profile = Some(Profile {
        name: "n".repeat(100_000),
        ..Profile::default()
    });
    cases.push((
        "profile.name",
        client.register_account(bad_email).await.map(|_| ()),
    ));
    let valid = || {
        yearly(
            "u-bad",
            "2026-01-01T00:00:00.000Z",
            "2027-01-01T00:00:00.000Z",
            "2026-01-01T00:00:00.000Z",
            "evt_1",
        )
    };
    let far = prost_types::Timestamp {
        seconds: ts("2026-01-01T00:00:00.000Z").seconds + 100 * 365 * 86_400,
        nanos: 0,
    };
    for (field, request) in [
        (
            "plan",
            UpdateSubscriptionRequest {
                plan: "platinum".into(),
                ..valid()
            },
        ),
        (
            "status",
            UpdateSubscriptionRequest {
                status: 99,
                ..valid()
            },
        ),
        (
            "status",
            UpdateSubscriptionRequest {
                status: 0,
                ..valid()
            },
        ),
        (
            "event_time",
            UpdateSubscriptionRequest {
                event_time: Some(far),
                ..valid()
            },
        ),
        (
            "current_period_end",
            UpdateSubscriptionRequest {
                current_period_end: Some(ts("2025-01-01T00:00:00.000Z")),
                ..valid()
            },
        ),
        (
            "billing_customer_id",
            UpdateSubscriptionRequest {
                billing_customer_id: "cus 1".into(),
                ..valid()
            },
        ),
        (
            "amount_micros",
            UpdateSubscriptionRequest {
                amount_micros: Some(1 << 60),
                ..valid()
            },
        ),
        (
            "plan",
            UpdateSubscriptionRequest {
                plan: "p".repeat(100_000),
                ..valid()
            },
        ),
    ] {
        cases.push((field, client.update_subscription(request).await.map(|_| ())));
    }
    cases.push((
        "email",
        client
            .update_profile(UpdateProfileRequest {
                account_id: "u-bad".into(),
                email: Some("@".into()),
                ..UpdateProfileRequest::default()
            })
            .await
            .map(|_| ()),
    ));
    for (field, result) in cases {
        let status = result.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }
    let missing = client
        .get_account(GetAccountRequest {
            account_id: "u-bad".into(),
        })
        .await
        .expect_err("never registered");
    assert_eq!(missing.code(), Code::NotFound);
    let balance = support::balance(&mut meterd.credits(), "u-bad").await;
    assert_eq!(balance.last_update, None, "nothing was written");
    let applied = client
        .update_subscription(valid())
        .await
        .expect("a refused update does not block the next valid one")
        .into_inner();
    assert!(applied.applied && !applied.replayed);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_leaves_no_key_of_the_account_and_every_key_of_the_others() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    for account in ["org_del", "org_stay"] {
        support::fill_account(&meterd, account).await;
    }
    let mut client = accounts(&meterd);
    let before = support::keys_of(&redis, "org_del").await;
    for part in [
        "credits",
        "grants",
        "history",
        "profile",
        "subscription",
        "idempotency",
        "stats",
        "stats:recent",
        "stats:seen",
        "billing_customers",
    ] {
        assert!(
            before.iter().any(|k| k.ends_with(&format!("}}:{part}"))),
            "{part} in {before:?}"
        );
    }
    assert!(
        before.len() >= 14,
        "the account's keys and 8 idempotency records: {before:?}"
    );
    let kept_before = support::keys_of(&redis, "org_stay").await;
    let mut accounts = SubscriptionServiceClient::new(meterd.channel());
    let delete = || DeleteAccountRequest {
        account_id: "org_del".into(),
    };
    let first = accounts.delete_account(delete()).await.expect("delete");
    assert!(first.into_inner().deleted);
    assert_eq!(
        support::keys_of(&redis, "org_del").await,
        Vec::<String>::new()
    );
    let gone = client
        .get_account(GetAccountRequest {
            account_id: "org_del".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(support::keys_of(&redis, "org_stay").await, kept_before);
    let find = |customer: &str| FindAccountRequest {
        billing_customer_id: customer.into(),
    };
    let unlinked = accounts
        .find_account(find("cus_org_del"))
        .await
        .expect_err("its customer went with it");
    assert_eq!(unlinked.code(), Code::NotFound);
    let mut raw = redis.connection().await;
    let entry: i64 = redis::cmd("EXISTS")
        .arg("billing:customer:{cus_org_del}")
        .query_async(&mut raw)
        .await
        .expect("EXISTS");
    assert_eq!(entry, 0, "the index entry itself is gone");
    let kept = accounts
        .find_account(find("cus_org_stay"))
        .await
        .expect("the other's stays");
    assert_eq!(kept.into_inner().account_id, "org_stay");
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
