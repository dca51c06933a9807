//! The stats context: per-account activity for dashboards (conversations, a
//! mood score, days active and login streaks by the user's local day, the
//! recent conversations), with the plan read from the subscription.

mod record;
mod store;

use std::{sync::Arc, time::Duration};

use chrono::NaiveDate;
use chrono_tz::Tz;

pub use record::{Conversation, LoginOutcome, Stats, local_day, local_days};
pub use store::StatsStore;

use crate::{
    AccountId, Clock, Idempotency, IdempotencyKey, InvalidArgument, MeterError, PlanCatalog,
    Recorded, StoreError, Subscription, Timestamp, account::check_token,
};

/// Longest conversation id, in characters.
pub const MAX_CONVERSATION_ID_CHARS: usize = 128;
/// Longest conversation title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest conversation summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 2_000;
/// Most recent conversations a store may be asked to keep.
pub const MAX_RECENT: usize = 100;

/// `RecordLogin`, checked.
#[derive(Clone, Debug)]
pub struct RecordLogin {
    /// The account.
    pub account: AccountId,
    /// The user's local day of the login.
    pub day: NaiveDate,
    /// The user's local day before it.
    pub before: NaiveDate,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// `RecordConversation`, checked.
#[derive(Clone, Debug)]
pub struct RecordConversation {
    /// The account.
    pub account: AccountId,
    /// The conversation.
    pub conversation: Conversation,
    /// How many recent conversations to keep.
    pub keep: usize,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// `SetMood`, checked.
#[derive(Clone, Debug)]
pub struct SetMood {
    /// The account.
    pub account: AccountId,
    /// The score in tenths, 0..=100.
    pub tenths: i64,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// `ResetStats`.
#[derive(Clone, Debug)]
pub struct ResetStats {
    /// The account.
    pub account: AccountId,
    /// Present when the caller sent an idempotency key.
    pub idempotency: Option<Idempotency>,
}

/// What a stats mutation answers: the stats after it, with the account's
/// stored subscription read in the same step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsOutcome {
    /// False for a conversation recorded before (nothing changed).
    pub counted: bool,
    /// The stats after the call.
    pub stats: Stats,
    /// The account's subscription as stored.
    pub subscription: Option<Subscription>,
}

/// An account's stats as callers see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsView {
    /// The stats.
    pub stats: Stats,
    /// The plan of the account's subscription as of now.
    pub plan: String,
}

/// The stats use cases.
#[derive(Debug)]
pub struct ActivityStats<S, C> {
    store: S,
    catalog: Arc<PlanCatalog>,
    clock: C,
    recent: usize,
    max_skew: Duration,
}

impl<S: StatsStore, C: Clock> ActivityStats<S, C> {
    /// Stats over `store`, the plan's default from `catalog`, time from `clock`.
    pub fn new(store: S, catalog: Arc<PlanCatalog>, clock: C) -> Self {
        Self {
            store,
            catalog,
            clock,
            recent: Self::DEFAULT_RECENT,
            max_skew: Self::DEFAULT_MAX_SKEW,
        }
    }

    /// Recent conversations kept unless configured.
    pub const DEFAULT_RECENT: usize = 3;
    /// How far ahead of the clock a reported time may be unless configured.
    pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);

    /// The same, keeping the newest `recent` conversations (1..=100).
    #[must_use]
    pub fn with_recent(mut self, recent: usize) -> Self {
        self.recent = recent.clamp(1, MAX_RECENT);
        self
    }

    /// The same, accepting times up to `skew` ahead of the clock.
    #[must_use]
    pub fn with_max_skew(mut self, skew: Duration) -> Self {
        self.max_skew = skew;
        self
    }

    /// The account's stats and plan.
    pub async fn get(&self, account: &AccountId) -> Result<StatsView, StoreError> {
        let now = self.clock.now();
        let (stats, subscription) = self.store.stats(account, now).await?;
        Ok(self.view(stats, subscription, now))
    }

    /// The stats with the plan of `subscription` as of `now`.
    fn view(&self, stats: Stats, subscription: Option<Subscription>, now: Timestamp) -> StatsView {
        let default = self.catalog.default_plan();
        let plan =
            subscription.map_or_else(|| default.name.clone(), |s| s.settled(now, default).plan);
        let mut stats = stats;
        // A list kept under a larger --recent-conversations shows as many as now.
        stats.recent.truncate(self.recent);
        StatsView { stats, plan }
    }

    /// The outcome of a mutation as callers see it.
    fn outcome(&self, recorded: Recorded<StatsOutcome>) -> Recorded<(bool, StatsView)> {
        let now = self.clock.now();
        recorded.map(|o| (o.counted, self.view(o.stats, o.subscription, now)))
    }

