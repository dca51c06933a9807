//! The history of an account's credits: one entry per change, newest first,
//! kept for a bounded count and age.

use std::{fmt, str::FromStr, time::Duration};

use crate::{InvalidArgument, Timestamp};

/// What changed a balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HistoryKind {
    /// Credits taken by `Deduct`.
    Deduct,
    /// A grant made.
    Grant,
    /// A new period started by `Reset`.
    Reset,
    /// A period that ended, reset by the next call.
    PeriodReset,
    /// What was left of a grant, gone at its expiry.
    Expire,
    /// Credits held by `Reserve`.
    Reserve,
    /// A hold settled by `Commit`: `amount` taken, the rest returned.
    Commit,
    /// A hold released by `Release`: all of it returned.
    Release,
    /// A hold past its time to live, released by the next call.
    HoldExpired,
    /// The allowance of a new plan or billing period started (a subscription
    /// change, or a scheduled fall back to the default plan).
    PlanChange,
}

impl HistoryKind {
    /// Every kind, in the order the API numbers them.
    pub const ALL: [Self; 10] = [
        Self::Deduct,
        Self::Grant,
        Self::Reset,
        Self::PeriodReset,
        Self::Expire,
        Self::Reserve,
        Self::Commit,
        Self::Release,
        Self::HoldExpired,
        Self::PlanChange,
    ];

    /// The stored name, e.g. `period_reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deduct => "deduct",
            Self::Grant => "grant",
            Self::Reset => "reset",
            Self::PeriodReset => "period_reset",
            Self::Expire => "expire",
            Self::Reserve => "reserve",
            Self::Commit => "commit",
            Self::Release => "release",
            Self::HoldExpired => "hold_expired",
            Self::PlanChange => "plan_change",
        }
    }
}

impl FromStr for HistoryKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a history kind"))
    }
}

/// One change of a balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When it happened (by the clock of the call that made it).
    pub time: Timestamp,
    /// What happened.
    pub kind: HistoryKind,
    /// The amount of the operation: credits deducted, granted, reserved,
    /// committed, released or expired; a reset's new allowance.
    pub amount: i64,
    /// How `remaining` changed: negative when credits left it.
    pub change: i64,
    /// `remaining` after the change.
    pub remaining: i64,
    /// The caller's idempotency key, empty without one.
    pub key: String,
    /// The caller's reason, empty without one.
    pub reason: String,
    /// The grant it concerns, empty for none.
    pub grant: String,
    /// The hold it concerns, empty for none.
    pub hold: String,
}

impl HistoryEntry {
    /// An entry of `kind` at `time`, every text field empty.
    pub fn new(
        time: Timestamp,
        kind: HistoryKind,
        amount: i64,
        change: i64,
        remaining: i64,
    ) -> Self {
        Self {
            time,
            kind,
            amount,
            change,
            remaining,
            key: String::new(),
            reason: String::new(),
            grant: String::new(),
            hold: String::new(),
        }
    }
}

/// Where an entry sits in an account's history: milliseconds and a sequence
/// number, ordered, written `1767225600000-0` (a Redis stream id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryId {
    /// Milliseconds since the epoch (never less than the previous entry's).
    pub millis: u64,
    /// Order among entries of the same millisecond.
    pub seq: u64,
}

impl HistoryId {
    /// Parses a page token; `field` names it in the error.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidArgument> {
        let bad = || {
            InvalidArgument::new(
                field,
                format!(
                    "{text:?} is not a page token from ListHistory; send the next_page_token of the previous page, or nothing for the first"
                ),
            )
        };
        let (millis, seq) = text.split_once('-').ok_or_else(bad)?;
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or_else(bad)
        };
        Ok(Self {
            millis: number(millis)?,
            seq: number(seq)?,
        })
    }
}

impl fmt::Display for HistoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

/// How much history a store keeps per account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRetention {
    /// The newest this many entries are kept.
    pub max_entries: u32,
    /// Entries older than this are dropped.
    pub max_age: Duration,
}

impl HistoryRetention {
    /// Most entries an account may keep.
    pub const MAX_ENTRIES: u32 = 100_000;

    /// The retention meterd starts with: 200 entries (at most ~28 KB per
    /// account on Redis), 90 days.
    pub const DEFAULT: Self = Self {
        max_entries: 200,
        max_age: Duration::from_secs(90 * 24 * 3600),
    };

    /// A retention of `max_entries` (1..=100,000) kept at most `max_age` (1 s..=10 years).
    pub fn new(max_entries: u32, max_age: Duration) -> Result<Self, String> {
        if !(1..=Self::MAX_ENTRIES).contains(&max_entries) {
            return Err(format!(
                "history entries {max_entries} is outside 1..={}",
                Self::MAX_ENTRIES
            ));
        }
        if max_age < Duration::from_secs(1) || max_age > Duration::from_secs(3650 * 24 * 3600) {
            return Err(format!(
                "history age {max_age:?} is outside 1 s..=3650 days"
            ));
        }
        Ok(Self {
            max_entries,
            max_age,
        })
    }

    /// Milliseconds an entry is kept.
    pub fn max_age_millis(&self) -> u64 {
        u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Which page of an account's history to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Entries per page, 1..=[`HistoryQuery::MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Read entries older than this one; `None` from the newest.
    pub before: Option<HistoryId>,
}

impl HistoryQuery {
    /// The page size when the caller gives none.
    pub const DEFAULT_PAGE_SIZE: u32 = 20;
    /// The largest page.
    pub const MAX_PAGE_SIZE: u32 = 500;

    /// A checked query: a `page_size` of 0 means the default; the token as
    /// the previous page gave it, empty for the first page.
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, InvalidArgument> {
        let page_size = match u32::try_from(page_size) {
            Ok(0) => Self::DEFAULT_PAGE_SIZE,
            Ok(n) if n <= Self::MAX_PAGE_SIZE => n,
            _ => {
                return Err(InvalidArgument::new(
                    "page_size",
                    format!(
                        "is {page_size}; it must be from 1 to {} (0 means {})",
                        Self::MAX_PAGE_SIZE,
                        Self::DEFAULT_PAGE_SIZE
                    ),
                ));
            }
        };
        let before = (!page_token.is_empty())
            .then(|| HistoryId::parse("page_token", page_token))
            .transpose()?;
        Ok(Self { page_size, before })
    }
}

/// One page of history, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The entries with their ids, newest first.
    pub entries: Vec<(HistoryId, HistoryEntry)>,
    /// The token of the next (older) page; `None` on the last page.
    pub next: Option<HistoryId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let id = HistoryId {
            millis: 1_767_225_600_000,
            seq: 3,
        };
        assert_eq!(HistoryId::parse("page_token", &id.to_string()), Ok(id));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1767225600000",
            "+1-0",
            " 1-0",
        ] {
            let err = HistoryId::parse("page_token", bad).expect_err(bad);
            assert_eq!(err.field, "page_token");
        }
    }

    #[test]
    fn page_sizes_default_and_stay_in_range() {
        assert_eq!(
            HistoryQuery::parse(0, "").map(|q| q.page_size),
            Ok(HistoryQuery::DEFAULT_PAGE_SIZE)
        );
        for bad in [-1, 501, i32::MIN] {
            assert_eq!(
                HistoryQuery::parse(bad, "").map_err(|e| e.field.into_owned()),
                Err("page_size".to_owned())
            );
        }
    }
}
