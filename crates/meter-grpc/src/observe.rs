//! What every call leaves behind: a request id (the caller's `x-request-id`
//! metadata when it sends a usable one, else a new one), returned in the
//! response metadata and attached to every log line of the call (a
//! `call` span with the id, the method and, once known, the token's name),
//! and the call's metrics (count by status code, latency, calls in flight).

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use meter_metrics::{CallLabels, MethodLabels, metrics};
use prost::Message;
use tonic::{
    Code,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};

/// The metadata that carries a call's request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest request id taken from a caller.
const MAX_REQUEST_ID: usize = 128;

/// The methods meterd serves, `package.Service/Method`: metrics label a
/// call by them, and any other path (a typo, a probe, an attack) as
/// `unknown`, so a caller cannot grow the number of series. The names are
/// kept for the life of the process (a few dozen), so labelling a call
/// allocates nothing.
#[derive(Debug, Default)]
pub struct KnownMethods(HashMap<String, MethodLabels>);

impl KnownMethods {
    /// Every method of the services the encoded descriptor `sets` describe.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut known = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name: &'static str =
                        format!("{package}.{}", service.name.unwrap_or_default()).leak();
                    for method in service.method {
                        let method_name: &'static str = method.name.unwrap_or_default().leak();
                        known.insert(
                            format!("{service_name}/{method_name}"),
                            MethodLabels {
                                service: service_name,
                                method: method_name,
                            },
                        );
                    }
                }
            }
        }
        Self(known)
    }

    /// Whether some service has a method named `method`.
    pub fn has_method(&self, method: &str) -> bool {
        self.0.values().any(|labels| labels.method == method)
    }

    /// The service and method labels of a request path.
    fn labels(&self, path: &str) -> MethodLabels {
        self.0
            .get(path.trim_start_matches('/'))
            .cloned()
            .unwrap_or(MethodLabels {
                service: "unknown",
                method: "unknown",
            })
    }
}

/// A gRPC service whose calls get a request id, a span and metrics.
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    known: Arc<KnownMethods>,
}

impl<S> Observed<S> {
    /// Observes `service`'s calls, labelling them by `known` methods.
    pub fn new(service: S, known: Arc<KnownMethods>) -> Self {
        Self {
            inner: service,
            known,
        }
    }
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

/// The caller's request id when usable (1 to 128 of `A-Za-z0-9._:-`, so
/// that it cannot forge a log field), else a new one.
fn request_id(headers: &http::HeaderMap) -> String {
    let sent = headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        });
    match sent {
        Some(id) => id.to_owned(),
        None => new_request_id(),
    }
}

/// A new request id: this process' random prefix and a counter, 24 hex digits.
fn new_request_id() -> String {
    static PREFIX: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let mut bytes = [0u8; 8];
        // Without the system's randomness, the time still tells processes apart.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:016x}{:08x}",
        *PREFIX,
        NEXT.fetch_add(1, Ordering::Relaxed) as u32
    )
}

/// The name of a status code, as Prometheus labels and logs show it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Takes a call off the in-flight gauge when it ends, answered or dropped.
struct InFlightMark;

impl InFlightMark {
    fn enter() -> Self {
        metrics().in_flight.inc();
        Self
    }
}

impl Drop for InFlightMark {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

impl<S, B> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ObservedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let labels = self.known.labels(request.uri().path());
        let id = request_id(request.headers());
        let span = tracing::info_span!(
            "call",
            request_id = %id,
            method = %labels.method,
            caller = tracing::field::Empty,
        );
        let give_up = request
            .extensions()
            .get::<crate::bounds::GiveUpAt>()
            .map(|at| at.0);
        let mark = InFlightMark::enter();
        // Entered while the inner services take the call, so that they can
        // record in the span (the caller's token name).
        let call = span.in_scope(|| self.inner.call(request));
        ObservedCall {
            call,
            span,
            id,
            labels,
            started: Instant::now(),
            give_up,
            finished: false,
            _mark: mark,
        }
    }
}

/// The future of an [`Observed`] call: the inner call, in its span, measured.
pub struct ObservedCall<F> {
    call: F,
    span: tracing::Span,
    id: String,
    labels: MethodLabels,
    started: Instant,
    /// When `Bounded` gives up on the call for its caller's deadline.
    give_up: Option<tokio::time::Instant>,
    /// Answered; a call dropped before counts as CANCELLED, or as
    /// DEADLINE_EXCEEDED once its deadline passed.
    finished: bool,
    _mark: InFlightMark,
}

