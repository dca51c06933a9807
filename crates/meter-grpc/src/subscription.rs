//! `meter.v1.SubscriptionService`.

use std::sync::Arc;

use meter_api::v1::{
    self, CancelSubscriptionRequest, CancelSubscriptionResponse, DeleteAccountRequest,
    DeleteAccountResponse, FeaturePrice, FindAccountRequest, FindAccountResponse,
    GetAccountRequest, GetAccountResponse, GetSubscriptionRequest, GetSubscriptionResponse,
    LinkBillingCustomerRequest, LinkBillingCustomerResponse, ListPlansRequest, ListPlansResponse,
    RegisterAccountRequest, RegisterAccountResponse, UpdateProfileRequest, UpdateProfileResponse,
    UpdateSubscriptionRequest, UpdateSubscriptionResponse, UsageAllowance,
    subscription_service_server::SubscriptionService,
};
use meter_core::{
    AccountId, AccountStore, AccountView, BillingInterval, ChangeOutcome, Clock, CreditPeriod,
    InvalidArgument, Plan, Profile, ProfileFields, Recorded, Subscription, SubscriptionRequest,
    SubscriptionStatus, Subscriptions, Timestamp,
};
use tonic::{Request, Response, Status};

use crate::{
    credits::{account, balance, from_timestamp, idempotency_key, timestamp},
    status::{invalid_argument, to_status},
};

/// The SubscriptionService over a [`Subscriptions`] use-case object.
#[derive(Debug)]
pub struct SubscriptionGrpc<S, C> {
    subscriptions: Arc<Subscriptions<S, C>>,
}

impl<S, C> SubscriptionGrpc<S, C> {
    /// Serves `subscriptions`.
    pub fn new(subscriptions: Arc<Subscriptions<S, C>>) -> Self {
        Self { subscriptions }
    }
}

fn status(status: SubscriptionStatus) -> v1::SubscriptionStatus {
    match status {
        SubscriptionStatus::Active => v1::SubscriptionStatus::Active,
        SubscriptionStatus::Trialing => v1::SubscriptionStatus::Trialing,
        SubscriptionStatus::PastDue => v1::SubscriptionStatus::PastDue,
        SubscriptionStatus::Canceled => v1::SubscriptionStatus::Canceled,
        SubscriptionStatus::Unpaid => v1::SubscriptionStatus::Unpaid,
        SubscriptionStatus::Incomplete => v1::SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired => v1::SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Paused => v1::SubscriptionStatus::Paused,
    }
}

/// A requested status: required, and one the API knows.
fn requested_status(raw: i32) -> Result<SubscriptionStatus, Status> {
    let bad = |problem: &str| invalid_argument(&InvalidArgument::new("status", problem));
    match v1::SubscriptionStatus::try_from(raw) {
        Ok(v1::SubscriptionStatus::Unspecified) => Err(bad(
            "is required (ACTIVE, TRIALING, PAST_DUE, CANCELED, UNPAID, INCOMPLETE, INCOMPLETE_EXPIRED, PAUSED)",
        )),
        Ok(known) => Ok(SubscriptionStatus::ALL[known as usize - 1]),
        Err(_) => Err(bad(&format!("{raw} is not a subscription status"))),
    }
}

/// A requested interval: the plan's when unspecified.
fn requested_interval(raw: i32) -> Result<Option<BillingInterval>, Status> {
    match v1::BillingInterval::try_from(raw) {
        Ok(v1::BillingInterval::Unspecified) => Ok(None),
        Ok(v1::BillingInterval::Month) => Ok(Some(BillingInterval::Month)),
        Ok(v1::BillingInterval::Year) => Ok(Some(BillingInterval::Year)),
        Err(_) => Err(invalid_argument(&InvalidArgument::new(
            "interval",
            format!("{raw} is not a billing interval (MONTH, YEAR)"),
        ))),
    }
}

fn optional_time(
    field: &'static str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<Timestamp>, Status> {
    ts.map(|ts| from_timestamp(field, ts)).transpose()
}

fn profile(profile: &Profile) -> v1::Profile {
    v1::Profile {
        email: profile.email.clone(),
        name: profile.name.clone(),
        image: profile.image.clone(),
        role: profile.role.clone(),
        joined: Some(timestamp(profile.joined)),
        last_login: Some(timestamp(profile.last_login)),
    }
}

