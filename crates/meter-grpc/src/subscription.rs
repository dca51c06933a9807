//! `meter.v1.SubscriptionService`.

use std::sync::Arc;

use meter_api::v1::{
    self, DeleteAccountRequest, DeleteAccountResponse, FeaturePrice, ListPlansRequest,
    ListPlansResponse, UsageAllowance, subscription_service_server::SubscriptionService,
};
use meter_core::{AccountId, AccountStore, BillingInterval, CreditPeriod, Plan, Subscriptions};
use tonic::{Request, Response, Status};

use crate::status::{invalid_argument, to_status};

/// The SubscriptionService over a [`Subscriptions`] use-case object.
#[derive(Debug)]
pub struct SubscriptionGrpc<S> {
    subscriptions: Arc<Subscriptions<S>>,
}

impl<S> SubscriptionGrpc<S> {
    /// Serves `subscriptions`.
    pub fn new(subscriptions: Arc<Subscriptions<S>>) -> Self {
        Self { subscriptions }
    }
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
impl<S: AccountStore> SubscriptionService for SubscriptionGrpc<S> {
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
}
