//! `meter.v1.RateLimitService` and Envoy's
//! `envoy.service.ratelimit.v3.RateLimitService`, over one [`RateLimiter`].

use std::{sync::Arc, time::Duration};

use meter_api::{
    envoy::{
        config::core::v3::HeaderValue,
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse,
            rate_limit_response::{self, DescriptorStatus, rate_limit::Unit as ResponseUnit},
            rate_limit_service_server::RateLimitService as EnvoyRateLimitService,
        },
        r#type::v3::RateLimitUnit,
    },
    v1::{
        CheckRateLimitRequest, CheckRateLimitResponse, RateLimitAlgorithm, RateLimitFailMode,
        rate_limit_service_server::RateLimitService,
    },
};
use meter_core::{InvalidArgument, MeterError};
use meter_ratelimit::{
    Algorithm, CheckRequest, Descriptor, FailMode, RateLimitStore, RateLimiter, Unit, VerdictCode,
    service::EnvoyVerdict,
};
use tonic::{Request, Response, Status};

use crate::status::{invalid_argument, to_status};

/// `meter.v1.RateLimitService` over a [`RateLimiter`].
#[derive(Debug)]
pub struct RateLimitGrpc<S> {
    limiter: Arc<RateLimiter<S>>,
}

impl<S> RateLimitGrpc<S> {
    /// Serves `limiter`.
    pub fn new(limiter: Arc<RateLimiter<S>>) -> Self {
        Self { limiter }
    }
}

/// Envoy's rate limit service over a [`RateLimiter`].
#[derive(Debug)]
pub struct EnvoyRateLimitGrpc<S> {
    limiter: Arc<RateLimiter<S>>,
}

impl<S> EnvoyRateLimitGrpc<S> {
    /// Serves `limiter`.
    pub fn new(limiter: Arc<RateLimiter<S>>) -> Self {
        Self { limiter }
    }
}

/// The status of a failed check: store failures say what happened to the
/// count and what the caller can do (a check has no idempotency key).
fn rate_limit_status(error: MeterError) -> Status {
    let message = match &error {
        MeterError::Store(
            meter_core::StoreError::Corrupt { .. } | meter_core::StoreError::Protocol(_),
        ) => Some(
            "the rate limit store answered what meterd cannot read; the check may have been \
             counted (the meterd log says more)",
        ),
        MeterError::Store(meter_core::StoreError::OutcomeUnknown(_)) => Some(
            "the store did not answer in time; the check may have been counted: retry with \
             backoff (a retry may count it twice), or use fail mode OPEN to admit while the \
             store is unreachable",
        ),
        MeterError::Store(_) => Some(
            "the rate limit store cannot be reached; the check was not counted (on Redis \
             Cluster, descriptors in other slots may have been): retry with backoff, or use \
             fail mode OPEN to admit while the store is unreachable",
        ),
        _ => None,
    };
    // to_status logs the store's details; the message is the rate limiter's.
    let status = to_status(error);
    match message {
        Some(message) => Status::new(status.code(), message),
        None => status,
    }
}

fn to_proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

fn algorithm_of(algorithm: RateLimitAlgorithm) -> Option<Algorithm> {
    match algorithm {
        RateLimitAlgorithm::Unspecified => None,
        RateLimitAlgorithm::SlidingWindow => Some(Algorithm::SlidingWindow),
        RateLimitAlgorithm::FixedWindow => Some(Algorithm::FixedWindow),
        RateLimitAlgorithm::TokenBucket => Some(Algorithm::TokenBucket),
    }
}

fn algorithm_message(algorithm: Algorithm) -> RateLimitAlgorithm {
    match algorithm {
        Algorithm::SlidingWindow => RateLimitAlgorithm::SlidingWindow,
        Algorithm::FixedWindow => RateLimitAlgorithm::FixedWindow,
        Algorithm::TokenBucket => RateLimitAlgorithm::TokenBucket,
    }
}