impl<F> ObservedCall<F> {
    /// Counts the call as ended with `code`.
    fn record(&mut self, code: Code) -> std::time::Duration {
        self.finished = true;
        let elapsed = self.started.elapsed();
        let m = metrics();
        m.calls
            .get_or_create(&CallLabels {
                service: self.labels.service,
                method: self.labels.method,
                code: code_name(code),
            })
            .inc();
        m.call_seconds
            .get_or_create(&self.labels)
            .observe(elapsed.as_secs_f64());
        elapsed
    }
}

impl<F> Drop for ObservedCall<F> {
    fn drop(&mut self) {
        // Dropped unanswered: the caller went away, or its deadline passed
        // (Bounded answers DEADLINE_EXCEEDED in its place).
        if !self.finished {
            let span = self.span.clone();
            let _entered = span.enter();
            if std::thread::panicking() {
                self.record(Code::Internal);
                tracing::error!("the call's handler panicked");
            } else if self
                .give_up
                .is_some_and(|at| tokio::time::Instant::now() >= at)
            {
                self.record(Code::DeadlineExceeded);
                tracing::debug!("call given up at its deadline");
            } else {
                self.record(Code::Cancelled);
                tracing::debug!("call dropped before its answer");
            }
        }
    }
}

impl<F> std::fmt::Debug for ObservedCall<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedCall")
            .field("id", &self.id)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl<F> Future for ObservedCall<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let span = this.span.clone();
        let _entered = span.enter();
        let Poll::Ready(Ok(mut response)) = Pin::new(&mut this.call).poll(cx) else {
            return Poll::Pending;
        };
        // An answer with a status at once carries it in its headers
        // (trailers-only); one with a body ends OK (unary calls).
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from);
        let elapsed = this.record(code);
        if let Ok(value) = http::HeaderValue::from_str(&this.id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        tracing::debug!(
            code = code_name(code),
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "call finished"
        );
        Poll::Ready(Ok(response))
    }
}

/// Counts a call answered from its idempotency record.
pub(crate) fn replayed(service: &'static str, method: &'static str) {
    metrics()
        .replays
        .get_or_create(&MethodLabels { service, method })
        .inc();
}

/// Counts rate limit decisions: `n` of `outcome`.
pub(crate) fn rate_limited(outcome: &'static str, n: u64) {
    if n > 0 {
        metrics()
            .rate_limit_checks
            .get_or_create(&meter_metrics::Outcome { outcome })
            .inc_by(n);
    }
}

/// Counts usage events by outcome.
pub(crate) fn usage_events(recorded: i64, duplicates: i64, rejected: i64) {
    for (outcome, n) in [
        ("recorded", recorded),
        ("duplicate", duplicates),
        ("rejected", rejected),
    ] {
        if let Ok(n @ 1..) = u64::try_from(n) {
            metrics()
                .usage_events
                .get_or_create(&meter_metrics::Outcome { outcome })
                .inc_by(n);
        }
    }
}

/// Counts a hold reserved, committed or released (first applications).
pub(crate) fn hold(outcome: &'static str) {
    metrics()
        .holds
        .get_or_create(&meter_metrics::Outcome { outcome })
        .inc();
}

/// Counts credits taken by a first Deduct or Commit.
pub(crate) fn credits_deducted(amount: i64) {
    metrics()
        .credits_deducted
        .inc_by(u64::try_from(amount).unwrap_or(0));
}

/// Counts credits added by a first Grant.
pub(crate) fn credits_granted(amount: i64) {
    metrics()
        .credits_granted
        .inc_by(u64::try_from(amount).unwrap_or(0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_usable_and_made_otherwise() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("req-42"));
        assert_eq!(request_id(&headers), "req-42");
        headers.insert(REQUEST_ID, http::HeaderValue::from_static("a\"b=c"));
        let made = request_id(&headers);
        assert_eq!(made.len(), 24, "{made}");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        headers.insert(
            REQUEST_ID,
            http::HeaderValue::from_str(&long).expect("ascii"),
        );
        assert_ne!(request_id(&headers), long);
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn only_known_methods_are_labels() {
        let known = KnownMethods::from_descriptor_sets(&[meter_api::FILE_DESCRIPTOR_SET]);
        let deduct = known.labels("/meter.v1.CreditsService/Deduct");
        assert_eq!(
            (deduct.service, deduct.method),
            ("meter.v1.CreditsService", "Deduct")
        );
        for path in ["/meter.v1.CreditsService/Nope", "/x.Y/Z", "/", ""] {
            assert_eq!(known.labels(path).method, "unknown", "{path}");
        }
    }
}
