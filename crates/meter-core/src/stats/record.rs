//! The rules of an account's activity stats: which login starts a new day,
//! how streaks run, which conversations count and which stay in the recent
//! list.
//!
//! These are the reference semantics: the embedded store applies them
//! directly, the Redis scripts implement them in Lua
//! (`meter-redis/src/lua/stats/stats.lua`), and the contract suite holds
//! both to them.

use chrono::{NaiveDate, TimeZone as _};
use chrono_tz::Tz;

use crate::Timestamp;

/// One conversation, as the recent list keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The caller's id of the conversation.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its summary.
    pub summary: String,
    /// When it happened.
    pub time: Timestamp,
}

/// An account's activity stats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Conversations recorded (each id once).
    pub conversations: i64,
    /// The mood score in tenths (0..=100); `None` before any was set.
    pub mood_tenths: Option<i64>,
    /// Local days with at least one login.
    pub days_active: i64,
    /// Consecutive local days with a login, up to the last one.
    pub login_streak: i64,
    /// The longest streak so far.
    pub longest_streak: i64,
    /// The local day of the last login counted.
    pub last_login_date: Option<NaiveDate>,
    /// The newest conversations, newest first.
    pub recent: Vec<Conversation>,
}

/// What a login did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    /// True for the first login of its local day (the day was counted).
    pub first_login_today: bool,
    /// Days active after the login.
    pub days_active: i64,
    /// The streak after the login.
    pub login_streak: i64,
    /// The longest streak after the login.
    pub longest_streak: i64,
}

/// The local calendar day of `time` in `zone`.
pub fn local_day(time: Timestamp, zone: Tz) -> NaiveDate {
    zone.from_utc_datetime(&time.to_datetime().naive_utc())
        .date_naive()
}

/// The local day of `time` in `zone` and the local day before it, which is
/// not always the calendar's: a zone may skip a date (Pacific/Apia skipped
/// 2011-12-30).
pub fn local_days(time: Timestamp, zone: Tz) -> (NaiveDate, NaiveDate) {
    const HOUR: i64 = 3_600_000;
    let day = local_day(time, zone);
    // A local day lasts at most 25 hours (a skipped one, none): stepping
    // back an hour at a time reaches the day before within 26 steps.
    let before = (1..=26)
        .filter_map(|hours| Timestamp::from_millis(time.as_millis() - hours * HOUR))
        .map(|t| local_day(t, zone))
        .find(|d| *d != day)
        .or_else(|| day.pred_opt())
        .unwrap_or(day);
    (day, before)
}

impl Stats {
    /// Counts a login on the local day `day`, whose local day before (the
    /// zone's calendar may skip a date) is `before`: the first of a day adds
    /// one to `days_active` and continues the streak when the last day
    /// counted was `before` (or starts it again after a gap). A day at or
    /// before the last one counted changes nothing (logins are counted in
    /// time order).
    pub fn record_login(&mut self, day: NaiveDate, before: NaiveDate) -> LoginOutcome {
        let first = self.last_login_date.is_none_or(|last| day > last);
        if first {
            let continues = self.last_login_date == Some(before);
            self.login_streak = if continues { self.login_streak + 1 } else { 1 };
            self.days_active += 1;
            self.longest_streak = self.longest_streak.max(self.login_streak);
            self.last_login_date = Some(day);
        }
        LoginOutcome {
            first_login_today: first,
            days_active: self.days_active,
            login_streak: self.login_streak,
            longest_streak: self.longest_streak,
        }
    }

    /// Counts a conversation not seen before and keeps the newest `keep`
    /// (by time, then the later recorded first) in the recent list.
    pub fn record_conversation(&mut self, conversation: Conversation, keep: usize) {
        self.conversations += 1;
        let at = self.recent.partition_point(|c| c.time > conversation.time);
        self.recent.insert(at, conversation);
        self.recent.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Days;
    use proptest::prelude::*;

    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).expect("valid")
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().expect("valid date")
    }

    #[test]
    fn local_days_follow_the_zone() {
        let ny: Tz = "America/New_York".parse().expect("zone");
        assert_eq!(
            local_day(ts("2026-03-10T03:30:00Z"), ny),
            date("2026-03-09")
        );
        assert_eq!(
            local_day(ts("2026-03-10T04:30:00Z"), ny),
            date("2026-03-10")
        );
        assert_eq!(
            local_day(ts("2026-03-10T03:30:00Z"), Tz::UTC),
            date("2026-03-10")
        );
    }

    #[test]
    fn a_streak_continues_day_by_day_and_restarts_after_a_gap() {
        let mut stats = Stats::default();
        let start = date("2026-05-01");
        for n in 0..10 {
            let day = start.checked_add_days(Days::new(n)).expect("day");
            let before = day.pred_opt().expect("day");
            let first = stats.record_login(day, before);
            assert!(first.first_login_today);
            assert!(
                !stats.record_login(day, before).first_login_today,
                "twice a day counts once"
            );
            assert_eq!(first.login_streak, i64::try_from(n).expect("small") + 1);
        }
        let after_gap = stats.record_login(date("2026-05-13"), date("2026-05-12"));
        assert_eq!(
            (
                after_gap.days_active,
                after_gap.login_streak,
                after_gap.longest_streak
            ),
            (11, 1, 10)
        );
        let earlier = stats.record_login(date("2026-05-12"), date("2026-05-11"));
        assert!(!earlier.first_login_today, "an earlier day is not counted");
    }

    #[test]
    fn a_skipped_date_does_not_break_a_streak() {
        // Samoa moved across the date line: 2011-12-29 was followed by 2011-12-31.
        let apia: Tz = "Pacific/Apia".parse().expect("zone");
        let mut stats = Stats::default();
        for time in [
            "2011-12-28T22:00:00Z",
            "2011-12-29T22:00:00Z",
            "2011-12-30T22:00:00Z",
        ] {
            let (day, before) = local_days(ts(time), apia);
            stats.record_login(day, before);
        }
        assert_eq!(stats.last_login_date, Some(date("2011-12-31")));
        assert_eq!((stats.days_active, stats.login_streak), (3, 3));
    }

    proptest! {
        /// Every local day counts once, whatever its length (23 or 25 hours
        /// across DST): logging in every 20 minutes for weeks in a zone adds
        /// exactly the number of distinct local days, and the streak never
        /// breaks.
        #[test]
        fn every_local_day_counts_once_across_dst(
            zone in prop::sample::select(vec![
                "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata",
                "Pacific/Chatham", "America/Santiago", "UTC",
            ]),
            start_ms in 1_700_000_000_000i64..1_900_000_000_000,
        ) {
            let zone: Tz = zone.parse().expect("zone");
            let mut stats = Stats::default();
            let mut days = std::collections::BTreeSet::new();
            let step = 20 * 60 * 1000;
            for i in 0..(40 * 72) {
                let time = Timestamp::from_millis(start_ms + i * step).expect("in range");
                let (day, before) = local_days(time, zone);
                let outcome = stats.record_login(day, before);
                prop_assert_eq!(outcome.first_login_today, days.insert(day));
            }
            prop_assert_eq!(stats.days_active, i64::try_from(days.len()).expect("small"));
            prop_assert_eq!(stats.login_streak, stats.days_active);
        }
    }
}
