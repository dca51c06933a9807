//! The `meter` domain: one module per bounded context over a small shared
//! kernel, with the storage port of each context beside it.
//!
//! - Kernel: [`account`] (who), [`idempotency`] (retries that apply once),
//!   [`time`], [`clock`] and [`period`] (when), [`plan`] (the catalog),
//!   [`error`] (one error type every context reports), [`secret`].
//! - Contexts: [`credits`], [`subscription`] (accounts as a whole:
//!   registration, profiles, plans and billing periods, deletion),
//!   [`stats`] (activity for dashboards); usage follows the same
//!   shape (rules, commands, a port, a use-case service). Rate limiting shares
//!   nothing with accounts or plans and gets a crate of its own.
//!
//! This crate does no I/O: it must not depend on tokio, tonic or redis. Time
//! comes in through [`Clock`], so every rule is testable without sleeping.

pub mod account;
pub mod clock;
pub mod credits;
pub mod error;
pub mod idempotency;
pub mod period;
pub mod plan;
pub mod secret;
pub mod stats;
pub mod subscription;
pub mod time;
pub mod usage;

pub use account::AccountId;
pub use clock::{Clock, SystemClock};
pub use credits::{
    Allowance, Caller, Charge, CreditAccount, CreditBalance, CreditLedger, Credits, DeductCredits,
    DeductOutcome, Grant, GrantCredits, GrantKind, GrantOutcome, HistoryEntry, HistoryId,
    HistoryKind, HistoryPage, HistoryQuery, HistoryRetention, Hold, MAX_CREDITS, NewGrant,
    PlannedAllowance, Reason, ReserveCredits, ReserveOutcome, ResetCredits, ResetSchedule, ResetTo,
    SettleHold, SettleOutcome, Settlement,
};
pub use error::{InvalidArgument, MeterError, StoreError};
pub use idempotency::{Idempotency, IdempotencyKey, IdempotencyWindow, Recorded};
pub use period::CreditPeriod;
pub use plan::{BillingInterval, CatalogError, MetricKind, MetricLimit, Plan, PlanCatalog};
pub use secret::Secret;
pub use stats::{
    ActivityStats, Conversation, LoginOutcome, RecordConversation, RecordLogin, ResetStats,
    SetMood, Stats, StatsOutcome, StatsStore, StatsView,
};
pub use subscription::{
    AccountStore, AccountView, ChangeOutcome, ChangeRules, ChangeSubscription, PlanAllowance,
    Profile, ProfileFields, RegisterAccount, RegisterOutcome, StoredAccount, Subscription,
    SubscriptionChange, SubscriptionRequest, SubscriptionStatus, SubscriptionUpdate, Subscriptions,
    UpdateProfile,
};
pub use time::Timestamp;
pub use usage::{
    Bill, BillLine, BillOverflow, CheckQuota, Consumer, EventLogPage, EventOutcome, LoggedEvent,
    QuotaDecision, QuotaOutcome, RawUsageEvent, RecordUsage, Usage, UsageEvent, UsagePeriod,
    UsageRetention, UsageSettings, UsageStore, compute_bill, plan_limit, quota,
};