/// The check request of a CheckRateLimit message, or INVALID_ARGUMENT.
fn check_request(request: CheckRateLimitRequest) -> Result<CheckRequest, InvalidArgument> {
    let algorithm = RateLimitAlgorithm::try_from(request.algorithm)
        .map_err(|_| InvalidArgument::new("algorithm", "is not a known RateLimitAlgorithm"))?;
    let fail = match RateLimitFailMode::try_from(request.fail_mode) {
        Ok(RateLimitFailMode::Unspecified) => None,
        Ok(RateLimitFailMode::Closed) => Some(FailMode::Closed),
        Ok(RateLimitFailMode::Open) => Some(FailMode::Open),
        Err(_) => {
            return Err(InvalidArgument::new(
                "fail_mode",
                "is not a known RateLimitFailMode",
            ));
        }
    };
    let window = match request.window {
        None => None,
        Some(w) if w.seconds >= 0 && (0..1_000_000_000).contains(&w.nanos) => Some(Duration::new(
            w.seconds.unsigned_abs(),
            w.nanos.unsigned_abs(),
        )),
        Some(_) => {
            return Err(InvalidArgument::new(
                "window",
                "must be a positive duration",
            ));
        }
    };
    Ok(CheckRequest {
        key: request.key,
        limit: request.limit,
        window,
        cost: request.cost,
        algorithm: algorithm_of(algorithm),
        policy: request.policy,
        shadow: request.shadow,
        fail,
    })
}

#[tonic::async_trait]
impl<S: RateLimitStore> RateLimitService for RateLimitGrpc<S> {
    async fn check_rate_limit(
        &self,
        request: Request<CheckRateLimitRequest>,
    ) -> Result<Response<CheckRateLimitResponse>, Status> {
        let request = check_request(request.into_inner()).map_err(|e| invalid_argument(&e))?;
        let verdict = self
            .limiter
            .check(request)
            .await
            .map_err(rate_limit_status)?;
        crate::observe::rate_limited(
            match (verdict.failed_open, verdict.allowed, verdict.shadow_denied) {
                (true, _, _) => "failed_open",
                (false, true, true) => "shadow_denied",
                (false, true, false) => "allowed",
                (false, false, _) => "denied",
            },
            1,
        );
        Ok(Response::new(CheckRateLimitResponse {
            allowed: verdict.allowed,
            limit: verdict.limit.requests(),
            remaining: verdict.remaining,
            reset_after: Some(to_proto_duration(verdict.reset_after)),
            retry_after: Some(to_proto_duration(verdict.retry_after)),
            shadow_denied: verdict.shadow_denied,
            failed_open: verdict.failed_open,
            algorithm: algorithm_message(verdict.limit.algorithm()).into(),
            window: Some(to_proto_duration(verdict.limit.window())),
        }))
    }
}

fn unit_of(unit: i32) -> Option<Unit> {
    match RateLimitUnit::try_from(unit).ok()? {
        RateLimitUnit::Unknown => None,
        RateLimitUnit::Second => Some(Unit::Second),
        RateLimitUnit::Minute => Some(Unit::Minute),
        RateLimitUnit::Hour => Some(Unit::Hour),
        RateLimitUnit::Day => Some(Unit::Day),
        RateLimitUnit::Week => Some(Unit::Week),
        RateLimitUnit::Month => Some(Unit::Month),
        RateLimitUnit::Year => Some(Unit::Year),
    }
}

fn response_unit(unit: Option<Unit>) -> ResponseUnit {
    match unit {
        None => ResponseUnit::Unknown,
        Some(Unit::Second) => ResponseUnit::Second,
        Some(Unit::Minute) => ResponseUnit::Minute,
        Some(Unit::Hour) => ResponseUnit::Hour,
        Some(Unit::Day) => ResponseUnit::Day,
        Some(Unit::Week) => ResponseUnit::Week,
        Some(Unit::Month) => ResponseUnit::Month,
        Some(Unit::Year) => ResponseUnit::Year,
    }
}

fn code(code: VerdictCode) -> i32 {
    match code {
        VerdictCode::Ok => rate_limit_response::Code::Ok,
        VerdictCode::OverLimit => rate_limit_response::Code::OverLimit,
    }
    .into()
}

