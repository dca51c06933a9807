//! The bridge over real HTTP, calling a real meterd over real gRPC on a
//! real redis-server, with payloads built from Stripe's own example
//! objects (`tests/fixtures/stripe.json`) and signed as Stripe signs them.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use meter_api::v1::{
    GetBalanceRequest, GetSubscriptionRequest, GetUsageRequest, Subscription, SubscriptionStatus,
    credits_service_client::CreditsServiceClient,
    subscription_service_client::SubscriptionServiceClient,
    usage_service_client::UsageServiceClient,
};
use meter_stripe_bridge::{Config, signature};
use meter_testkit::{RedisServer, http::http};
use meterd::{Stop, StoreConfig};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

const SECRET: &str = "whsec_test_current";
/// meterd's tokens: the bridge's (write) and a read one.
const WRITE_TOKEN: &str = "bridge-0123456789abcdef0123456789";
const READ_TOKEN: &str = "reader-0123456789abcdef0123456789";
const OLD_SECRET: &str = "whsec_test_previous";

/// A running meterd on `port` (fixed, so that it can come back on the same address).
struct Meterd {
    stop: Option<oneshot::Sender<Stop>>,
    task: JoinHandle<Result<(), meterd::RunError>>,
}

impl Meterd {
    async fn start(redis: &RedisServer, addr: SocketAddr) -> Self {
        Self::start_with_tls(redis, addr, None).await
    }

    /// meterd serving TLS with `tls`, when given.
    async fn start_with_tls(
        redis: &RedisServer,
        addr: SocketAddr,
        tls: Option<meterd::config::TlsFiles>,
    ) -> Self {
        let tokens = format!("bridge write {WRITE_TOKEN}\nreader read {READ_TOKEN}\n");
        let config = meterd::Config {
            health_interval: Duration::from_millis(50),
            shutdown_delay: Duration::ZERO,
            tokens: std::sync::Arc::new(
                meter_grpc::Tokens::parse(&tokens, "test", false).expect("tokens"),
            ),
            tls,
            ..meterd::Config::new(StoreConfig::Redis(meter_redis_config(redis))).expect("defaults")
        };
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(meterd::run(config, listener, async {
            stopped.await.unwrap_or(Stop::Interrupt)
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Interrupt);
        }
        let _ = self.task.await;
    }
}

fn meter_redis_config(redis: &RedisServer) -> meter_redis::RedisConfig {
    meter_redis::RedisConfig {
        connect_timeout: Duration::from_millis(500),
        ..meter_redis::RedisConfig::new(redis.url())
    }
}

/// The bridge running with `config`: its address.
async fn spawn_bridge(config: Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bridge = listener.local_addr().expect("addr");
    tokio::spawn(meter_stripe_bridge::run(
        config,
        listener,
        std::future::pending(),
    ));
    bridge
}

/// The bridge and a meterd behind it.
struct Setup {
    redis: RedisServer,
    meterd_addr: SocketAddr,
    meterd: Option<Meterd>,
    bridge: SocketAddr,
    channel: Channel,
}

impl Setup {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    async fn start_with(donation_metric: Option<&str>) -> Self {
        Self::start_full(donation_metric, WRITE_TOKEN).await
    }

    /// meterd, and the bridge calling it with `token`.
    async fn start_full(donation_metric: Option<&str>, token: &str) -> Self {
        let redis = RedisServer::start();
        let meterd_addr = TcpListener::bind("127.0.0.1:0")
            .await
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let meterd = Meterd::start(&redis, meterd_addr).await;
        let bridge = spawn_bridge(Config {
            meterd: format!("http://{meterd_addr}"),
            secrets: signature::Secrets::parse(&format!("{OLD_SECRET},{SECRET}")).expect("secrets"),
            tolerance: Duration::from_secs(300),
            donation_metric: donation_metric.map(str::to_owned),
            meterd_token: meter_stripe_bridge::config::MeterdToken::new(token),
            meterd_tls: None,
        })
        .await;
        let channel = Channel::from_shared(format!("http://{meterd_addr}"))
            .expect("uri")
            .connect_lazy();
        Self {
            redis,
            meterd_addr,
            meterd: Some(meterd),
            bridge,
            channel,
        }
    }

