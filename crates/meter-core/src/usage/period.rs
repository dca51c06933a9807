//! Usage periods: a calendar month (`YYYY-MM`) or day (`YYYY-MM-DD`), UTC.

use std::fmt;

use chrono::{Datelike, NaiveDate};

use crate::{InvalidArgument, Timestamp};

/// A month or a day of usage, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsagePeriod {
    /// A calendar month: the first day of it.
    Month(NaiveDate),
    /// A calendar day.
    Day(NaiveDate),
}

impl UsagePeriod {
    /// The month of `time`.
    pub fn month_of(time: Timestamp) -> Self {
        let date = time.to_datetime().date_naive();
        Self::Month(date.with_day(1).unwrap_or(date))
    }

    /// The day of `time`.
    pub fn day_of(time: Timestamp) -> Self {
        Self::Day(time.to_datetime().date_naive())
    }

    /// Parses `YYYY-MM` or `YYYY-MM-DD` as the request field `field`: a real
    /// month or calendar day, nothing else (`2025-13`, `2025-02-30` and
    /// `last-month` are refused).
    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidArgument> {
        let bad = || {
            InvalidArgument::new(
                field,
                format!("{text:?} is not a month (YYYY-MM) or a day (YYYY-MM-DD)"),
            )
        };
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        let parts: Vec<&str> = text.split('-').collect();
        match parts[..] {
            [y, m] if digits(y, 4) && digits(m, 2) => {
                let date = NaiveDate::from_ymd_opt(
                    y.parse().map_err(|_| bad())?,
                    m.parse().map_err(|_| bad())?,
                    1,
                )
                .ok_or_else(bad)?;
                Ok(Self::Month(date))
            }
            [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2) => {
                let date = NaiveDate::from_ymd_opt(
                    y.parse().map_err(|_| bad())?,
                    m.parse().map_err(|_| bad())?,
                    d.parse().map_err(|_| bad())?,
                )
                .ok_or_else(bad)?;
                Ok(Self::Day(date))
            }
            _ => Err(bad()),
        }
    }

    /// The month this period is or lies in.
    pub fn month(self) -> Self {
        match self {
            Self::Month(_) => self,
            Self::Day(date) => Self::Month(date.with_day(1).unwrap_or(date)),
        }
    }

    /// When the period ends (the first instant after it), UTC.
    pub fn end(self) -> Option<Timestamp> {
        let next = match self {
            Self::Month(first) => first.checked_add_months(chrono::Months::new(1))?,
            Self::Day(date) => date.succ_opt()?,
        };
        Timestamp::from_datetime(next.and_hms_opt(0, 0, 0)?.and_utc())
    }
}

impl fmt::Display for UsagePeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Month(first) => write!(f, "{}", first.format("%Y-%m")),
            Self::Day(date) => write!(f, "{}", date.format("%Y-%m-%d")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_days_parse_and_print_back() {
        for text in ["2026-12", "2026-02-28", "2028-02-29", "1999-01"] {
            let period = UsagePeriod::parse("period", text).expect(text);
            assert_eq!(period.to_string(), text);
        }
        for bad in [
            "2025-13",
            "2025-02-30",
            "2025-00",
            "last-month",
            "2025-1",
            "2025-01-1",
            "",
            "2025",
            "2025-01-01-01",
            "+025-01",
            "2025-1a",
        ] {
            let err = UsagePeriod::parse("period", bad).expect_err(bad);
            assert_eq!(err.field, "period");
        }
    }

    #[test]
    fn a_month_ends_at_the_next_months_utc_midnight() {
        let time = Timestamp::parse("2026-12-31T23:59:59.999Z").expect("time");
        let month = UsagePeriod::month_of(time);
        assert_eq!(month.to_string(), "2026-12");
        assert_eq!(
            month.end(),
            Timestamp::parse("2027-01-01T00:00:00.000Z"),
            "rollover at UTC midnight"
        );
        assert_eq!(UsagePeriod::day_of(time).to_string(), "2026-12-31");
        assert_eq!(UsagePeriod::day_of(time).month(), month);
    }
}
