//! The one mapping from domain errors to gRPC statuses.

use meter_core::{InvalidArgument, MeterError, StoreError};
use tonic::Status;

use crate::throttle::{KeyedThrottle, Throttle};

static UNAVAILABLE: Throttle = Throttle::new();
static NO_ANSWER: Throttle = Throttle::new();
static OVERLOADED: Throttle = Throttle::new();
static CORRUPT: KeyedThrottle = KeyedThrottle::new();
static PROTOCOL: Throttle = Throttle::new();

/// The status a client gets for `error`; internal details go to the log
/// only, each kind at most once a second (see `throttle.rs`).
pub fn to_status(error: MeterError) -> Status {
    match error {
        MeterError::InvalidArgument(e) => invalid_argument(&e),
        // FAILED_PRECONDITION, not INVALID_ARGUMENT: the request is valid on its
        // own; it conflicts with what this key already did. Retrying it as is
        // fails again; the caller needs a new key.
        MeterError::IdempotencyConflict { .. } => Status::failed_precondition(error.to_string()),
        MeterError::NotFound(message) => Status::not_found(message),
        MeterError::FailedPrecondition(message) => Status::failed_precondition(message),
        // The three store failures are UNAVAILABLE, not INTERNAL: each is
        // transient, and it is the code gRPC clients and retry policies retry
        // on. The messages differ in what a caller most needs to know: whether
        // the change may have been made. A retry with the same idempotency key
        // is safe in every case.
        MeterError::Store(StoreError::Unavailable(detail)) => {
            if let Some(held_back) = UNAVAILABLE.admit() {
                tracing::warn!(%detail, held_back, "store unavailable");
            }
            Status::unavailable(
                "the store cannot be reached; nothing was applied: retry with backoff \
                 (with the same idempotency_key)",
            )
        }
        MeterError::Store(StoreError::OutcomeUnknown(detail)) => {
            if let Some(held_back) = NO_ANSWER.admit() {
                tracing::warn!(%detail, held_back, "no answer from the store");
            }
            Status::unavailable(
                "the store did not answer in time; the change may or may not have been applied: \
                 retry with the same idempotency_key to apply it once or get its outcome",
            )
        }
        // UNAVAILABLE rather than RESOURCE_EXHAUSTED: the bound is meterd's,
        // not the caller's quota, it clears as soon as the store catches up,
        // and retry policies back off and retry UNAVAILABLE (often on another
        // replica). RESOURCE_EXHAUSTED stays free for quotas.
        MeterError::Store(StoreError::Overloaded(detail)) => {
            if let Some(held_back) = OVERLOADED.admit() {
                tracing::warn!(%detail, held_back, "store overloaded: call refused");
            }
            Status::unavailable(
                "meterd is overloaded (too many calls are waiting for the store); nothing was \
                 applied: retry with backoff",
            )
        }
        MeterError::Store(StoreError::Corrupt { what, key, detail }) => {
            // Throttled per key, so every corrupt key is named in the log.
            if let Some(held_back) = CORRUPT.admit(&key) {
                tracing::error!(%what, %key, %detail, held_back, "corrupt stored data");
            }
            Status::internal(format!(
                "stored data is corrupt ({what}); it was left untouched and an operator must \
                 repair it (the meterd log names the key)"
            ))
        }
        // INTERNAL: a retry as is would meet the same reply. It can come
        // after the store ran the call, so the message says so.
        MeterError::Store(StoreError::Protocol(detail)) => {
            if let Some(held_back) = PROTOCOL.admit() {
                tracing::error!(%detail, held_back, "unexpected store reply");
            }
            Status::internal(
                "unexpected reply from the store; the change may or may not have been applied: \
                 once the cause is fixed (see the meterd log), retry with the same idempotency_key",
            )
        }
    }
}

/// INVALID_ARGUMENT naming the field, e.g. `amount: is 0; it must be from 1 to …`.
pub(crate) fn invalid_argument(error: &InvalidArgument) -> Status {
    Status::invalid_argument(error.to_string())
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_error_gets_the_code_a_client_can_act_on() {
        let cases = [
            (
                MeterError::InvalidArgument(InvalidArgument::new("amount", "is 0")),
                Code::InvalidArgument,
                "amount: is 0",
            ),
            (
                MeterError::IdempotencyConflict { key: "k".into() },
                Code::FailedPrecondition,
                "\"k\"",
            ),
            (
                StoreError::Unavailable("refused secret".into()).into(),
                Code::Unavailable,
                "nothing was applied",
            ),
            (
                StoreError::OutcomeUnknown("timed out secret".into()).into(),
                Code::Unavailable,
                "may or may not have been applied",
            ),
            (
                StoreError::Overloaded("secret".into()).into(),
                Code::Unavailable,
                "overloaded",
            ),
            (
                StoreError::Corrupt {
                    what: "credits of account u".into(),
                    key: "user:{u}:secret".into(),
                    detail: "secret".into(),
                }
                .into(),
                Code::Internal,
                "stored data is corrupt (credits of account u)",
            ),
            (
                StoreError::Protocol("secret detail".into()).into(),
                Code::Internal,
                "meterd log",
            ),
        ];
        for (error, code, shown) in cases {
            let status = to_status(error);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(shown), "{}", status.message());
            assert!(
                !status.message().contains("secret"),
                "internal details and keys stay in the log: {}",
                status.message()
            );
        }
    }
}
