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
use meter_core::{Clock, EventOutcome, MeterError, RawUsageEvent, Usage, UsagePeriod, UsageStore};
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

/// A batch of a stream: its events' positions and ids, and the outcomes.
type Recorded = (Vec<(i64, String)>, Vec<EventOutcome>);

/// The events of a stream gathered for one store call.
#[derive(Default)]
struct Batch {
    raws: Vec<RawUsageEvent>,
    named: Vec<(i64, String)>,
}

impl Batch {
    /// Sends the gathered events (if any) to be recorded, in a task of its own.
    fn send<S: UsageStore, C: Clock>(
        &mut self,
        in_flight: &mut JoinSet<Result<Recorded, MeterError>>,
        usage: &Arc<Usage<S, C>>,
    ) {
        if self.raws.is_empty() {
            return;
        }
        let Self { raws, named } = std::mem::take(self);
        let usage = Arc::clone(usage);
        in_flight.spawn(async move {
            let outcomes = usage.record_each(raws).await?;
            Ok((named, outcomes))
        });
    }
}

/// A stream's summary as it adds up, and the first failure of a batch.
#[derive(Default)]
struct StreamSummary(StreamUsageResponse, Option<Status>);

impl StreamSummary {
    fn reject(&mut self, index: i64, event_id: String, reason: String) {
        self.0.rejected += 1;
        self.0.rejections.push(StreamRejection {
            index,
            event_id,
            reason,
        });
        // Batches finish in any order: keep the lowest positions.
        if self.0.rejections.len() > 2 * STREAM_REJECTIONS_NAMED {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.0.rejections.sort_by_key(|r| r.index);
        self.0.rejections.truncate(STREAM_REJECTIONS_NAMED);
    }

    /// Waits until at most `left` batches are in flight, counting those done.
    async fn settle(&mut self, in_flight: &mut JoinSet<Result<Recorded, MeterError>>, left: usize) {
        while in_flight.len() > left {
            match in_flight.join_next().await {
                Some(Ok(Ok((named, outcomes)))) => self.add(named, outcomes),
                Some(Ok(Err(error))) => {
                    let status = partly_recorded(to_status(error));
                    self.1.get_or_insert(status);
                }
                Some(Err(join)) => {
                    tracing::error!(error = %join, "a stream batch task failed");
                    self.1.get_or_insert(Status::internal(
                        "a batch of the stream failed unexpectedly; events of the stream may have \
                         been recorded: send them again, those recorded answer DUPLICATE",
                    ));
                }
                None => break,
            }
        }
    }

    fn finish(mut self) -> StreamUsageResponse {
        self.trim();
        self.0
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

/// `status` of a call that records several store calls' worth of events
/// (several accounts, or a stream), some of which may have been recorded.
fn partly_recorded(status: Status) -> Status {
    if status.code() != tonic::Code::Unavailable {
        return status;
    }
    Status::unavailable(format!(
        "{}; some events of this call may have been recorded before the failure: send the same \
         events again, those recorded answer DUPLICATE",
        status.message().split(';').next().unwrap_or_default()
    ))
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
        let outcomes = self
            .usage
            .record(events)
            .await
            .map_err(|e| partly_recorded(to_status(e)))?;
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
        crate::observe::usage_events(response.recorded, response.duplicates, response.rejected);
        Ok(Response::new(response))
    }

    async fn stream_usage(
        &self,
        request: Request<Streaming<StreamUsageRequest>>,
    ) -> Result<Response<StreamUsageResponse>, Status> {
        let mut stream = request.into_inner();
        let max = self.usage.max_events();
        let mut summary = StreamSummary::default();
        let mut in_flight: JoinSet<Result<Recorded, MeterError>> = JoinSet::new();
        let mut batch = Batch::default();
        let mut position: i64 = 0;
        // What ends the stream early; the batches before it still count.
        let mut failure: Option<Status> = None;
        loop {
            // Wait for a message when nothing is gathered; else take only
            // one already here, and send the batch when none is.
            let next = if batch.raws.is_empty() {
                stream.message().await
            } else {
                match stream.message().now_or_never() {
                    Some(next) => next,
                    None => {
                        batch.send(&mut in_flight, &self.usage);
                        summary
                            .settle(&mut in_flight, STREAM_BATCHES_IN_FLIGHT - 1)
                            .await;
                        continue;
                    }
                }
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    failure = Some(status);
                    break;
                }
            };
            summary.0.batches += 1;
            if message.events.is_empty() || message.events.len() > max {
                failure = Some(invalid_argument(&meter_core::InvalidArgument::new(
                    "events",
                    format!(
                        "message {} of the stream has {} events; send 1 to {max} per message \
                         (meterd's --usage-max-events); the messages before it are recorded",
                        summary.0.batches - 1,
                        message.events.len()
                    ),
                )));
                break;
            }
            if batch.raws.len() + message.events.len() > max {
                batch.send(&mut in_flight, &self.usage);
                summary
                    .settle(&mut in_flight, STREAM_BATCHES_IN_FLIGHT - 1)
                    .await;
            }
            for event in message.events {
                let index = position;
                position += 1;
                match raw_event(event) {
                    Ok(raw) => {
                        batch.named.push((index, raw.event_id.clone()));
                        batch.raws.push(raw);
                    }
                    Err((event_id, problem)) => {
                        summary.reject(index, event_id, format!("time: {problem}"));
                    }
                }
            }
        }
        batch.send(&mut in_flight, &self.usage);
        summary.settle(&mut in_flight, 0).await;
        // A store failure first: it is the one that asks for a retry.
        // Counted whatever the answer: the batches before a failure stand.
        crate::observe::usage_events(summary.0.recorded, summary.0.duplicates, summary.0.rejected);
        if let Some(status) = summary.1.take().or(failure) {
            return Err(status);
        }
        Ok(Response::new(summary.finish()))
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
        if request.get_ref().consume {
            crate::access::may_write(&request, "CheckQuota with consume")?;
        }
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let outcome = self
            .usage
            .check_quota(who, &request.metric, request.amount, request.consume, key)
            .await
            .map_err(to_status)?;
        let decision = outcome.decision;
        if !decision.allowed {
            meter_metrics::metrics().quota_denials.inc();
        }
        match &outcome.consumed {
            Some(EventOutcome::Recorded { .. }) => crate::observe::usage_events(1, 0, 0),
            // A repeated consume is a duplicate event, counted once there.
            Some(EventOutcome::Duplicate) => crate::observe::usage_events(0, 1, 0),
            _ => {}
        }
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