    /// Counts a login at `time` (now when `None`) on its local day in
    /// `time_zone` (an IANA name; UTC when empty).
    pub async fn record_login(
        &self,
        account: AccountId,
        time: Option<Timestamp>,
        time_zone: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<LoginOutcome>, MeterError> {
        let zone = parse_zone(time_zone)?;
        // The time as sent: a retry without one is the same request.
        let sent = time.map(|t| t.to_string()).unwrap_or_default();
        let time = self.checked_time("time", time)?;
        let (day, before) = local_days(time, zone);
        let idempotency = Idempotency::new(key, &["login", &sent, zone.name()]);
        let request = RecordLogin {
            account,
            day,
            before,
            idempotency,
        };
        self.store.record_login(&request, self.clock.now()).await
    }

    /// Counts a conversation once by its id.
    pub async fn record_conversation(
        &self,
        account: AccountId,
        conversation_id: &str,
        title: &str,
        summary: &str,
        time: Option<Timestamp>,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<(bool, StatsView)>, MeterError> {
        check_token(
            "conversation_id",
            conversation_id,
            MAX_CONVERSATION_ID_CHARS,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '-'),
            "A-Za-z0-9._:@+-",
        )?;
        check_text("title", title, MAX_TITLE_CHARS, false)?;
        check_text("summary", summary, MAX_SUMMARY_CHARS, true)?;
        let sent = time.map(|t| t.to_string()).unwrap_or_default();
        let time = self.checked_time("time", time)?;
        let idempotency = Idempotency::new(
            key,
            &["conversation", conversation_id, title, summary, &sent],
        );
        let request = RecordConversation {
            account,
            conversation: Conversation {
                id: conversation_id.to_owned(),
                title: title.to_owned(),
                summary: summary.to_owned(),
                time,
            },
            keep: self.recent,
            idempotency,
        };
        let recorded = self
            .store
            .record_conversation(&request, self.clock.now())
            .await?;
        Ok(self.outcome(recorded))
    }

    /// Sets the mood score (required): 0 to 10, one decimal kept.
    pub async fn set_mood(
        &self,
        account: AccountId,
        score: Option<f64>,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<StatsView>, MeterError> {
        let Some(score) = score else {
            return Err(InvalidArgument::new("score", "is required: a number from 0 to 10").into());
        };
        if !score.is_finite() || !(0.0..=10.0).contains(&score) {
            return Err(InvalidArgument::new(
                "score",
                format!("is {score}; it must be a number from 0 to 10"),
            )
            .into());
        }
        // In 0..=100 by the check above.
        #[allow(clippy::cast_possible_truncation)]
        let tenths = (score * 10.0).round() as i64;
        let idempotency = Idempotency::new(key, &["mood", &tenths.to_string()]);
        let request = SetMood {
            account,
            tenths,
            idempotency,
        };
        let recorded = self.store.set_mood(&request, self.clock.now()).await?;
        Ok(self.outcome(recorded).map(|(_, view)| view))
    }

    /// Starts the account's stats again from zero.
    pub async fn reset(
        &self,
        account: AccountId,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<StatsView>, MeterError> {
        let request = ResetStats {
            account,
            idempotency: Idempotency::new(key, &["reset"]),
        };
        let recorded = self.store.reset(&request, self.clock.now()).await?;
        Ok(self.outcome(recorded).map(|(_, view)| view))
    }

    /// `time`, or now; refused before 2000 (an unset timestamp sent as
    /// zero is 1970) or further ahead of the clock than the skew.
    fn checked_time(
        &self,
        field: &'static str,
        time: Option<Timestamp>,
    ) -> Result<Timestamp, InvalidArgument> {
        /// 2000-01-01T00:00:00Z.
        const EARLIEST_MILLIS: i64 = 946_684_800_000;
        let now = self.clock.now();
        let Some(time) = time else {
            return Ok(now);
        };
        if time.as_millis() < EARLIEST_MILLIS {
            return Err(InvalidArgument::new(
                field,
                format!("is {time}, before 2000; leave it unset for now"),
            ));
        }
        let skew = i64::try_from(self.max_skew.as_millis()).unwrap_or(i64::MAX);
        if time.as_millis() > now.as_millis().saturating_add(skew) {
            return Err(InvalidArgument::new(
                field,
                format!(
                    "is {time}, more than {:?} ahead of meterd's clock ({now})",
                    self.max_skew
                ),
            ));
        }
        Ok(time)
    }
}

/// Longest time zone name accepted, in characters (IANA names are shorter).
const MAX_ZONE_CHARS: usize = 64;

/// An IANA time zone, matched exactly or else ignoring case; UTC for an
/// empty name.
pub fn parse_zone(name: &str) -> Result<Tz, InvalidArgument> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    if name.len() > MAX_ZONE_CHARS {
        return Err(InvalidArgument::new(
            "time_zone",
            format!(
                "is {} characters long; IANA names are at most {MAX_ZONE_CHARS}",
                name.len()
            ),
        ));
    }
    name.parse::<Tz>()
        .ok()
        .or_else(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .find(|zone| zone.name().eq_ignore_ascii_case(name))
                .copied()
        })
        .ok_or_else(|| {
            InvalidArgument::new(
                "time_zone",
                format!(
                    "{name:?} is not an IANA time zone (e.g. America/New_York, Europe/Paris, UTC)"
                ),
            )
        })
}

/// A text of at most `max` characters without control characters
/// (newlines and tabs allowed when `multiline`).
fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    multiline: bool,
) -> Result<(), InvalidArgument> {
    let chars = text.chars().count();
    if chars > max {
        return Err(InvalidArgument::new(
            field,
            format!("is {chars} characters long; at most {max} are accepted"),
        ));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\t');
    if text.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(InvalidArgument::new(field, "contains a control character"));
    }
    Ok(())
}