fn subscription(
    subscription: &Subscription,
    next_credit_reset: Option<Timestamp>,
) -> v1::Subscription {
    v1::Subscription {
        plan: subscription.plan.clone(),
        status: status(subscription.status).into(),
        interval: billing_interval(subscription.interval).into(),
        amount_micros: subscription.amount_micros,
        purchase_time: subscription.purchase_time.map(timestamp),
        renewal_time: subscription.renewal_time.map(timestamp),
        next_credit_reset: next_credit_reset.map(timestamp),
        cancel_at_period_end: subscription.cancel_at_period_end,
        billing_customer_id: subscription.customer_id.clone(),
        billing_subscription_id: subscription.subscription_id.clone(),
        updated_at: subscription.updated_at.map(timestamp),
        current_period_start: subscription.period_start.map(timestamp),
        canceled_time: subscription.canceled_time.map(timestamp),
    }
}

fn account_message(account: &AccountId, view: &AccountView) -> v1::Account {
    v1::Account {
        account_id: account.to_string(),
        profile: Some(profile(&view.profile)),
        subscription: Some(subscription(&view.subscription, view.balance.reset_time())),
        balance: Some(balance(account, &view.balance)),
        active: view.active,
    }
}

/// The subscription and flags of a change's outcome.
fn change_parts(recorded: Recorded<ChangeOutcome>) -> (v1::Subscription, bool, bool) {
    let outcome = recorded.outcome;
    (
        subscription(&outcome.subscription, outcome.next_credit_reset),
        outcome.applied,
        recorded.replayed,
    )
}

fn credit_period(period: CreditPeriod) -> v1::CreditPeriod {
    match period {
        CreditPeriod::Day => v1::CreditPeriod::Day,
        CreditPeriod::Week => v1::CreditPeriod::Week,
        CreditPeriod::Month => v1::CreditPeriod::Month,
        CreditPeriod::Year => v1::CreditPeriod::Year,
    }
}

fn billing_interval(interval: BillingInterval) -> v1::BillingInterval {
    match interval {
        BillingInterval::Month => v1::BillingInterval::Month,
        BillingInterval::Year => v1::BillingInterval::Year,
    }
}

fn plan(plan: &Plan) -> v1::Plan {
    v1::Plan {
        name: plan.name.clone(),
        credits: plan.credits,
        credit_period: credit_period(plan.credit_period).into(),
        billing_interval: billing_interval(plan.billing_interval).into(),
        price_micros: plan.price_micros,
        usage: plan
            .usage
            .iter()
            .map(|(metric, limit)| UsageAllowance {
                metric: metric.clone(),
                included: limit.included,
                overage_micros: limit.overage_micros,
            })
            .collect(),
        billing_price_ids: plan.billing_price_ids.clone(),
        billing_product_ids: plan.billing_product_ids.clone(),
    }
}

#[tonic::async_trait]
impl<S: AccountStore, C: Clock> SubscriptionService for SubscriptionGrpc<S, C> {
    async fn list_plans(
        &self,
        _request: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>, Status> {
        let catalog = self.subscriptions.catalog();
        Ok(Response::new(ListPlansResponse {
            plans: catalog.plans().map(plan).collect(),
            default_plan: catalog.default_plan().name.clone(),
            prices: catalog
                .prices()
                .iter()
                .map(|(feature, credits)| FeaturePrice {
                    feature: feature.clone(),
                    credits: *credits,
                })
                .collect(),
            currency: catalog.currency().to_owned(),
        }))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        let account = AccountId::parse("account_id", &request.into_inner().account_id)
            .map_err(|e| invalid_argument(&e))?;
        let deleted = self
            .subscriptions
            .delete_account(&account)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(DeleteAccountResponse { deleted }))
    }

    async fn find_account(
        &self,
        request: Request<FindAccountRequest>,
    ) -> Result<Response<FindAccountResponse>, Status> {
        let customer = request.into_inner().billing_customer_id;
        let found = self
            .subscriptions
            .account_of_customer(&customer)
            .await
            .map_err(to_status)?;
        let Some(account) = found else {
            return Err(Status::not_found(format!(
                "no subscription change named billing customer {customer:?} (or its account was deleted)"
            )));
        };
        Ok(Response::new(FindAccountResponse {
            account_id: account.to_string(),
        }))
    }

