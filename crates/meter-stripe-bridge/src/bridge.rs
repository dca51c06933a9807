//! Stripe events into meterd calls, each keyed by a Stripe id so that a
//! redelivery applies once: the event id for subscription changes, the
//! invoice id for a paid invoice, the payment intent id for a credit pack
//! or a donation. `event_time` (Stripe's `created`) orders subscription
//! changes in meterd, so deliveries out of order never roll one back.

use meter_api::v1::{
    CancelSubscriptionRequest, EventStatus, FindAccountRequest, GetAccountRequest, GrantKind,
    GrantRequest, LinkBillingCustomerRequest, ListPlansRequest, RecordUsageRequest,
    RegisterAccountRequest, SubscriptionStatus, UpdateSubscriptionRequest,
    UpdateSubscriptionResponse, UsageEvent, credits_service_client::CreditsServiceClient,
    subscription_service_client::SubscriptionServiceClient,
    usage_service_client::UsageServiceClient,
};
use tonic::{
    Code, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::config::MeterdToken;

use crate::event::{
    CheckoutSession, Event, Expandable, Invoice, Metadata, PaymentIntent, PriceRef, Subscription,
    account_in,
};

/// What the bridge did with an event that it could handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// meterd calls made (or answered as replays): what they did.
    Applied(String),
    /// Nothing to do for this event (a type the bridge does not handle, a
    /// one-off invoice, a payment without a pack).
    Ignored(String),
}

/// Why an event was not handled, sorted by what Stripe should do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// A well-signed event that cannot be mapped (no account, an unknown
    /// price, a request meterd refuses): 400, and the reason logged.
    #[error("cannot map the event: {0}")]
    Unmappable(String),
    /// meterd unreachable or failing: 5xx, so that Stripe retries; the
    /// calls are idempotent, so the retry applies once.
    #[error("meterd failed: {0}")]
    Retry(String),
}

/// Sends the bridge's bearer token, if it has one, with every call to meterd.
#[derive(Clone, Debug)]
pub struct Authorize(Option<MeterdToken>);

impl Interceptor for Authorize {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.0.clone());
        }
        Ok(request)
    }
}

/// A channel to meterd that sends the bridge's token.
type Authorized = InterceptedService<Channel, Authorize>;

/// The meterd clients of the bridge, over one channel.
#[derive(Clone, Debug)]
pub struct Bridge {
    subscriptions: SubscriptionServiceClient<Authorized>,
    credits: CreditsServiceClient<Authorized>,
    usage: UsageServiceClient<Authorized>,
    /// The usage metric payments without a credit pack are recorded as, if any.
    donation_metric: Option<String>,
}

/// A meterd status as the failure it is for Stripe.
fn failure(what: &str, status: &Status) -> Failure {
    let detail = format!("{what}: {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange => Failure::Unmappable(detail),
        // The bridge's token is missing or lacks the scope: a setting to
        // fix, after which Stripe's retry applies the event.
        Code::PermissionDenied | Code::Unauthenticated => Failure::Retry(format!(
            "{detail} (give the bridge a write token: --meterd-token)"
        )),
        _ => Failure::Retry(detail),
    }
}

