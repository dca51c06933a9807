//! SubscriptionService end to end: the real meterd, real gRPC.

mod support;

use meter_api::v1::{
    BillingInterval, CreditPeriod, ListPlansRequest,
    subscription_service_client::SubscriptionServiceClient,
};
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
