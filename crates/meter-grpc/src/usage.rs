//! `meter.v1.UsageService`.

use std::sync::Arc;

use meter_api::v1::{
    self, CheckQuotaRequest, CheckQuotaResponse, ComputeBillRequest, ComputeBillResponse,
    EventResult, EventStatus, GetUsageRequest, GetUsageResponse, RecordUsageRequest,
    RecordUsageResponse, usage_service_server::UsageService,
};
use meter_core::{Clock, EventOutcome, RawUsageEvent, Usage, UsagePeriod, UsageStore};
use tonic::{Request, Response, Status};

use crate::{
    credits::{account, from_timestamp, idempotency_key, timestamp},
    status::{invalid_argument, to_status},
};

/// The UsageService over a [`Usage`] use-case object.
#[derive(Debug)]
pub struct UsageGrpc<S, C> {
    usage: Arc<Usage<S, C>>,
}

impl<S, C> UsageGrpc<S, C> {
    /// Serves `usage`.
    pub fn new(usage: Arc<Usage<S, C>>) -> Self {
        Self { usage }
    }
}

#[tonic::async_trait]
impl<S: UsageStore, C: Clock> UsageService for UsageGrpc<S, C> {
    async fn record_usage(
        &self,
        request: Request<RecordUsageRequest>,
    ) -> Result<Response<RecordUsageResponse>, Status> {
        let events = request
            .into_inner()
            .events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                let time = event
                    .time
                    .as_ref()
                    .map(|t| from_timestamp("time", t))
                    .transpose()
                    .map_err(|status| {
                        invalid_argument(&meter_core::InvalidArgument::new(
                            format!("events[{index}].time"),
                            status.message().trim_start_matches("time: ").to_owned(),
                        ))
                    })?;
                Ok(RawUsageEvent {
                    account_id: event.account_id,
                    metric: event.metric,
                    value: event.value,
                    event_id: event.event_id,
                    time,
                    metadata: event.metadata.into_iter().collect(),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let outcomes = self.usage.record(events).await.map_err(to_status)?;
        let mut response = RecordUsageResponse::default();
        for outcome in outcomes {
            let result = match outcome {
                EventOutcome::Recorded {
                    month_total,
                    day_total,
                } => {
                    response.recorded += 1;
                    EventResult {
                        status: EventStatus::Recorded.into(),
                        reason: String::new(),
                        month_total,
                        day_total,
                    }
                }
                EventOutcome::Duplicate => {
                    response.duplicates += 1;
                    EventResult {
                        status: EventStatus::Duplicate.into(),
                        ..EventResult::default()
                    }
                }
                EventOutcome::Rejected(reason) => {
                    response.rejected += 1;
                    EventResult {
                        status: EventStatus::Rejected.into(),
                        reason,
                        ..EventResult::default()
                    }
                }
            };
            response.results.push(result);
        }
        Ok(Response::new(response))
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let (period, values) = self
            .usage
            .usage(&who, &request.period, &request.metrics)
            .await
            .map_err(to_status)?;
        Ok(Response::new(GetUsageResponse {
            period: period.to_string(),
            values: values.into_iter().collect(),
        }))
    }

    async fn check_quota(
        &self,
        request: Request<CheckQuotaRequest>,
    ) -> Result<Response<CheckQuotaResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let outcome = self
            .usage
            .check_quota(who, &request.metric, request.amount, request.consume, key)
            .await
            .map_err(to_status)?;
        let decision = outcome.decision;
        Ok(Response::new(CheckQuotaResponse {
            allowed: decision.allowed,
            unlimited: decision.limit.is_none(),
            limit: decision.limit.unwrap_or(0),
            used: decision.used,
            remaining: decision.remaining.unwrap_or(0),
            period_end: UsagePeriod::month_of(self.usage.now()).end().map(timestamp),
            plan: outcome.plan,
            duplicate: outcome.consumed == Some(EventOutcome::Duplicate),
        }))
    }

    async fn compute_bill(
        &self,
        request: Request<ComputeBillRequest>,
    ) -> Result<Response<ComputeBillResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let bill = self
            .usage
            .bill(&who, &request.period)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ComputeBillResponse {
            bill: Some(v1::Bill {
                plan: bill.plan,
                base_price_micros: bill.base_price_micros,
                lines: bill
                    .lines
                    .into_iter()
                    .map(|l| v1::BillLine {
                        metric: l.metric,
                        used: l.used,
                        included: l.included,
                        overage_units: l.overage_units,
                        unit_price_micros: l.unit_price_micros,
                        amount_micros: l.amount_micros,
                    })
                    .collect(),
                total_micros: bill.total_micros,
                currency: bill.currency,
                period: request.period,
            }),
        }))
    }
}
