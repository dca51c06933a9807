//! The one mapping from domain errors to gRPC statuses.

use meter_core::{CreditError, InvalidArgument, StoreError};
use tonic::Status;

/// The status a client gets for `error`; internal details go to the log only.
pub fn to_status(error: CreditError) -> Status {
    match error {
        CreditError::InvalidArgument(e) => invalid_argument(&e),
        // FAILED_PRECONDITION, not INVALID_ARGUMENT: the request is valid on its
        // own; it conflicts with what this key already did. Retrying it as is
        // fails again; the caller needs a new key.
        CreditError::IdempotencyConflict { .. } => Status::failed_precondition(error.to_string()),
        // UNAVAILABLE, not INTERNAL: the condition is transient, and it is the
        // code gRPC clients and retry policies retry on. A retry is safe with
        // the same idempotency key even if a timed-out call did apply.
        CreditError::Store(StoreError::Unavailable(detail)) => {
            tracing::warn!(%detail, "store unavailable");
            Status::unavailable(
                "the store is unavailable; retry with backoff and the same idempotency_key",
            )
        }
        CreditError::Store(StoreError::Corrupt { key, detail }) => {
            tracing::error!(%key, %detail, "corrupt stored data");
            Status::internal(format!(
                "stored data at {key} is corrupt; an operator must repair it"
            ))
        }
        CreditError::Store(StoreError::Protocol(detail)) => {
            tracing::error!(%detail, "unexpected store reply");
            Status::internal("unexpected reply from the store; see the meterd log")
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
                CreditError::InvalidArgument(InvalidArgument::new("amount", "is 0")),
                Code::InvalidArgument,
                "amount: is 0",
            ),
            (
                CreditError::IdempotencyConflict { key: "k".into() },
                Code::FailedPrecondition,
                "\"k\"",
            ),
            (
                StoreError::Unavailable("refused".into()).into(),
                Code::Unavailable,
                "retry",
            ),
            (
                StoreError::Corrupt {
                    key: "user:{u}:credits".into(),
                    detail: "x".into(),
                }
                .into(),
                Code::Internal,
                "user:{u}:credits",
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
                "internal details stay in the log"
            );
        }
    }
}