    /// POSTs `body` with `signature` (none: unsigned); the status code.
    async fn post(&self, body: &str, signature: Option<String>) -> (u16, String) {
        let mut request = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if let Some(signature) = signature {
            request.push_str(&format!("stripe-signature: {signature}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        http(self.bridge, &request).await
    }

    /// POSTs `event` signed now with the current secret.
    async fn deliver(&self, event: &Value) -> (u16, String) {
        let body = event.to_string();
        let signature = signature::sign(SECRET, now(), body.as_bytes());
        self.post(&body, Some(signature)).await
    }

    async fn subscription(&self, account: &str) -> Subscription {
        SubscriptionServiceClient::new(self.channel.clone())
            .get_subscription(read(GetSubscriptionRequest {
                account_id: account.into(),
            }))
            .await
            .expect("GetSubscription")
            .into_inner()
            .subscription
            .expect("a subscription")
    }

    async fn balance_total(&self, account: &str) -> i64 {
        CreditsServiceClient::new(self.channel.clone())
            .get_balance(read(GetBalanceRequest {
                account_id: account.into(),
            }))
            .await
            .expect("GetBalance")
            .into_inner()
            .balance
            .expect("a balance")
            .total
    }
}

/// `message` with meterd's read token, as the tests read what the bridge did.
fn read<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {READ_TOKEN}").parse().expect("ascii"),
    );
    request
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).expect("fits"))
}

/// Stripe's example object `name`.
fn fixture(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(include_str!("fixtures/stripe.json")).expect("fixtures parse");
    all[name].clone()
}

/// An event of `kind` about `object`, made `created` seconds after the epoch.
fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(id);
    event["type"] = json!(kind);
    event["created"] = json!(created);
    event["data"] = json!({ "object": object });
    event
}

/// Stripe's example subscription (price `pro`), of `account`, in the newer
/// API's shape (the billing period on the item) or the older one.
fn subscription(account: &str, status: &str, start: i64, newer: bool) -> Value {
    let mut sub = fixture("subscription");
    sub["metadata"] = json!({ "account_id": account });
    sub["status"] = json!(status);
    let end = start + 30 * 86_400;
    if newer {
        sub.as_object_mut()
            .map(|s| s.remove("current_period_start"));
        sub.as_object_mut().map(|s| s.remove("current_period_end"));
        sub["items"]["data"][0]["current_period_start"] = json!(start);
        sub["items"]["data"][0]["current_period_end"] = json!(end);
    } else {
        sub["current_period_start"] = json!(start);
        sub["current_period_end"] = json!(end);
    }
    sub
}