/// Now, Unix seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The id of a referenced object, empty without one.
fn id_of(reference: Option<&Expandable>) -> String {
    reference.map(|r| r.id().to_owned()).unwrap_or_default()
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// meterd's status of a Stripe subscription status.
fn status_of(stripe: &str) -> Option<SubscriptionStatus> {
    Some(match stripe {
        "active" => SubscriptionStatus::Active,
        "trialing" => SubscriptionStatus::Trialing,
        "past_due" => SubscriptionStatus::PastDue,
        "canceled" => SubscriptionStatus::Canceled,
        "unpaid" => SubscriptionStatus::Unpaid,
        "incomplete" => SubscriptionStatus::Incomplete,
        "incomplete_expired" => SubscriptionStatus::IncompleteExpired,
        "paused" => SubscriptionStatus::Paused,
        _ => return None,
    })
}

impl Bridge {
    /// The bridge calling meterd over `channel` with `token`, recording
    /// payments without a pack as `donation_metric` when set.
    pub fn new(
        channel: Channel,
        token: Option<MeterdToken>,
        donation_metric: Option<String>,
    ) -> Self {
        let authorize = Authorize(token);
        Self {
            subscriptions: SubscriptionServiceClient::with_interceptor(
                channel.clone(),
                authorize.clone(),
            ),
            credits: CreditsServiceClient::with_interceptor(channel.clone(), authorize.clone()),
            usage: UsageServiceClient::with_interceptor(channel, authorize),
            donation_metric,
        }
    }

    /// Handles a verified event.
    pub async fn handle(&self, event: Event) -> Result<Handled, Failure> {
        let object = event.data.object.clone();
        let parse = |what: &str, e: serde_json::Error| {
            Failure::Unmappable(format!("{} is not a {what}: {e}", event.kind))
        };
        match event.kind.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                let session: CheckoutSession =
                    serde_json::from_value(object).map_err(|e| parse("checkout session", e))?;
                self.checkout(&event, &session).await
            }
            "customer.subscription.created" | "customer.subscription.updated" => {
                let sub: Subscription =
                    serde_json::from_value(object).map_err(|e| parse("subscription", e))?;
                self.subscription_changed(&event, &sub).await
            }
            "customer.subscription.deleted" => {
                let sub: Subscription =
                    serde_json::from_value(object).map_err(|e| parse("subscription", e))?;
                self.subscription_deleted(&event, &sub).await
            }
            "invoice.paid" => {
                let invoice: Invoice =
                    serde_json::from_value(object).map_err(|e| parse("invoice", e))?;
                self.invoice_paid(&invoice).await
            }
            "payment_intent.succeeded" => {
                let intent: PaymentIntent =
                    serde_json::from_value(object).map_err(|e| parse("payment intent", e))?;
                self.payment_succeeded(&event, &intent).await
            }
            other => Ok(Handled::Ignored(format!("{other} is not handled"))),
        }
    }

    /// UpdateSubscription, its failure sorted for Stripe.
    async fn update_subscription(
        &self,
        request: UpdateSubscriptionRequest,
    ) -> Result<UpdateSubscriptionResponse, Failure> {
        self.subscriptions
            .clone()
            .update_subscription(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| failure("UpdateSubscription", &s))
    }

    /// The plan a price (or else its product) bills, by the catalog's
    /// billing ids, and the price that matched.
    async fn plan_of(&self, billed: &[PriceRef]) -> Result<(String, String), Failure> {
        let plans = self
            .subscriptions
            .clone()
            .list_plans(ListPlansRequest {})
            .await
            .map_err(|s| failure("ListPlans", &s))?
            .into_inner()
            .plans;
        let by_price = billed.iter().find_map(|(price, _)| {
            let plan = plans
                .iter()
                .find(|plan| plan.billing_price_ids.iter().any(|id| id == price))?;
            Some((plan.name.clone(), price.clone()))
        });
        let by_product = || {
            billed.iter().find_map(|(price, product)| {
                let product = product.as_deref()?;
                let plan = plans
                    .iter()
                    .find(|plan| plan.billing_product_ids.iter().any(|id| id == product))?;
                Some((plan.name.clone(), price.clone()))
            })
        };
        by_price.or_else(by_product).ok_or_else(|| {
            let ids: Vec<&str> = billed.iter().map(|(price, _)| price.as_str()).collect();
            Failure::Unmappable(format!(
                "no plan of the catalog is billed by price {ids:?} or its product: add the id to \
                 billing_price_ids or billing_product_ids"
            ))
        })
    }

    /// The account of a subscription or invoice: its metadata's, else the
    /// account meterd knows the customer by (FindAccount).
    async fn account_of(
        &self,
        named: Option<&str>,
        customer: Option<&str>,
        what: &str,
    ) -> Result<String, Failure> {
        if let Some(account) = named {
            return Ok(account.to_owned());
        }
        let unknown = || {
            Failure::Unmappable(format!(
                "{what} names no account and meterd knows no account of its customer: set \
                 metadata.account_id (or user_id) on the subscription, or client_reference_id on \
                 the Checkout session that starts it"
            ))
        };
        let customer = customer.filter(|c| !c.is_empty()).ok_or_else(unknown)?;
        match self
            .subscriptions
            .clone()
            .find_account(FindAccountRequest {
                billing_customer_id: customer.to_owned(),
            })
            .await
        {
            Ok(found) => Ok(found.into_inner().account_id),
            Err(status) if status.code() == Code::NotFound => Err(unknown()),
            Err(status) => Err(failure("FindAccount", &status)),
        }
    }

    /// The account of a subscription.
    async fn subscription_account(&self, sub: &Subscription) -> Result<String, Failure> {
        self.account_of(
            account_in(&sub.metadata),
            sub.customer.as_ref().map(Expandable::id),
            &format!("subscription {}", sub.id),
        )
        .await
    }

    async fn subscription_changed(
        &self,
        event: &Event,
        sub: &Subscription,
    ) -> Result<Handled, Failure> {
        let account = self.subscription_account(sub).await?;
        let mut status = status_of(&sub.status).ok_or_else(|| {
            Failure::Unmappable(format!("unknown subscription status {:?}", sub.status))
        })?;
        let paused = sub.pause_collection.as_ref().is_some_and(|p| !p.is_null());
        let paid = matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing | SubscriptionStatus::PastDue
        );
        if paused && paid {
            // Stripe keeps it `active` while collection is paused: its
            // periods renew unpaid, so it gets no paid allowance.
            status = SubscriptionStatus::Paused;
        }
        let billed: Vec<PriceRef> = sub
            .prices()
            .into_iter()
            .map(|p| (p.id, p.product.map(|p| p.id().to_owned())))
            .collect();
        let (plan, price) = self.plan_of(&billed).await?;
        let (start, end) = sub.period(&price);
        let reply = self
            .update_subscription(UpdateSubscriptionRequest {
                account_id: account.to_owned(),
                plan: plan.clone(),
                status: status.into(),
                current_period_start: start.map(timestamp),
                current_period_end: end.map(timestamp),
                cancel_at_period_end: sub.cancel_at_period_end,
                billing_customer_id: id_of(sub.customer.as_ref()),
                billing_subscription_id: sub.id.clone(),
                event_time: Some(timestamp(event.created)),
                idempotency_key: event.id.clone(),
                ..UpdateSubscriptionRequest::default()
            })
            .await?;
        Ok(Handled::Applied(format!(
            "UpdateSubscription {account}: plan {plan}, {} (applied {}, replayed {})",
            sub.status, reply.applied, reply.replayed
        )))
    }

    async fn subscription_deleted(
        &self,
        event: &Event,
        sub: &Subscription,
    ) -> Result<Handled, Failure> {
        let account = self.subscription_account(sub).await?;
        let reply = self
            .subscriptions
            .clone()
            .cancel_subscription(CancelSubscriptionRequest {
                account_id: account.to_owned(),
                at_period_end: false,
                event_time: Some(timestamp(event.created)),
                idempotency_key: event.id.clone(),
                billing_subscription_id: sub.id.clone(),
            })
            .await
            .map_err(|s| failure("CancelSubscription", &s))?
            .into_inner();
        Ok(Handled::Applied(format!(
            "CancelSubscription {account} now (applied {}, replayed {})",
            reply.applied, reply.replayed
        )))
    }

    /// A paid invoice that starts or renews a subscription: the billing
    /// period it pays, once per invoice. Its time is the invoice's own
    /// (made as the period starts), so a payment that comes late never rolls
    /// back what the subscription's later events said.
    async fn invoice_paid(&self, invoice: &Invoice) -> Result<Handled, Failure> {
        let Some(subscription) = invoice.subscription_id() else {
            return Ok(Handled::Ignored(format!(
                "invoice {} bills no subscription",
                invoice.id
            )));
        };
        let reason = invoice.billing_reason.as_deref().unwrap_or_default();
        if !matches!(reason, "subscription_create" | "subscription_cycle") {
            return Ok(Handled::Ignored(format!(
                "invoice {} ({reason:?}) neither starts nor renews a period: the subscription's \
                 own events carry the change",
                invoice.id
            )));
        }
        if invoice.amount_paid <= 0 {
            return Ok(Handled::Ignored(format!(
                "invoice {} paid nothing (a trial or a full discount): the subscription's own \
                 events carry its status",
                invoice.id
            )));
        }
        let named = invoice
            .metadata_value("account_id")
            .or_else(|| invoice.metadata_value("user_id"))
            .filter(|a| !a.is_empty());
        let account = self
            .account_of(
                named,
                invoice.customer.as_ref().map(Expandable::id),
                &format!("invoice {} of subscription {subscription}", invoice.id),
            )
            .await?;
        let billed = invoice.billed();
        if billed.lines.is_empty() {
            return Ok(Handled::Ignored(format!(
                "invoice {} ({reason}) carries no line billing a whole period (only \
                 prorations, or more lines than the event holds): the subscription's own \
                 events carry the period",
                invoice.id
            )));
        }
        let (plan, price) = self.plan_of(&billed.prices()).await?;
        let Some(period) = billed.period_of(&price) else {
            return Ok(Handled::Ignored(format!(
                "invoice {} ({reason}) has no whole period of plan {plan} among the lines it \
                 carries: the subscription's own events carry the period",
                invoice.id
            )));
        };
        let reply = self
            .update_subscription(UpdateSubscriptionRequest {
                account_id: account.to_owned(),
                plan: plan.clone(),
                status: SubscriptionStatus::Active.into(),
                current_period_start: Some(timestamp(period.0)),
                current_period_end: Some(timestamp(period.1)),
                billing_customer_id: id_of(invoice.customer.as_ref()),
                billing_subscription_id: subscription.to_owned(),
                // A second before the invoice was made: the subscription's
                // own events of the same second (a trial, a cancellation at
                // the period's end) win over what it implies.
                event_time: Some(timestamp(invoice.created - 1)),
                idempotency_key: invoice.id.clone(),
                ..UpdateSubscriptionRequest::default()
            })
            .await?;
        Ok(Handled::Applied(format!(
            "invoice {} paid: UpdateSubscription {account}, plan {plan} (applied {}, replayed {})",
            invoice.id, reply.applied, reply.replayed
        )))
    }

    /// A credit pack bought (a grant), or a donation recorded as usage.
    async fn payment_succeeded(
        &self,
        event: &Event,
        intent: &PaymentIntent,
    ) -> Result<Handled, Failure> {
        let account = account_in(&intent.metadata);
        if let Some(pack) = Pack::of(&intent.metadata)? {
            let account = account.ok_or_else(|| {
                Failure::Unmappable(format!(
                    "payment {} buys {} credits but names no account: set metadata.account_id",
                    intent.id, pack.credits
                ))
            })?;
            return self
                .grant_pack(account, &pack, &intent.id)
                .await
                .map(Handled::Applied);
        }
        let (Some(metric), Some(account)) = (&self.donation_metric, account) else {
            return Ok(Handled::Ignored(format!(
                "payment {} has no credit pack{}",
                intent.id,
                if self.donation_metric.is_some() {
                    " and names no account"
                } else {
                    ""
                }
            )));
        };
        let reply = self
            .usage
            .clone()
            .record_usage(RecordUsageRequest {
                events: vec![UsageEvent {
                    account_id: account.to_owned(),
                    metric: metric.clone(),
                    value: intent.amount_received,
                    event_id: intent.id.clone(),
                    time: Some(timestamp(event.created)),
                    // Amounts of different currencies do not add up: say which.
                    metadata: [("currency", &intent.currency)]
                        .into_iter()
                        .filter(|(_, currency)| !currency.is_empty())
                        .map(|(key, currency)| (key.to_owned(), currency.clone()))
                        .collect(),
                }],
            })
            .await
            .map_err(|s| failure("RecordUsage", &s))?
            .into_inner();
        if let Some(rejected) = reply
            .results
            .iter()
            .find(|r| r.status == i32::from(EventStatus::Rejected))
        {
            return Err(Failure::Unmappable(format!(
                "RecordUsage of payment {} as {metric} was rejected: {}",
                intent.id, rejected.reason
            )));
        }
        Ok(Handled::Applied(format!(
            "RecordUsage {metric} {} for {account} (recorded {}, duplicates {})",
            intent.amount_received, reply.recorded, reply.duplicates
        )))
    }

    /// Grants `pack` to `account`, keyed by the payment that bought it.
    async fn grant_pack(
        &self,
        account: &str,
        pack: &Pack,
        payment: &str,
    ) -> Result<String, Failure> {
        if let Some(expire_at) = pack.expire_at
            && expire_at <= unix_now()
        {
            // meterd refuses an expiry in the past. Not a silent 200: the
            // buyer paid, so the delivery shows as failed in Stripe.
            return Err(Failure::Unmappable(format!(
                "the pack of {} credits paid by {payment} expires at {expire_at}, which has \
                 passed: not granted now. If an earlier delivery of this payment granted it, \
                 nothing is lost; otherwise grant it by hand or refund",
                pack.credits
            )));
        }
        let reply = self
            .credits
            .clone()
            .grant(GrantRequest {
                account_id: account.to_owned(),
                amount: pack.credits,
                idempotency_key: payment.to_owned(),
                reason: format!("stripe {payment}"),
                kind: GrantKind::Paid.into(),
                expire_time: pack.expire_at.map(timestamp),
                ..GrantRequest::default()
            })
            .await
            .map_err(|s| failure("Grant", &s))?
            .into_inner();
        Ok(format!(
            "Grant {} credits to {account} for {payment} (replayed {})",
            pack.credits, reply.replayed
        ))
    }

    /// A completed Checkout: the account registered if needed, its
    /// customer linked to it (so the subscription's events find it), and
    /// in subscription mode the subscription when the session says the plan
    /// (`metadata.plan`, or `metadata.price_id` through the catalog); in
    /// payment mode a credit pack in its metadata, once paid.
    async fn checkout(&self, event: &Event, session: &CheckoutSession) -> Result<Handled, Failure> {
        // The metadata first: set by the server that made the session (or
        // the Payment Link), where a buyer can set client_reference_id in
        // a Payment Link's URL.
        let account = account_in(&session.metadata)
            .or_else(|| {
                session
                    .client_reference_id
                    .as_deref()
                    .filter(|a| !a.is_empty())
            })
            .ok_or_else(|| {
                Failure::Unmappable(format!(
                    "checkout session {} names no account: set metadata.account_id (or \
                     client_reference_id) when creating it",
                    session.id
                ))
            })?;
        let pack = Pack::of(&session.metadata)?;
        let mut done = vec![self.register(account, &session.id).await?];
        let customer = session.customer.as_ref().map(Expandable::id);
        if let Some(customer) = customer.filter(|c| !c.is_empty()) {
            self.subscriptions
                .clone()
                .link_billing_customer(LinkBillingCustomerRequest {
                    account_id: account.to_owned(),
                    billing_customer_id: customer.to_owned(),
                    event_time: Some(timestamp(session.created)),
                })
                .await
                .map_err(|s| failure("LinkBillingCustomer", &s))?;
            done.push(format!("LinkBillingCustomer {customer}"));
        }
        match session.mode.as_str() {
            "subscription" if event.kind == "checkout.session.completed" => {
                done.push(self.checkout_plan(event, session, account).await?);
            }
            "payment" => match pack {
                Some(pack)
                    if matches!(
                        session.payment_status.as_str(),
                        "paid" | "no_payment_required"
                    ) =>
                {
                    // Keyed like the payment intent's own event: a pack in
                    // both metadata is granted once.
                    let payment = session
                        .payment_intent
                        .as_ref()
                        .map_or(session.id.as_str(), Expandable::id);
                    done.push(self.grant_pack(account, &pack, payment).await?);
                }
                Some(_) => done.push(format!(
                    "payment {}: the pack is granted once checkout.session.async_payment_succeeded \
                     says it was paid",
                    session.payment_status
                )),
                None => {}
            },
            _ => {}
        }
        Ok(Handled::Applied(done.join(", ")))
    }

    /// Registers `account` unless it is (a no-op for a registered one).
    async fn register(&self, account: &str, session: &str) -> Result<String, Failure> {
        let mut subscriptions = self.subscriptions.clone();
        match subscriptions
            .get_account(GetAccountRequest {
                account_id: account.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(format!("account {account} registered before")),
            Err(status) if status.code() == Code::NotFound => {
                subscriptions
                    .register_account(RegisterAccountRequest {
                        account_id: account.to_owned(),
                        profile: None,
                        idempotency_key: format!("{session}:register"),
                    })
                    .await
                    .map_err(|s| failure("RegisterAccount", &s))?;
                Ok(format!("RegisterAccount {account}"))
            }
            Err(status) => Err(failure("GetAccount", &status)),
        }
    }

    /// The subscription a Checkout session starts, when it says the plan.
    async fn checkout_plan(
        &self,
        event: &Event,
        session: &CheckoutSession,
        account: &str,
    ) -> Result<String, Failure> {
        let plan = match (
            session.metadata.get("plan"),
            session.metadata.get("price_id"),
        ) {
            (Some(plan), _) => plan.clone(),
            (None, Some(price)) => self.plan_of(&[(price.clone(), None)]).await?.0,
            (None, None) => {
                return Ok("no plan in the session: the subscription's own events set it".into());
            }
        };
        let status = match session.payment_status.as_str() {
            "paid" => SubscriptionStatus::Active,
            "no_payment_required" => SubscriptionStatus::Trialing,
            _ => SubscriptionStatus::Incomplete,
        };
        let reply = self
            .update_subscription(UpdateSubscriptionRequest {
                account_id: account.to_owned(),
                plan: plan.clone(),
                status: status.into(),
                billing_customer_id: id_of(session.customer.as_ref()),
                billing_subscription_id: id_of(session.subscription.as_ref()),
                // The session's own time: the subscription's events, made
                // after it, win over it whatever order they come in.
                event_time: Some(timestamp(session.created)),
                idempotency_key: event.id.clone(),
                ..UpdateSubscriptionRequest::default()
            })
            .await?;
        Ok(format!(
            "UpdateSubscription {account}: plan {plan} (applied {}, replayed {})",
            reply.applied, reply.replayed
        ))
    }
}

/// A credit pack sold through Stripe: metadata `credits` and, optionally,
/// `credits_expire_at` (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pack {
    credits: i64,
    expire_at: Option<i64>,
}

impl Pack {
    /// The pack `metadata` sells, if any.
    fn of(metadata: &Metadata) -> Result<Option<Self>, Failure> {
        let Some(credits) = metadata.get("credits") else {
            return Ok(None);
        };
        let credits = credits.trim().parse().map_err(|_| {
            Failure::Unmappable(format!(
                "metadata.credits {credits:?} is not a number of credits"
            ))
        })?;
        let expire_at = match metadata.get("credits_expire_at") {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|_| {
                Failure::Unmappable(format!(
                    "metadata.credits_expire_at {text:?} is not a Unix time in seconds"
                ))
            })?),
        };
        Ok(Some(Self { credits, expire_at }))
    }
}
