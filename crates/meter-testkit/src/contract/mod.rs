//! The store contract suite: one module per storage port, each a set of
//! async test functions and a macro that instantiates them for a store.
//!
//! Every test takes a factory that builds a fresh port (and a guard that
//! keeps its backing server alive) for a given idempotency window, and
//! drives time with a [`FixedClock`](crate::FixedClock): no test sleeps.

pub mod accounts;
pub mod credits;