/// Whole seconds, rounded up (a client waiting that long is never early).
fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    }
}

/// The response headers of a verdict, after the IETF RateLimit header
/// fields draft as Envoy's reference service writes them: the enforced
/// limit with the least remaining (`x-ratelimit-limit: 100, 100;w=60`,
/// `x-ratelimit-remaining`, `x-ratelimit-reset` in seconds), and
/// `retry-after` when over the limit.
fn response_headers(verdict: &EnvoyVerdict) -> Vec<HeaderValue> {
    // Admitted unchecked: nothing is known about what remains.
    if verdict.failed_open {
        return Vec::new();
    }
    let tightest = verdict
        .statuses
        .iter()
        .filter(|s| s.rule.as_ref().is_some_and(|r| !r.shadow))
        .min_by_key(|s| (s.code == VerdictCode::Ok, s.remaining));
    let Some(status) = tightest else {
        return Vec::new();
    };
    let Some(rule) = &status.rule else {
        return Vec::new();
    };
    let requests = rule.limit.requests();
    let window = ceil_seconds(rule.limit.window());
    let mut headers = vec![
        header(
            "x-ratelimit-limit",
            format!("{requests}, {requests};w={window}"),
        ),
        header("x-ratelimit-remaining", status.remaining.to_string()),
        header(
            "x-ratelimit-reset",
            ceil_seconds(status.reset_after).to_string(),
        ),
    ];
    if verdict.code == VerdictCode::OverLimit {
        let retry = verdict
            .statuses
            .iter()
            .filter(|s| s.code == VerdictCode::OverLimit)
            .map(|s| ceil_seconds(s.retry_after))
            .max()
            .unwrap_or(0);
        headers.push(header("retry-after", retry.max(1).to_string()));
    }
    headers
}

#[tonic::async_trait]
impl<S: RateLimitStore> EnvoyRateLimitService for EnvoyRateLimitGrpc<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        let descriptors: Vec<Descriptor> = request
            .descriptors
            .into_iter()
            .map(|d| Descriptor {
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                limit_override: d
                    .limit
                    .map(|l| (u64::from(l.requests_per_unit), unit_of(l.unit))),
                hits_addend: d.hits_addend,
            })
            .collect();
        let verdict = self
            .limiter
            .should_rate_limit(
                &request.domain,
                &descriptors,
                u64::from(request.hits_addend),
            )
            .await
            .map_err(rate_limit_status)?;
        if verdict.failed_open {
            crate::observe::rate_limited("failed_open", 1);
        } else {
            let count = |f: fn(&&meter_ratelimit::DescriptorVerdict) -> bool| {
                verdict.statuses.iter().filter(f).count() as u64
            };
            crate::observe::rate_limited("denied", count(|s| s.code == VerdictCode::OverLimit));
            crate::observe::rate_limited("shadow_denied", count(|s| s.shadow_denied));
            crate::observe::rate_limited(
                "allowed",
                count(|s| s.rule.is_some() && s.code == VerdictCode::Ok && !s.shadow_denied),
            );
        }
        let statuses = verdict
            .statuses
            .iter()
            .map(|status| DescriptorStatus {
                code: code(status.code),
                current_limit: status
                    .rule
                    .as_ref()
                    .map(|rule| rate_limit_response::RateLimit {
                        name: rule.name.clone(),
                        requests_per_unit: u32::try_from(rule.limit.requests()).unwrap_or(u32::MAX),
                        unit: response_unit(rule.unit).into(),
                    }),
                limit_remaining: u32::try_from(status.remaining).unwrap_or(u32::MAX),
                duration_until_reset: status
                    .rule
                    .as_ref()
                    .map(|_| to_proto_duration(status.reset_after)),
            })
            .collect();
        Ok(Response::new(RateLimitResponse {
            overall_code: code(verdict.code),
            statuses,
            response_headers_to_add: response_headers(&verdict),
            request_headers_to_add: Vec::new(),
        }))
    }
}
