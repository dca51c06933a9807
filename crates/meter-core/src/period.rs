//! Billing-period math: where the k-th period after an anchor starts.
//!
//! Months are counted from the anchor, never from the previous boundary, so
//! the anchor's day survives short months: an anchor of Jan 31 gives Feb 28
//! (29 in leap years), then Mar 31. The Redis scripts implement the same
//! rules in Lua (`meter-redis/src/lua/lib/period.lua`); a test checks the two agree.

use std::{fmt, str::FromStr};

use chrono::{Datelike, Months};

use crate::Timestamp;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// How often an account's credits reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CreditPeriod {
    /// Every 24 hours from the anchor.
    Day,
    /// Every 7 days from the anchor.
    Week,
    /// Every calendar month, on the anchor's day (clamped to the month's end).
    Month,
    /// Every calendar year, on the anchor's date (Feb 29 becomes Feb 28).
    Year,
}

impl CreditPeriod {
    /// The name used in the plan catalog and the stores: `day`, `week`, `month`, `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// The start of the `k`-th period after `anchor` (`k = 0` is the anchor),
    /// or `None` past year 9999.
    pub fn boundary(self, anchor: Timestamp, k: u32) -> Option<Timestamp> {
        match self {
            Self::Day => add_days(anchor, i64::from(k)),
            Self::Week => add_days(anchor, 7 * i64::from(k)),
            Self::Month => add_months(anchor, k),
            Self::Year => add_months(anchor, k.checked_mul(12)?),
        }
    }

    /// The bounds of the period containing `now`: the last boundary at or
    /// before `now` and the first one after it. `None` if `now` is before the
    /// anchor or the next boundary is past year 9999.
    pub fn period_containing(
        self,
        anchor: Timestamp,
        now: Timestamp,
    ) -> Option<(Timestamp, Timestamp)> {
        if now < anchor {
            return None;
        }
        // Estimate k from the elapsed time, then step to the exact boundary;
        // the estimate is at most one period off.
        let elapsed = now.as_millis() - anchor.as_millis();
        let estimate = match self {
            Self::Day => elapsed / MILLIS_PER_DAY,
            Self::Week => elapsed / (7 * MILLIS_PER_DAY),
            Self::Month => months_between(anchor, now),
            Self::Year => months_between(anchor, now) / 12,
        };
        let mut k = u32::try_from(estimate.max(0)).ok()?;
        while k > 0 && self.boundary(anchor, k)? > now {
            k -= 1;
        }
        loop {
            let next = self.boundary(anchor, k + 1)?;
            if next > now {
                return Some((self.boundary(anchor, k)?, next));
            }
            k += 1;
        }
    }
}

impl fmt::Display for CreditPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CreditPeriod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(format!(
                "unknown credit period {other:?}; expected day, week, month or year"
            )),
        }
    }
}

fn add_days(anchor: Timestamp, days: i64) -> Option<Timestamp> {
    Timestamp::from_millis(
        anchor
            .as_millis()
            .checked_add(days.checked_mul(MILLIS_PER_DAY)?)?,
    )
}

fn add_months(anchor: Timestamp, months: u32) -> Option<Timestamp> {
    // chrono's checked_add_months clamps the day to the target month's end,
    // which is the billing-anchor rule.
    let datetime = anchor
        .to_datetime()
        .checked_add_months(Months::new(months))?;
    Timestamp::from_datetime(datetime)
}