fn status(sub: &Subscription) -> SubscriptionStatus {
    SubscriptionStatus::try_from(sub.status).expect("a known status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_events_apply_once_in_event_time_order() {
    let setup = Setup::start().await;
    let start = now() - 86_400;
    let created = event(
        "evt_created_1",
        "customer.subscription.created",
        now() - 60,
        subscription("org_1", "active", start, true),
    );
    for _ in 0..3 {
        assert_eq!(setup.deliver(&created).await.0, 200);
    }
    let sub = setup.subscription("org_1").await;
    assert_eq!(
        (sub.plan.as_str(), status(&sub)),
        ("pro", SubscriptionStatus::Active)
    );
    assert_eq!(sub.billing_customer_id, "cus_NZbFQAsc0ptasX");
    assert_eq!(sub.billing_subscription_id, "sub_1MoqxHLgUG5tbmjcG8lOfx2N");
    assert_eq!(
        sub.current_period_start.map(|t| t.seconds),
        Some(start),
        "period read from the item"
    );
    assert_eq!(
        setup.balance_total("org_1").await,
        1_000,
        "pro's allowance, allocated once"
    );

    // Two updates delivered newest first: the older one is ignored.
    let newer = event(
        "evt_updated_3",
        "customer.subscription.updated",
        now() - 10,
        subscription("org_1", "past_due", start, false),
    );
    let older = event(
        "evt_updated_2",
        "customer.subscription.updated",
        now() - 20,
        subscription("org_1", "canceled", start, false),
    );
    assert_eq!(setup.deliver(&newer).await.0, 200);
    assert_eq!(setup.deliver(&older).await.0, 200);
    assert_eq!(
        status(&setup.subscription("org_1").await),
        SubscriptionStatus::PastDue
    );
    // Collection paused: Stripe says `active`, meterd is told `paused`.
    let mut paused = subscription("org_1", "active", start, true);
    paused["pause_collection"] = json!({ "behavior": "void", "resumes_at": null });
    let paused = event(
        "evt_paused_4",
        "customer.subscription.updated",
        now() - 7,
        paused,
    );
    assert_eq!(setup.deliver(&paused).await.0, 200);
    assert_eq!(
        status(&setup.subscription("org_1").await),
        SubscriptionStatus::Paused
    );

    let deleted = event(
        "evt_deleted_4",
        "customer.subscription.deleted",
        now() - 5,
        subscription("org_1", "canceled", start, false),
    );
    assert_eq!(setup.deliver(&deleted).await.0, 200);
    let sub = setup.subscription("org_1").await;
    assert_eq!(
        (sub.plan.as_str(), status(&sub)),
        ("free", SubscriptionStatus::Canceled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_apply_nothing() {
    let setup = Setup::start().await;
    let body = event(
        "evt_sig_1",
        "customer.subscription.created",
        now(),
        subscription("org_sig", "active", now() - 3_600, true),
    )
    .to_string();
    let cases = [
        ("unsigned", None),
        (
            "another secret",
            Some(signature::sign("whsec_wrong", now(), body.as_bytes())),
        ),
        (
            "expired",
            Some(signature::sign(SECRET, now() - 3_600, body.as_bytes())),
        ),
        (
            "altered after signing",
            Some(signature::sign(
                SECRET,
                now(),
                body.replace("org_sig", "org_evil").as_bytes(),
            )),
        ),
    ];
    for (what, signature) in cases {
        let (code, answer) = setup.post(&body, signature).await;
        assert_eq!(code, 400, "{what}: {answer}");
    }
    let sub = setup.subscription("org_sig").await;
    assert_eq!(sub.plan, "free", "nothing applied");
    // The previous secret still verifies during a rotation.
    let rotated = signature::sign(OLD_SECRET, now(), body.as_bytes());
    assert_eq!(setup.post(&body, Some(rotated)).await.0, 200);
    assert_eq!(setup.subscription("org_sig").await.plan, "pro");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_grant_packs_and_record_donations_once() {
    let setup = Setup::start_with(Some("donation_processed")).await;
    let mut pack = fixture("payment_intent");
    pack["id"] = json!("pi_pack_1");
    pack["metadata"] = json!({ "account_id": "user_7", "credits": "250" });
    let paid = event("evt_pack_1", "payment_intent.succeeded", now(), pack);
    for _ in 0..3 {
        assert_eq!(setup.deliver(&paid).await.0, 200);
    }
    assert_eq!(setup.balance_total("user_7").await, 250, "granted once");

    // A pack sold by a Checkout session in payment mode: granted once it is
    // paid, keyed by its payment intent, so the intent's own event (with the
    // same pack in its metadata) grants nothing more.
    let mut session = fixture("checkout.session");
    session["client_reference_id"] = json!("user_cs");
    session["payment_intent"] = json!("pi_cs_pack");
    session["metadata"] = json!({ "credits": "40" });
    session["payment_status"] = json!("unpaid");
    let pending = event(
        "evt_cs_pending",
        "checkout.session.completed",
        now(),
        session.clone(),
    );
    assert_eq!(setup.deliver(&pending).await.0, 200);
    let registered = setup.balance_total("user_cs").await;
    assert_eq!(
        registered, 100,
        "registered on free: no pack before the payment"
    );
    session["payment_status"] = json!("paid");
    let settled = event(
        "evt_cs_paid",
        "checkout.session.async_payment_succeeded",
        now(),
        session,
    );
    let mut intent = fixture("payment_intent");
    intent["id"] = json!("pi_cs_pack");
    intent["metadata"] = json!({ "account_id": "user_cs", "credits": "40" });
    let intent = event("evt_cs_intent", "payment_intent.succeeded", now(), intent);
    for delivery in [&settled, &intent, &settled] {
        assert_eq!(setup.deliver(delivery).await.0, 200);
    }
    assert_eq!(setup.balance_total("user_cs").await, registered + 40);

    // A free Checkout (a full discount) grants its pack too.
    let mut free = fixture("checkout.session");
    free["id"] = json!("cs_free");
    free["client_reference_id"] = json!("user_cs");
    free["payment_intent"] = Value::Null;
    free["metadata"] = json!({ "credits": "15" });
    free["payment_status"] = json!("no_payment_required");
    let free = event("evt_cs_free", "checkout.session.completed", now(), free);
    for _ in 0..2 {
        assert_eq!(setup.deliver(&free).await.0, 200);
    }
    assert_eq!(setup.balance_total("user_cs").await, registered + 40 + 15);

    // A pack whose expiry passed before it could be granted: nothing to grant.
    let mut stale = fixture("payment_intent");
    stale["id"] = json!("pi_pack_stale");
    stale["metadata"] = json!({ "account_id": "user_7", "credits": "30", "credits_expire_at": (now() - 60).to_string() });
    let (code, answer) = setup
        .deliver(&event(
            "evt_pack_stale",
            "payment_intent.succeeded",
            now(),
            stale,
        ))
        .await;
    assert_eq!(
        (code, answer.contains("pi_pack_stale")),
        (400, true),
        "the buyer paid: never a silent 200. {answer}"
    );
    assert_eq!(setup.balance_total("user_7").await, 250);

    let mut donation = fixture("payment_intent");
    donation["id"] = json!("pi_donation_1");
    donation["metadata"] = json!({ "account_id": "org_give" });
    let given = event(
        "evt_donation_1",
        "payment_intent.succeeded",
        now(),
        donation,
    );
    for _ in 0..2 {
        assert_eq!(setup.deliver(&given).await.0, 200);
    }
    let month = {
        let days = now() / 86_400;
        // The civil month of `days` since the epoch (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!("{year:04}-{month:02}")
    };
    let usage = UsageServiceClient::new(setup.channel.clone())
        .get_usage(read(GetUsageRequest {
            account_id: "org_give".into(),
            period: month,
            metrics: vec!["donation_processed".into()],
        }))
        .await
        .expect("GetUsage")
        .into_inner();
    assert_eq!(
        usage.values.get("donation_processed"),
        Some(&1_099),
        "the amount, once"
    );
    // A payment of a month long closed: meterd rejects the event, and the
    // bridge says so (400), never a silent 200.
    let mut old = fixture("payment_intent");
    old["id"] = json!("pi_donation_old");
    old["metadata"] = json!({ "account_id": "org_give" });
    let (code, answer) = setup
        .deliver(&event(
            "evt_donation_old",
            "payment_intent.succeeded",
            now() - 200 * 86_400,
            old,
        ))
        .await;
    assert_eq!(code, 400, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_registers_and_invoices_renew_once() {
    let setup = Setup::start().await;
    let mut session = fixture("checkout.session");
    session["client_reference_id"] = json!("org_new");
    session["mode"] = json!("subscription");
    session["payment_status"] = json!("paid");
    session["customer"] = json!("cus_new");
    session["subscription"] = json!("sub_new");
    session["metadata"] = json!({ "price_id": "price_1MoS37LgUG5tbmjcCA3GTNX8" });
    session["created"] = json!(now() - 110);
    // A Payment Link's buyer can set client_reference_id: the metadata wins.
    session["client_reference_id"] = json!("org_victim");
    session["metadata"]["account_id"] = json!("org_new");
    let completed = event(
        "evt_checkout_1",
        "checkout.session.completed",
        now() - 100,
        session,
    );
    assert_eq!(setup.deliver(&completed).await.0, 200);
    let sub = setup.subscription("org_new").await;
    assert_eq!(
        (sub.plan.as_str(), sub.billing_customer_id.as_str()),
        ("pro", "cus_new")
    );
    assert_eq!(
        setup.subscription("org_victim").await.plan,
        "free",
        "client_reference_id did not win over the metadata"
    );

    let start = now() - 50;
    // A renewal's invoice (older API shape): its period line and a
    // proration of a change, which is not a period of its own.
    let cycle = |id: &str, created: i64, reason: &str, period_start: i64| {
        let mut invoice = fixture("invoice");
        invoice["id"] = json!(id);
        invoice["created"] = json!(created);
        invoice["billing_reason"] = json!(reason);
        invoice["amount_paid"] = json!(2_000);
        invoice["status"] = json!("paid");
        invoice["subscription"] = json!("sub_new");
        invoice["customer"] = json!("cus_new");
        invoice["subscription_details"] = json!({ "metadata": { "account_id": "org_new" } });
        invoice["lines"] = json!({ "data": [
            { "type": "subscription", "proration": false, "price": fixture("price"),
              "period": { "start": period_start, "end": period_start + 30 * 86_400 } },
            { "type": "subscription", "proration": true, "price": fixture("price"),
              "period": { "start": period_start + 10, "end": period_start + 40 * 86_400 } },
        ]});
        invoice
    };
    let paid = event(
        "evt_invoice_1",
        "invoice.paid",
        now() - 40,
        cycle("in_renewal_1", start, "subscription_cycle", start),
    );
    for _ in 0..2 {
        assert_eq!(setup.deliver(&paid).await.0, 200);
    }
    let sub = setup.subscription("org_new").await;
    assert_eq!(sub.current_period_start.map(|t| t.seconds), Some(start));
    assert_eq!(
        sub.renewal_time.map(|t| t.seconds),
        Some(start + 30 * 86_400),
        "the period line's, not the proration's"
    );
    assert_eq!(status(&sub), SubscriptionStatus::Active);
    // An invoice for a change within the period is not a renewal.
    let (code, answer) = setup
        .deliver(&event(
            "evt_invoice_update",
            "invoice.paid",
            now() - 39,
            cycle("in_update_1", now() - 45, "subscription_update", start + 20),
        ))
        .await;
    assert_eq!((code, answer.contains("ignored")), (200, true), "{answer}");
    // Nor is one that paid nothing (a trial), or one whose lines are all
    // prorations.
    let mut trial = cycle("in_trial_1", now() - 44, "subscription_create", start + 20);
    trial["amount_paid"] = json!(0);
    let mut prorations = cycle(
        "in_prorations_1",
        now() - 43,
        "subscription_cycle",
        start + 20,
    );
    prorations["lines"]["data"][0]["proration"] = json!(true);
    for (id, invoice) in [
        ("evt_invoice_trial", trial),
        ("evt_invoice_prorations", prorations),
    ] {
        let (code, answer) = setup
            .deliver(&event(id, "invoice.paid", now() - 38, invoice))
            .await;
        assert_eq!(
            (code, answer.contains("ignored")),
            (200, true),
            "{id}: {answer}"
        );
    }
    assert_eq!(
        setup
            .subscription("org_new")
            .await
            .current_period_start
            .map(|t| t.seconds),
        Some(start)
    );

    // A subscription event naming no account: the account meterd knows its
    // customer by (the Checkout above named cus_new).
    let mut by_customer = subscription("ignored", "past_due", start, true);
    by_customer["metadata"] = json!({});
    by_customer["customer"] = json!("cus_new");
    by_customer["id"] = json!("sub_new");
    let updated = event(
        "evt_by_customer",
        "customer.subscription.updated",
        now() - 30,
        by_customer,
    );
    assert_eq!(setup.deliver(&updated).await.0, 200);
    assert_eq!(
        status(&setup.subscription("org_new").await),
        SubscriptionStatus::PastDue
    );
    // An earlier period's invoice paid late (delivered now, made before
    // the past_due event): it rolls nothing back.
    let late = event(
        "evt_invoice_late",
        "invoice.paid",
        now(),
        cycle(
            "in_late_1",
            now() - 35 * 86_400,
            "subscription_cycle",
            start - 30 * 86_400,
        ),
    );
    assert_eq!(setup.deliver(&late).await.0, 200);
    let sub = setup.subscription("org_new").await;
    assert_eq!(
        (status(&sub), sub.current_period_start.map(|t| t.seconds)),
        (SubscriptionStatus::PastDue, Some(start))
    );

    // A Checkout that says no plan links its customer all the same: the
    // subscription's events, naming no account, find it.
    let mut session = fixture("checkout.session");
    session["id"] = json!("cs_link");
    session["client_reference_id"] = json!("org_link");
    session["mode"] = json!("subscription");
    session["payment_status"] = json!("paid");
    session["customer"] = json!("cus_link");
    session["metadata"] = Value::Null;
    let linked = event(
        "evt_checkout_link",
        "checkout.session.completed",
        now(),
        session,
    );
    assert_eq!(setup.deliver(&linked).await.0, 200);
    assert_eq!(setup.subscription("org_link").await.plan, "free");
    let mut named_by_customer = subscription("ignored", "active", start, true);
    named_by_customer["metadata"] = json!({});
    named_by_customer["customer"] = json!("cus_link");
    let created = event(
        "evt_link_created",
        "customer.subscription.created",
        now(),
        named_by_customer,
    );
    assert_eq!(setup.deliver(&created).await.0, 200);
    assert_eq!(setup.subscription("org_link").await.plan, "pro");

    // A Checkout session delivered after its subscription's own event: the
    // session's time is older, so it does not roll the subscription back.
    let mut first = subscription("org_order", "active", start, true);
    first["id"] = json!("sub_order");
    let first = event(
        "evt_order_sub",
        "customer.subscription.created",
        now() - 20,
        first,
    );
    assert_eq!(setup.deliver(&first).await.0, 200);
    let mut late_session = fixture("checkout.session");
    late_session["id"] = json!("cs_order");
    late_session["created"] = json!(now() - 60);
    late_session["client_reference_id"] = json!("org_order");
    late_session["mode"] = json!("subscription");
    late_session["payment_status"] = json!("unpaid");
    late_session["subscription"] = json!("sub_order");
    late_session["metadata"] = json!({ "plan": "standard" });
    let late_session = event(
        "evt_order_cs",
        "checkout.session.completed",
        now() - 10,
        late_session,
    );
    assert_eq!(setup.deliver(&late_session).await.0, 200);
    let sub = setup.subscription("org_order").await;
    assert_eq!(
        (sub.plan.as_str(), status(&sub)),
        ("pro", SubscriptionStatus::Active)
    );
    let mut stranger = subscription("ignored", "active", start, true);
    stranger["metadata"] = json!({});
    stranger["customer"] = json!("cus_stranger");
    let (code, answer) = setup
        .deliver(&event(
            "evt_stranger",
            "customer.subscription.created",
            now(),
            stranger,
        ))
        .await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("names no account"), "{answer}");

    // A price no plan names: 400, nothing applied.
    let mut unknown = subscription("org_other", "active", start, true);
    unknown["items"]["data"][0]["price"]["id"] = json!("price_nobody");
    unknown["items"]["data"][0]["price"]["product"] = json!("prod_nobody");
    let (code, answer) = setup
        .deliver(&event(
            "evt_unknown_price",
            "customer.subscription.created",
            now(),
            unknown,
        ))
        .await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("price_nobody"), "{answer}");
    // A type the bridge does not handle: 200, nothing called.
    let other = event(
        "evt_other",
        "charge.refunded",
        now(),
        json!({ "id": "ch_1" }),
    );
    assert_eq!(setup.deliver(&other).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meterd_down_answers_5xx_and_the_redelivery_applies_once() {
    let mut setup = Setup::start().await;
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    let mut ready = 0;
    for _ in 0..100 {
        ready = http(setup.bridge, &get("/readyz")).await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 200, "ready while meterd serves");
    setup.meterd.take().expect("running").stop().await;
    assert_eq!(
        http(setup.bridge, &get("/readyz")).await.0,
        503,
        "not ready without meterd"
    );
    assert_eq!(
        http(setup.bridge, &get("/healthz")).await.0,
        200,
        "alive all the same"
    );
    let created = event(
        "evt_down_1",
        "customer.subscription.created",
        now(),
        subscription("org_down", "active", now() - 3_600, true),
    );
    let (code, answer) = setup.deliver(&created).await;
    assert!((500..600).contains(&code), "{code} {answer}");

    setup.meterd = Some(Meterd::start(&setup.redis, setup.meterd_addr).await);
    let mut delivered = 0;
    for _ in 0..100 {
        if setup.deliver(&created).await.0 == 200 {
            delivered += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered, 1, "meterd came back");
    assert_eq!(setup.deliver(&created).await.0, 200);
    assert_eq!(setup.subscription("org_down").await.plan, "pro");
    assert_eq!(
        setup.balance_total("org_down").await,
        1_000,
        "allocated once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_without_a_write_token_answers_5xx_so_that_stripe_retries() {
    let setup = Setup::start_full(None, READ_TOKEN).await;
    let created = event(
        "evt_scope_1",
        "customer.subscription.created",
        now(),
        subscription("org_scope", "active", now() - 3_600, true),
    );
    let (code, answer) = setup.deliver(&created).await;
    assert_eq!(code, 503, "{answer}");
    assert!(answer.contains("--meterd-token"), "{answer}");
    assert_eq!(setup.subscription("org_scope").await.plan, "free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_reaches_meterd_over_mutual_tls_with_its_flags() {
    use clap::Parser;
    use meter_testkit::tls::{certificates, read};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let certs = certificates();
    let dir = certs.path();
    let file = |name: &str| dir.join(name).display().to_string();
    let redis = RedisServer::start();
    let meterd_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let meterd = Meterd::start_with_tls(
        &redis,
        meterd_addr,
        Some(meterd::config::TlsFiles {
            cert: read(dir, "server.pem"),
            key: read(dir, "server.key"),
            client_ca: Some(read(dir, "client-ca.pem")),
        }),
    )
    .await;
    let url = format!("https://localhost:{}", meterd_addr.port());
    let bridge = |identity: bool| {
        let mut args = vec![
            "meter-stripe-bridge".to_owned(),
            "--meterd".to_owned(),
            url.clone(),
            "--meterd-token".to_owned(),
            WRITE_TOKEN.to_owned(),
            "--webhook-secret".to_owned(),
            SECRET.to_owned(),
            "--meterd-ca".to_owned(),
            file("server-ca.pem"),
        ];
        if identity {
            args.extend([
                "--meterd-cert".to_owned(),
                file("client.pem"),
                "--meterd-key".to_owned(),
                file("client.key"),
            ]);
        }
        meter_stripe_bridge::config::Cli::try_parse_from(args)
            .expect("flags")
            .into_config()
            .expect("config")
    };
    let channel = Channel::from_shared(url.clone())
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(dir, "server-ca.pem")))
                .identity(Identity::from_pem(
                    read(dir, "client.pem"),
                    read(dir, "client.key"),
                )),
        )
        .expect("tls")
        .connect_lazy();
    let setup = Setup {
        redis,
        meterd_addr,
        meterd: Some(meterd),
        bridge: spawn_bridge(bridge(true)).await,
        channel,
    };
    let created = event(
        "evt_tls_1",
        "customer.subscription.created",
        now(),
        subscription("org_tls", "active", now() - 3_600, true),
    );
    let (code, answer) = setup.deliver(&created).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(setup.subscription("org_tls").await.plan, "pro");

    // Without a client certificate meterd refuses the bridge: Stripe is
    // answered 503 (it retries) and the bridge is not ready.
    let refused = Setup {
        bridge: spawn_bridge(bridge(false)).await,
        ..setup
    };
    let updated = event(
        "evt_tls_2",
        "customer.subscription.deleted",
        now() + 1,
        subscription("org_tls", "canceled", now() - 3_600, true),
    );
    let (code, answer) = refused.deliver(&updated).await;
    assert_eq!(code, 503, "{answer}");
    assert!(answer.contains("CancelSubscription"), "{answer}");
    let get = "GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    assert_eq!(http(refused.bridge, get).await.0, 503);
    assert_eq!(refused.subscription("org_tls").await.plan, "pro");

    // The flags refuse TLS files without https, and https without a CA.
    let plain = meter_stripe_bridge::config::Cli::try_parse_from([
        "meter-stripe-bridge",
        "--meterd",
        "http://127.0.0.1:50051",
        "--webhook-secret",
        SECRET,
        "--meterd-ca",
        &file("server-ca.pem"),
    ])
    .expect("flags")
    .into_config()
    .expect_err("a CA for plaintext");
    assert!(plain.to_string().contains("https://"), "{plain}");
    let no_ca = meter_stripe_bridge::config::Cli::try_parse_from([
        "meter-stripe-bridge",
        "--meterd",
        &url,
        "--webhook-secret",
        SECRET,
    ])
    .expect("flags")
    .into_config()
    .expect_err("https without a CA");
    assert!(no_ca.to_string().contains("--meterd-ca"), "{no_ca}");
    let not_a_ca = meter_stripe_bridge::config::Cli::try_parse_from([
        "meter-stripe-bridge",
        "--meterd",
        &url,
        "--webhook-secret",
        SECRET,
        "--meterd-ca",
        &file("server.key"),
    ])
    .expect("flags")
    .into_config()
    .expect_err("a key given as the CA");
    assert!(
        not_a_ca.to_string().contains("no PEM CERTIFICATE"),
        "{not_a_ca}"
    );
}