    async fn link_billing_customer(
        &self,
        request: Request<LinkBillingCustomerRequest>,
    ) -> Result<Response<LinkBillingCustomerResponse>, Status> {
        let request = request.into_inner();
        let account = account(&request.account_id)?;
        let event_time = optional_time("event_time", request.event_time.as_ref())?;
        self.subscriptions
            .link_customer(&account, &request.billing_customer_id, event_time)
            .await
            .map_err(to_status)?;
        Ok(Response::new(LinkBillingCustomerResponse {}))
    }

    async fn register_account(
        &self,
        request: Request<RegisterAccountRequest>,
    ) -> Result<Response<RegisterAccountResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let given = request.profile.unwrap_or_default();
        let fields = ProfileFields {
            email: Some(given.email),
            name: Some(given.name),
            image: Some(given.image),
            role: Some(given.role),
        };
        let recorded = self
            .subscriptions
            .register(who.clone(), fields, key)
            .await
            .map_err(to_status)?;
        let (created, view) = &recorded.outcome;
        if recorded.replayed {
            crate::observe::replayed("meter.v1.SubscriptionService", "RegisterAccount");
        }
        Ok(Response::new(RegisterAccountResponse {
            account: Some(account_message(&who, view)),
            created: *created,
            replayed: recorded.replayed,
        }))
    }

    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        let who = account(&request.into_inner().account_id)?;
        let view = self.subscriptions.account(&who).await.map_err(to_status)?;
        Ok(Response::new(GetAccountResponse {
            account: Some(account_message(&who, &view)),
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<GetSubscriptionRequest>,
    ) -> Result<Response<GetSubscriptionResponse>, Status> {
        let who = account(&request.into_inner().account_id)?;
        let (stored, next_reset) = self
            .subscriptions
            .subscription(&who)
            .await
            .map_err(to_status)?;
        Ok(Response::new(GetSubscriptionResponse {
            subscription: Some(subscription(&stored, next_reset)),
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<UpdateSubscriptionRequest>,
    ) -> Result<Response<UpdateSubscriptionResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let update = SubscriptionRequest {
            plan: request.plan,
            status: Some(requested_status(request.status)?),
            interval: requested_interval(request.interval)?,
            amount_micros: request.amount_micros,
            period_start: optional_time(
                "current_period_start",
                request.current_period_start.as_ref(),
            )?,
            period_end: optional_time("current_period_end", request.current_period_end.as_ref())?,
            cancel_at_period_end: request.cancel_at_period_end,
            customer_id: request.billing_customer_id,
            subscription_id: request.billing_subscription_id,
        };
        let event_time = optional_time("event_time", request.event_time.as_ref())?;
        let recorded = self
            .subscriptions
            .update(who, update, event_time, key)
            .await
            .map_err(to_status)?;
        let (subscription, applied, replayed) = change_parts(recorded);
        if replayed {
            crate::observe::replayed("meter.v1.SubscriptionService", "UpdateSubscription");
        }
        Ok(Response::new(UpdateSubscriptionResponse {
            subscription: Some(subscription),
            applied,
            replayed,
        }))
    }

    async fn cancel_subscription(
        &self,
        request: Request<CancelSubscriptionRequest>,
    ) -> Result<Response<CancelSubscriptionResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let event_time = optional_time("event_time", request.event_time.as_ref())?;
        let recorded = self
            .subscriptions
            .cancel(
                who,
                request.at_period_end,
                request.billing_subscription_id,
                event_time,
                key,
            )
            .await
            .map_err(to_status)?;
        let (subscription, applied, replayed) = change_parts(recorded);
        if replayed {
            crate::observe::replayed("meter.v1.SubscriptionService", "CancelSubscription");
        }
        Ok(Response::new(CancelSubscriptionResponse {
            subscription: Some(subscription),
            applied,
            replayed,
        }))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let fields = ProfileFields {
            email: request.email,
            name: request.name,
            image: request.image,
            role: request.role,
        };
        let recorded = self
            .subscriptions
            .update_profile(who, fields, key)
            .await
            .map_err(to_status)?;
        if recorded.replayed {
            crate::observe::replayed("meter.v1.SubscriptionService", "UpdateProfile");
        }
        Ok(Response::new(UpdateProfileResponse {
            profile: Some(profile(&recorded.outcome)),
            replayed: recorded.replayed,
        }))
    }
}