/// Whole calendar months from `from` to `to`, ignoring days (an estimate).
fn months_between(from: Timestamp, to: Timestamp) -> i64 {
    let (a, b) = (from.to_datetime(), to.to_datetime());
    i64::from(b.year() - a.year()) * 12 + i64::from(b.month()) - i64::from(a.month())
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;

    fn days_in_month(year: i32, month: u32) -> Option<u32> {
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let next = first.checked_add_months(Months::new(1))?;
        u32::try_from((next - first).num_days()).ok()
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap_or_else(|| panic!("bad test timestamp {text}"))
    }

    #[test]
    fn monthly_boundaries_keep_the_anchor_day_through_short_months() {
        let anchor = ts("2026-01-31T10:00:00.000Z");
        let expected = [
            "2026-01-31T10:00:00.000Z",
            "2026-02-28T10:00:00.000Z",
            "2026-03-31T10:00:00.000Z",
            "2026-04-30T10:00:00.000Z",
            "2026-05-31T10:00:00.000Z",
        ];
        for (k, want) in expected.iter().enumerate() {
            assert_eq!(
                CreditPeriod::Month.boundary(anchor, k as u32),
                Some(ts(want)),
                "k = {k}"
            );
        }
    }

    #[test]
    fn february_has_29_days_in_leap_years() {
        let anchor = ts("2028-01-31T00:00:00.000Z");
        assert_eq!(
            CreditPeriod::Month.boundary(anchor, 1),
            Some(ts("2028-02-29T00:00:00.000Z"))
        );
        assert_eq!(
            CreditPeriod::Month.boundary(ts("2100-01-30T00:00:00.000Z"), 1),
            Some(ts("2100-02-28T00:00:00.000Z")),
            "2100 is not a leap year"
        );
        assert_eq!(
            CreditPeriod::Year.boundary(ts("2028-02-29T12:00:00.000Z"), 1),
            Some(ts("2029-02-28T12:00:00.000Z"))
        );
        assert_eq!(days_in_month(2000, 2), Some(29));
        assert_eq!(days_in_month(1900, 2), Some(28));
    }

    #[test]
    fn period_containing_finds_the_bounds_after_long_downtime() {
        let anchor = ts("2026-01-31T10:00:00.000Z");
        let now = ts("2026-07-15T00:00:00.000Z");
        assert_eq!(
            CreditPeriod::Month.period_containing(anchor, now),
            Some((
                ts("2026-06-30T10:00:00.000Z"),
                ts("2026-07-31T10:00:00.000Z")
            ))
        );
        // Exactly on a boundary, the new period has begun.
        let on = ts("2026-02-28T10:00:00.000Z");
        assert_eq!(
            CreditPeriod::Month.period_containing(anchor, on),
            Some((on, ts("2026-03-31T10:00:00.000Z")))
        );
        assert_eq!(
            CreditPeriod::Month.period_containing(anchor, ts("2026-01-01T00:00:00.000Z")),
            None
        );
    }

    #[test]
    fn daily_and_weekly_periods_are_fixed_lengths() {
        let anchor = ts("2026-03-07T08:30:00.000Z");
        assert_eq!(
            CreditPeriod::Day.period_containing(anchor, ts("2026-03-09T08:29:59.999Z")),
            Some((
                ts("2026-03-08T08:30:00.000Z"),
                ts("2026-03-09T08:30:00.000Z")
            ))
        );
        assert_eq!(
            CreditPeriod::Week.boundary(anchor, 2),
            Some(ts("2026-03-21T08:30:00.000Z"))
        );
    }

    #[test]
    fn period_names_round_trip() {
        for period in [
            CreditPeriod::Day,
            CreditPeriod::Week,
            CreditPeriod::Month,
            CreditPeriod::Year,
        ] {
            assert_eq!(period.as_str().parse(), Ok(period));
        }
        assert!("fortnight".parse::<CreditPeriod>().is_err());
    }

    proptest! {
        #[test]
        fn the_containing_period_brackets_now_and_is_made_of_boundaries(
            anchor_ms in 0i64..4_102_444_800_000,
            offset_ms in 0i64..1_000_000_000_000,
            period in prop_oneof![Just(CreditPeriod::Day), Just(CreditPeriod::Week), Just(CreditPeriod::Month), Just(CreditPeriod::Year)],
        ) {
            let anchor = Timestamp::from_millis(anchor_ms).expect("in range");
            let now = Timestamp::from_millis(anchor_ms + offset_ms).expect("in range");
            let (start, end) = period.period_containing(anchor, now).expect("in range");
            prop_assert!(start <= now && now < end);
            // Both are boundaries, adjacent ones.
            let k = (0..).find(|&k| period.boundary(anchor, k).is_none_or(|b| b >= start)).expect("found");
            prop_assert_eq!(period.boundary(anchor, k), Some(start));
            prop_assert_eq!(period.boundary(anchor, k + 1), Some(end));
        }

        #[test]
        fn a_monthly_boundary_falls_on_the_anchor_day_or_the_month_end(
            anchor_ms in 0i64..4_102_444_800_000, k in 0u32..1200,
        ) {
            let anchor = Timestamp::from_millis(anchor_ms).expect("in range");
            let boundary = CreditPeriod::Month.boundary(anchor, k).expect("in range").to_datetime();
            let anchor_dt = anchor.to_datetime();
            let last = days_in_month(boundary.year(), boundary.month()).expect("valid month");
            prop_assert_eq!(boundary.day(), anchor_dt.day().min(last));
            prop_assert_eq!(boundary.time(), anchor_dt.time());
        }
    }
}
