//! What can go wrong, sorted by what the caller should do about it.
//!
//! Every context reports [`MeterError`], so the transport keeps one
//! exhaustive mapping from errors to status codes.

use std::borrow::Cow;

use thiserror::Error;

/// A request field that is missing or malformed; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{field}: {problem}")]
pub struct InvalidArgument {
    /// The request field at fault, as named in the API (`account_id`,
    /// `amount`, `events[3].metric`).
    pub field: Cow<'static, str>,
    /// What is wrong with it and what is accepted instead.
    pub problem: String,
}

impl InvalidArgument {
    /// A problem with `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same problem, of the field inside the repeated field `list` at `index`
    /// (`events[3].metric`).
    #[must_use]
    pub fn at(self, list: &str, index: usize) -> Self {
        Self {
            field: format!("{list}[{index}].{}", self.field).into(),
            problem: self.problem,
        }
    }
}

/// A failure of a storage adapter, sorted once so that the transport can map it.
///
/// The first three say whether the change may have been made, since that is
/// what a caller must know to retry safely.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The store could not be reached (refused, no connection in time, closed):
    /// the call was never sent, so nothing was applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The call was sent but no answer came in time, or the connection
    /// dropped: it may or may not have been applied. A retry with the same
    /// idempotency key applies it once or returns what it did.
    #[error("no answer from the store: {0}")]
    OutcomeUnknown(String),
    /// Too much work is already waiting for the store; the call was refused
    /// at once and nothing was applied.
    #[error("store overloaded: {0}")]
    Overloaded(String),
    /// Stored data does not parse; nothing was read from it or written to it.
    #[error("corrupt data at {key}: {detail}")]
    Corrupt {
        /// What the data is, for the caller: `credits of account user_42`.
        what: String,
        /// The storage key holding the bad data, for the operator's log.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store answered something this version does not understand.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

/// Why a call of any context did not complete.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MeterError {
    /// The request is malformed, or would overflow a balance; nothing was written.
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
    /// The thing the call names does not exist (e.g. a hold that expired).
    #[error("{0}")]
    NotFound(String),
    /// The account is not in a state the call needs (e.g. too many open holds).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
