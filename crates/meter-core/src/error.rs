//! What can go wrong, sorted by what the caller should do about it.

use thiserror::Error;

/// A request field that is missing or malformed; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{field}: {problem}")]
pub struct InvalidArgument {
    /// The request field at fault, as named in the API (`account_id`, `amount`).
    pub field: &'static str,
    /// What is wrong with it and what is accepted instead.
    pub problem: String,
}

impl InvalidArgument {
    /// A problem with `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// A failure of a storage adapter, sorted once so that the transport can map it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The store cannot be reached (refused, timed out, dropped, pool exhausted).
    /// A refused call applied nothing; a timed-out one may have: retry with
    /// the same idempotency key.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not parse; `key` names what to inspect.
    #[error("corrupt data at {key}: {detail}")]
    Corrupt {
        /// The storage key holding the bad data.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store answered something this version does not understand.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

/// Why a credits call did not complete.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CreditError {
    /// The request is malformed, or would overflow the balance; nothing was written.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),
    /// The idempotency key was already used on this account for a different request.
    #[error(
        "idempotency_key {key:?} was already used on this account with different arguments; send a new key for a new request"
    )]
    IdempotencyConflict {
        /// The reused key.
        key: String,
    },
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
