//! The bounds every `meter.v1` call runs within: the calls meterd works on
//! at once, shared by every service (past it a call is refused at once,
//! before any work, instead of queueing and growing memory while the store
//! is slow), and the caller's deadline.
//!
//! tonic ends a call whose `grpc-timeout` has passed with CANCELLED "Timeout
//! expired", on the server and, with its own timer, on a tonic client: that
//! tells a caller nothing about its change. A [`Bounded`] service answers a
//! tenth of the deadline earlier (at most 50 ms), so its answer arrives
//! first: DEADLINE_EXCEEDED, saying the change may have been made.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;

use crate::throttle::Throttle;
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};

/// The shared count of calls in flight and its bound.
#[derive(Clone, Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    max: usize,
}

impl InFlight {
    /// A bound of `max` calls at once (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            count: Arc::default(),
            max: max.max(1),
        }
    }

    /// Calls in flight now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// `service` with its calls counted against this bound and held to their deadlines.
    pub fn bound<S>(&self, service: S) -> Bounded<S> {
        Bounded {
            inner: service,
            in_flight: self.clone(),
        }
    }

    fn enter(&self) -> Option<Slot> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&self.count));
        // Past the bound the slot is dropped at once, taking the count back.
        (before < self.max).then_some(slot)
    }
}

/// One call's place in the count, given back when the call ends.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A gRPC service whose calls count against an [`InFlight`] bound and end by
/// their caller's deadline.
#[derive(Clone, Debug)]
pub struct Bounded<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S: NamedService> NamedService for Bounded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Bounded<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoundedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let deadline = grpc_timeout(request.headers()).map(|timeout| {
            // Early enough that the answer reaches the caller before its own
            // timer fires (see the module docs): a tenth, at most 50 ms.
            let early = (timeout / 10).min(Duration::from_millis(50));
            let at = tokio::time::Instant::now() + (timeout - early);
            request.extensions_mut().insert(GiveUpAt(at));
            Box::pin(tokio::time::sleep_until(at))
        });
        match self.in_flight.enter() {
            Some(slot) => BoundedCall::Admitted {
                call: self.inner.call(request),
                deadline,
                _slot: slot,
            },
            None => {
                meter_metrics::metrics().load_shed.inc();
                static REFUSED: Throttle = Throttle::new();
                if let Some(held_back) = REFUSED.admit() {
                    tracing::warn!(
                        max = self.in_flight.max,
                        held_back,
                        "calls in flight at the bound: call refused"
                    );
                }
                BoundedCall::Refused
            }
        }
    }
}

/// The future of a [`Bounded`] call: the service's, holding its slot, or a refusal.
#[derive(Debug)]
pub enum BoundedCall<F> {
    /// The call runs and holds its slot until it ends.
    Admitted {
        /// The service's future.
        call: F,
        /// When to give up on it: the caller's deadline, if it sent one.
        deadline: Option<Pin<Box<Sleep>>>,
        /// The call's place in the count.
        _slot: Slot,
    },
    /// The call is refused: UNAVAILABLE, nothing done.
    Refused,
}

impl<F> Future for BoundedCall<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Admitted { call, deadline, .. } => {
                if let Poll::Ready(done) = Pin::new(call).poll(cx) {
                    return Poll::Ready(done);
                }
                let passed = deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if !passed {
                    return Poll::Pending;
                }
                // Dropping the call cancels it: a command not yet sent to the
                // store never is; one that was may have been applied.
                Poll::Ready(Ok(Status::deadline_exceeded(
                    "the call's deadline passed before meterd finished it; it may or may not \
                     have been applied: retry with the same idempotency_key to apply it once \
                     or get its outcome",
                )
                .into_http()))
            }
            // UNAVAILABLE, as when the store is overloaded (see status.rs):
            // a passing state of meterd, retried with backoff.
            Self::Refused => Poll::Ready(Ok(Status::unavailable(
                "meterd is at its limit of calls in flight; this call was not started and \
                 nothing was applied: retry with backoff",
            )
            .into_http())),
        }
    }
}

/// When [`Bounded`] answers DEADLINE_EXCEEDED in a call's place unless it
/// has answered: in the request's extensions of calls with a deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GiveUpAt(pub(crate) tokio::time::Instant);

/// The caller's deadline from the `grpc-timeout` header: 1 to 8 digits and a
/// unit (`H`, `M`, `S`, `m`, `u`, `n`); `None` when absent or malformed.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        let parse = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().expect("header value"));
            grpc_timeout(&headers)
        };
        assert_eq!(parse("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1m"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn slots_are_given_back_and_the_bound_holds() {
        let in_flight = InFlight::new(2);
        let first = in_flight.enter().expect("1 of 2");
        let second = in_flight.enter().expect("2 of 2");
        assert!(in_flight.enter().is_none(), "a third call is refused");
        assert_eq!(in_flight.current(), 2, "a refusal takes no slot");
        drop(first);
        let third = in_flight.enter();
        assert!(third.is_some(), "a slot is free again");
        drop((second, third));
        assert_eq!(in_flight.current(), 0);
    }
}
