//! `meter.v1.UsageService`.

use std::sync::Arc;

use futures_util::FutureExt;
use meter_api::v1::{
    self, CheckQuotaRequest, CheckQuotaResponse, ComputeBillRequest, ComputeBillResponse,
    EventResult, EventStatus, GetUsageRequest, GetUsageResponse, ListUsageEventsRequest,
    ListUsageEventsResponse, RecordUsageRequest, RecordUsageResponse, StreamRejection,
    StreamUsageRequest, StreamUsageResponse, TopConsumersRequest, TopConsumersResponse,
    usage_service_server::UsageService,
};
use meter_core::{Clock, EventOutcome, RawUsageEvent, Usage, UsagePeriod, UsageStore};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status, Streaming};

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

/// Batches of a stream being recorded at once.
const STREAM_BATCHES_IN_FLIGHT: usize = 4;
/// Rejected events a stream's summary names.
const STREAM_REJECTIONS_NAMED: usize = 100;

/// `event` as the use cases take it; `Err` with the problem of its time.
fn raw_event(event: v1::UsageEvent) -> Result<RawUsageEvent, (String, String)> {
    let time = match event.time.as_ref().map(|t| from_timestamp("time", t)) {
        Some(Err(status)) => {
            let problem = status.message().trim_start_matches("time: ").to_owned();
            return Err((event.event_id, problem));
        }
        Some(Ok(time)) => Some(time),
        None => None,
    };
    Ok(RawUsageEvent {
        account_id: event.account_id,
        metric: event.metric,
        value: event.value,
        event_id: event.event_id,
        time,
        metadata: event.metadata.into_iter().collect(),
    })
}

/// A stream's summary as it adds up.
#[derive(Default)]
struct StreamSummary(StreamUsageResponse);

impl StreamSummary {
    fn reject(&mut self, index: i64, event_id: String, reason: String) {
        self.0.rejected += 1;
        if self.0.rejections.len() < STREAM_REJECTIONS_NAMED {
            self.0.rejections.push(StreamRejection {
                index,
                event_id,
                reason,
            });
        }
    }

    /// Counts a recorded batch: its events' positions and ids, and outcomes.
    fn add(&mut self, events: Vec<(i64, String)>, outcomes: Vec<EventOutcome>) {
        for ((index, event_id), outcome) in events.into_iter().zip(outcomes) {
            match outcome {
                EventOutcome::Recorded { .. } => self.0.recorded += 1,
                EventOutcome::Duplicate => self.0.duplicates += 1,
                EventOutcome::Rejected(reason) => self.reject(index, event_id, reason),
            }
        }
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
                raw_event(event).map_err(|(_, problem)| {
                    invalid_argument(&meter_core::InvalidArgument::new(
                        format!("events[{index}].time"),
                        problem,
                    ))
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

    async fn stream_usage(
        &self,
        request: Request<Streaming<StreamUsageRequest>>,
    ) -> Result<Response<StreamUsageResponse>, Status> {
        let mut stream = request.into_inner();
        let max = self.usage.max_events();
        let mut summary = StreamSummary::default();
        let mut in_flight: JoinSet<Result<_, Status>> = JoinSet::new();
        let mut position: i64 = 0;
        let mut held: Option<StreamUsageRequest> = None;
        loop {
            let first = match held.take() {
                Some(message) => message,
                None => match stream.message().await? {
                    Some(message) => message,
                    None => break,
                },
            };
            // Messages already here join the batch, up to the cap.
            let mut messages = vec![first];
            let mut size = messages[0].events.len();
            while size < max {
                match stream.message().now_or_never() {
                    Some(Ok(Some(next))) if size + next.events.len() <= max => {
                        size += next.events.len();
                        messages.push(next);
                    }
                    Some(Ok(Some(next))) => {
                        held = Some(next);
                        break;
                    }
                    Some(Err(status)) => return Err(status),
                    Some(Ok(None)) | None => break,
                }
            }
            let mut raws = Vec::with_capacity(size);
            let mut named = Vec::with_capacity(size);
            for message in messages {
                summary.0.batches += 1;
                if message.events.is_empty() || message.events.len() > max {
                    return Err(invalid_argument(&meter_core::InvalidArgument::new(
                        "events",
                        format!(
                            "message {} of the stream has {} events; send 1 to {max} per message \
                             (meterd's --usage-max-events)",
                            summary.0.batches - 1,
                            message.events.len()
                        ),
                    )));
                }
                for event in message.events {
                    let index = position;
                    position += 1;
                    match raw_event(event) {
                        Ok(raw) => {
                            named.push((index, raw.event_id.clone()));
                            raws.push(raw);
                        }
                        Err((event_id, problem)) => {
                            summary.reject(index, event_id, format!("time: {problem}"));
                        }
                    }
                }
            }
            if raws.is_empty() {
                continue;
            }
            let usage = Arc::clone(&self.usage);
            in_flight.spawn(async move {
                let outcomes = usage.record_each(raws).await.map_err(to_status)?;
                Ok((named, outcomes))
            });
            while in_flight.len() >= STREAM_BATCHES_IN_FLIGHT {
                if let Some(done) = in_flight.join_next().await {
                    let (named, outcomes) = done.map_err(|e| Status::internal(e.to_string()))??;
                    summary.add(named, outcomes);
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            let (named, outcomes) = done.map_err(|e| Status::internal(e.to_string()))??;
            summary.add(named, outcomes);
        }
        Ok(Response::new(summary.0))
    }

    async fn top_consumers(
        &self,
        request: Request<TopConsumersRequest>,
    ) -> Result<Response<TopConsumersResponse>, Status> {
        let request = request.into_inner();
        let limit = usize::try_from(request.limit).map_err(|_| {
            invalid_argument(&meter_core::InvalidArgument::new(
                "limit",
                format!("is {}; ask for 1 to 1000 (0 for 10)", request.limit),
            ))
        })?;
        let (period, top) = self
            .usage
            .top_consumers(&request.metric, &request.period, limit)
            .await
            .map_err(to_status)?;
        Ok(Response::new(TopConsumersResponse {
            period: period.to_string(),
            consumers: top
                .into_iter()
                .map(|c| v1::Consumer {
                    account_id: c.account.to_string(),
                    used: c.used,
                })
                .collect(),
        }))
    }

    async fn list_usage_events(
        &self,
        request: Request<ListUsageEventsRequest>,
    ) -> Result<Response<ListUsageEventsResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let page_size = usize::try_from(request.page_size).map_err(|_| {
            invalid_argument(&meter_core::InvalidArgument::new(
                "page_size",
                format!("is {}; ask for 1 to 500 (0 for 50)", request.page_size),
            ))
        })?;
        let (events, next_page_token) = self
            .usage
            .events(&who, &request.metric, page_size, &request.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListUsageEventsResponse {
            events: events
                .into_iter()
                .map(|logged| v1::LoggedUsageEvent {
                    event: Some(v1::UsageEvent {
                        account_id: logged.event.account.to_string(),
                        metric: logged.event.metric,
                        value: logged.event.value,
                        event_id: logged.event.event_id,
                        time: Some(timestamp(logged.event.time)),
                        metadata: logged.event.metadata.into_iter().collect(),
                    }),
                    record_time: Some(timestamp(logged.recorded_at)),
                })
                .collect(),
            next_page_token,
        }))
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
                provisional: bill.provisional,
            }),
        }))
    }
}
