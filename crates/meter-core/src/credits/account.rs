//! The rules of an account's credits: lazy resets and expiries, the deduct
//! order, grants, holds, and the history entry of every change.
//!
//! These are the reference semantics: the embedded store applies them
//! directly, the Redis scripts implement them in Lua, and the contract suite
//! (meter-testkit) holds both to them.

use crate::{
    Allowance, CreditBalance, CreditPeriod, Grant, GrantKind, HistoryEntry, HistoryKind,
    InvalidArgument, MAX_CREDITS, MeterError, PlannedAllowance, ResetSchedule, Timestamp,
    credits::total_overflow,
};

/// Most live grants an account may hold at once.
pub const MAX_LIVE_GRANTS: usize = 100;
/// Most open holds an account may have at once.
pub const MAX_OPEN_HOLDS: usize = 1_000;

/// Credits set aside by `Reserve` until `Commit`, `Release` or its expiry,
/// and the buckets they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// `h<n>`, never reused within the account.
    pub id: String,
    /// Credits held.
    pub amount: i64,
    /// When it is released if not settled before.
    pub expires: Timestamp,
    /// Credits taken from the allowance.
    pub allowance: i64,
    /// The number of the allowance period they came from
    /// ([`CreditAccount::period`]); they go back only while it runs.
    pub period: u64,
    /// Credits taken from each grant, by grant id, in the order taken.
    pub grants: Vec<(String, i64)>,
}

/// What settling a hold did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The hold settled.
    pub hold_id: String,
    /// Credits taken for good (0 for a release).
    pub committed: i64,
    /// Credits returned to the balance; less than the rest when they went
    /// back to a grant that expired or a period that ended meanwhile.
    pub returned: i64,
    /// True for `Commit`, false for `Release`.
    pub commit: bool,
}

/// Everything an account's credits are made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreditAccount {
    /// The current period's credits.
    pub allowance: Allowance,
    /// Grants not yet used up or expired, and expired ones still partly
    /// held, in deduct order.
    pub grants: Vec<Grant>,
    /// Open holds.
    pub holds: Vec<Hold>,
    /// When the balance last changed.
    pub last_update: Option<Timestamp>,
    /// The last number given to a generated grant or hold id.
    pub seq: u64,
    /// The number of the allowance period now running: every reset, lazy
    /// or not, counts one.
    pub period: u64,
    /// An allowance that replaces this one when its time comes.
    pub planned: Option<PlannedAllowance>,
}

/// The idempotency key and reason of a call, for its history entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// The idempotency key, empty without one.
    pub key: &'a str,
    /// The reason, empty without one.
    pub reason: &'a str,
}

impl CreditAccount {
    /// Credits available now (call [`CreditAccount::settle`] first).
    pub fn remaining(&self) -> i64 {
        self.allowance.remaining() + self.grants.iter().map(|g| g.left).sum::<i64>()
    }

    /// Credits held by open holds.
    pub fn held(&self) -> i64 {
        self.holds.iter().map(|h| h.amount).sum()
    }

    /// Credits granted by the grants not expired by `now`, used or not.
    fn granted(&self, now: Timestamp) -> i64 {
        self.grants
            .iter()
            .filter(|g| !g.expired(now))
            .map(|g| g.amount)
            .sum()
    }

    /// The balance callers see (call [`CreditAccount::settle`] first).
    pub fn balance(&self, now: Timestamp) -> CreditBalance {
        CreditBalance {
            allowance: self.allowance,
            grants: self
                .grants
                .iter()
                .filter(|g| !g.expired(now) && (g.left > 0 || g.held > 0))
                .cloned()
                .collect(),
            held: self.held(),
            last_update: self.last_update,
        }
    }

    fn note(&mut self, log: &mut Vec<HistoryEntry>, time: Timestamp, kind: HistoryKind) -> usize {
        if self.last_update.is_none_or(|last| last < time) {
            self.last_update = Some(time);
        }
        log.push(HistoryEntry::new(time, kind, 0, 0, self.remaining()));
        log.len() - 1
    }

    /// Applies what fell due by `now`, in this order: a planned allowance
    /// whose time came (it starts then, the periods since counted from it),
    /// a period reset (`used` back to 0, the reset time moved past `now` by
    /// whole periods), holds past their expiry released, and the remainder
    /// of expired grants gone. Each change is logged.
    pub fn settle(&mut self, now: Timestamp, log: &mut Vec<HistoryEntry>) {
        if let Some(planned) = self.planned
            && now >= planned.at
        {
            self.planned = None;
            let before = self.remaining();
            let total = planned.total.min(MAX_CREDITS - self.granted(now));
            self.period += 1;
            self.allowance = Allowance {
                total,
                used: 0,
                schedule: planned.period.period_containing(planned.at, now).map(
                    |(_, next_reset)| ResetSchedule {
                        anchor: planned.at,
                        period: planned.period,
                        next_reset,
                    },
                ),
            };
            let at = self.note(log, planned.at, HistoryKind::PlanChange);
            log[at].amount = total;
            log[at].change = self.remaining() - before;
        }
        if let Some(schedule) = self.allowance.schedule
            && now >= schedule.next_reset
            && let Some((start, end)) = schedule.period.period_containing(schedule.anchor, now)
        {
            let change = self.allowance.used.min(self.allowance.total);
            self.allowance.used = 0;
            self.period += 1;
            self.allowance.schedule = Some(ResetSchedule {
                next_reset: end,
                ..schedule
            });
            let at = self.note(log, start, HistoryKind::PeriodReset);
            log[at].amount = self.allowance.total;
            log[at].change = change;
        }
        let mut due: Vec<Hold> = Vec::new();
        self.holds.retain(|hold| {
            let expired = hold.expires <= now;
            if expired {
                due.push(hold.clone());
            }
            !expired
        });
        // Stable: holds of the same expiry in the order they were made.
        due.sort_by_key(|h| h.expires);
        for hold in due {
            let returned = self.give_back(&hold, 0, now);
            let at = self.note(log, hold.expires, HistoryKind::HoldExpired);
            log[at].amount = hold.amount;
            log[at].change = returned;
            log[at].hold = hold.id;
        }
        let mut expired: Vec<usize> = (0..self.grants.len())
            .filter(|&i| self.grants[i].expired(now) && self.grants[i].left > 0)
            .collect();
        expired.sort_by_key(|&i| self.grants[i].expires);
        for i in expired {
            let (left, time) = (self.grants[i].left, self.grants[i].expires.unwrap_or(now));
            self.grants[i].left = 0;
            let at = self.note(log, time, HistoryKind::Expire);
            log[at].amount = left;
            log[at].change = -left;
            log[at].grant.clone_from(&self.grants[i].id);
        }
        self.grants.retain(|g| g.left > 0 || g.held > 0);
    }

    /// Takes `amount` (at most [`CreditAccount::remaining`]): the allowance
    /// first, then grants in deduct order. Held credits stay counted on their
    /// grants. Returns the allowance's part and each grant's.
    fn take(&mut self, amount: i64, hold: bool) -> (i64, Vec<(String, i64)>) {
        let from_allowance = amount.min(self.allowance.remaining());
        self.allowance.used += from_allowance;
        let mut rest = amount - from_allowance;
        let mut parts = Vec::new();
        for grant in &mut self.grants {
            if rest == 0 {
                break;
            }
            let taken = rest.min(grant.left);
            if taken > 0 {
                grant.left -= taken;
                if hold {
                    grant.held += taken;
                }
                rest -= taken;
                parts.push((grant.id.clone(), taken));
            }
        }
        self.grants.retain(|g| g.left > 0 || g.held > 0);
        (from_allowance, parts)
    }

    /// Settles `hold` (already removed from the open holds): `keep` credits
    /// stay taken, in the order they were taken, and the rest goes back
    /// where it came from, unless that grant has expired or that period has
    /// ended. Returns what went back.
    fn give_back(&mut self, hold: &Hold, keep: i64, now: Timestamp) -> i64 {
        let mut keep = keep;
        let mut returned = 0;
        let kept = keep.min(hold.allowance);
        keep -= kept;
        let back = (hold.allowance - kept).min(self.allowance.used);
        if back > 0 && self.period == hold.period {
            self.allowance.used -= back;
            returned += back;
        }
        for (id, amount) in &hold.grants {
            let kept = keep.min(*amount);
            keep -= kept;
            if let Some(grant) = self.grants.iter_mut().find(|g| &g.id == id) {
                grant.held -= amount;
                if !grant.expired(now) {
                    grant.left += amount - kept;
                    returned += amount - kept;
                }
            }
        }
        self.grants.retain(|g| g.left > 0 || g.held > 0);
        returned
    }

    /// Takes `amount` if that much remains; `false` (and no change) otherwise.
    pub fn deduct(
        &mut self,
        amount: i64,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) -> bool {
        self.settle(now, log);
        if self.remaining() < amount {
            return false;
        }
        self.take(amount, false);
        let at = self.note(log, now, HistoryKind::Deduct);
        log[at].amount = amount;
        log[at].change = -amount;
        tag(&mut log[at], caller);
        true
    }

    /// Adds a grant and returns its id: `id` (the caller's idempotency key)
    /// unless a live grant has it, else a generated one.
    pub fn grant(
        &mut self,
        grant: NewGrant<'_>,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) -> Result<String, MeterError> {
        self.settle(now, log);
        let total = self.balance(now).total();
        if total + grant.amount > MAX_CREDITS {
            return Err(total_overflow(total, grant.amount).into());
        }
        if self.grants.len() >= MAX_LIVE_GRANTS {
            return Err(MeterError::FailedPrecondition(format!(
                "the account has {MAX_LIVE_GRANTS} live grants, the most it may hold; \
                 grant more credits in one grant, or after some are used or expire"
            )));
        }
        let id = self.fresh_grant_id(grant.id);
        let made = Grant {
            id: id.clone(),
            kind: grant.kind,
            amount: grant.amount,
            left: grant.amount,
            held: 0,
            created: now,
            expires: grant.expires,
        };
        let position = self
            .grants
            .partition_point(|g| g.spend_order() <= made.spend_order());
        self.grants.insert(position, made);
        let at = self.note(log, now, HistoryKind::Grant);
        log[at].amount = grant.amount;
        log[at].change = grant.amount;
        log[at].grant.clone_from(&id);
        tag(&mut log[at], caller);
        Ok(id)
    }

    /// `wanted` if no grant has that id, else the next free `g<n>` (or
    /// `<wanted>#<n>` when something was wanted).
    fn fresh_grant_id(&mut self, wanted: &str) -> String {
        let taken = |account: &Self, id: &str| account.grants.iter().any(|g| g.id == id);
        if !wanted.is_empty() && !taken(self, wanted) {
            return wanted.to_owned();
        }
        loop {
            self.seq += 1;
            let id = if wanted.is_empty() {
                format!("g{}", self.seq)
            } else {
                format!("{wanted}#{}", self.seq)
            };
            if !taken(self, &id) {
                return id;
            }
        }
    }

    /// Starts a new period at `now` with `total` credits, none used; grants
    /// and holds stay as they are. Refuses a total that would take the
    /// balance past [`MAX_CREDITS`] with the live grants.
    pub fn reset(
        &mut self,
        total: i64,
        period: CreditPeriod,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) -> Result<(), InvalidArgument> {
        self.settle(now, log);
        let granted = self.balance(now).total() - self.allowance.total;
        if total > MAX_CREDITS - granted {
            return Err(InvalidArgument::new(
                "total",
                format!(
                    "{total} with the {granted} credits of live grants would exceed the maximum balance of {MAX_CREDITS}"
                ),
            ));
        }
        let before = self.remaining();
        self.period += 1;
        self.allowance = Allowance {
            total,
            used: 0,
            schedule: period.boundary(now, 1).map(|next_reset| ResetSchedule {
                anchor: now,
                period,
                next_reset,
            }),
        };
        let at = self.note(log, now, HistoryKind::Reset);
        log[at].amount = total;
        log[at].change = self.remaining() - before;
        tag(&mut log[at], caller);
        Ok(())
    }

    /// Starts a plan's allowance: `start.total` credits a period, none
    /// used, the periods counted from `start.at` (at most `now`), and
    /// `planned` to replace it later; grants and holds stay. A total that
    /// would take the balance past [`MAX_CREDITS`] with the live grants is
    /// capped there.
    pub fn start_allowance(
        &mut self,
        start: PlannedAllowance,
        planned: Option<PlannedAllowance>,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) {
        let PlannedAllowance {
            at: anchor,
            total,
            period,
        } = start;
        self.settle(now, log);
        let total = total.min(MAX_CREDITS - self.granted(now));
        let before = self.remaining();
        self.period += 1;
        let anchor = anchor.min(now);
        self.allowance = Allowance {
            total,
            used: 0,
            schedule: period
                .period_containing(anchor, now)
                .map(|(_, next_reset)| ResetSchedule {
                    anchor,
                    period,
                    next_reset,
                }),
        };
        self.planned = planned;
        let at = self.note(log, now, HistoryKind::PlanChange);
        log[at].amount = total;
        log[at].change = self.remaining() - before;
        tag(&mut log[at], caller);
    }

    /// Keeps the running allowance period and its schedule for a renewal:
    /// `total` credits a period from now on (capped as in
    /// [`CreditAccount::start_allowance`]), `used` and the period number
    /// kept, and `planned` to replace it later. Logs a plan change only
    /// when `remaining` changes.
    pub fn renew_allowance(
        &mut self,
        total: i64,
        planned: Option<PlannedAllowance>,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) {
        self.settle(now, log);
        let total = total.min(MAX_CREDITS - self.granted(now));
        let before = self.remaining();
        self.allowance.total = total;
        self.planned = planned;
        let change = self.remaining() - before;
        if change != 0 {
            let at = self.note(log, now, HistoryKind::PlanChange);
            log[at].amount = total;
            log[at].change = change;
            tag(&mut log[at], caller);
        }
    }

    /// Holds `amount` until `expires` if that much remains; `None` (and no
    /// change) otherwise.
    pub fn reserve(
        &mut self,
        amount: i64,
        expires: Timestamp,
        now: Timestamp,
        caller: Caller<'_>,
        log: &mut Vec<HistoryEntry>,
    ) -> Result<Option<Hold>, MeterError> {
        self.settle(now, log);
        if self.remaining() < amount {
            return Ok(None);
        }
        if self.holds.len() >= MAX_OPEN_HOLDS {
            return Err(MeterError::FailedPrecondition(format!(
                "the account has {MAX_OPEN_HOLDS} open holds, the most it may have; \
                 commit or release some first"
            )));
        }
        // Numbers are never reused, so a hold id names one hold forever.
        self.seq += 1;
        let id = format!("h{}", self.seq);
        let (allowance, grants) = self.take(amount, true);
        let hold = Hold {
            id: id.clone(),
            amount,
            expires,
            allowance,
            period: self.period,
            grants,
        };
        self.holds.push(hold.clone());
        let at = self.note(log, now, HistoryKind::Reserve);
        log[at].amount = amount;
        log[at].change = -amount;
        log[at].hold = id;
        tag(&mut log[at], caller);
        Ok(Some(hold))
    }

    /// Settles the open hold `hold_id`: takes `commit` of it for good
    /// (`None` releases it all) and returns the rest.
    pub fn settle_hold(
        &mut self,
        hold_id: &str,
        commit: Option<i64>,
        now: Timestamp,
        log: &mut Vec<HistoryEntry>,
    ) -> Result<Settlement, MeterError> {
        self.settle(now, log);
        let Some(index) = self.holds.iter().position(|h| h.id == hold_id) else {
            return Err(MeterError::NotFound(format!(
                "no open hold {hold_id:?} on this account: it was never made, or it expired \
                 and its credits went back"
            )));
        };
        let amount = self.holds[index].amount;
        if let Some(commit) = commit
            && commit > amount
        {
            return Err(InvalidArgument::new(
                "amount",
                format!("is {commit}; hold {hold_id} holds {amount}, the most it can commit"),
            )
            .into());
        }
        let hold = self.holds.remove(index);
        let committed = commit.unwrap_or(0);
        let returned = self.give_back(&hold, committed, now);
        let kind = if commit.is_some() {
            HistoryKind::Commit
        } else {
            HistoryKind::Release
        };
        let at = self.note(log, now, kind);
        log[at].amount = commit.unwrap_or(amount);
        log[at].change = returned;
        log[at].hold = hold.id;
        Ok(Settlement {
            hold_id: hold_id.to_owned(),
            committed,
            returned,
            commit: commit.is_some(),
        })
    }
}

/// A grant to make: the fields the caller chooses.
#[derive(Clone, Copy, Debug)]
pub struct NewGrant<'a> {
    /// The id wanted (the idempotency key), empty for a generated one.
    pub id: &'a str,
    /// Its kind.
    pub kind: GrantKind,
    /// Credits, 1..=MAX_CREDITS.
    pub amount: i64,
    /// When its remainder is gone; `None` never.
    pub expires: Option<Timestamp>,
}

fn tag(entry: &mut HistoryEntry, caller: Caller<'_>) {
    caller.key.clone_into(&mut entry.key);
    caller.reason.clone_into(&mut entry.reason);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap_or_else(|| panic!("bad test timestamp {text}"))
    }

    fn grant(kind: GrantKind, amount: i64, expires: Option<&str>) -> NewGrant<'static> {
        NewGrant {
            id: "",
            kind,
            amount,
            expires: expires.map(ts),
        }
    }

    fn month(total: i64, now: Timestamp) -> CreditAccount {
        let mut account = CreditAccount::default();
        account
            .reset(
                total,
                CreditPeriod::Month,
                now,
                Caller::default(),
                &mut Vec::new(),
            )
            .expect("in range");
        account
    }

    #[test]
    fn a_pack_survives_the_period_reset_and_expires_at_its_expiry() {
        let start = ts("2026-01-10T00:00:00.000Z");
        let mut account = month(100, start);
        let mut log = Vec::new();
        account
            .grant(
                grant(GrantKind::Paid, 500, Some("2026-03-01T00:00:00.000Z")),
                start,
                Caller::default(),
                &mut log,
            )
            .expect("grant");
        assert!(account.deduct(150, start, Caller::default(), &mut log));
        assert_eq!(account.remaining(), 450, "the allowance went first");
        let next = ts("2026-02-11T00:00:00.000Z");
        account.settle(next, &mut log);
        assert_eq!(
            account.remaining(),
            550,
            "the pack did not come back in full"
        );
        account.settle(ts("2026-03-01T00:00:00.000Z"), &mut log);
        assert_eq!(account.remaining(), 100, "the pack's 450 expired");
        let kinds: Vec<_> = log.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                HistoryKind::Grant,
                HistoryKind::Deduct,
                HistoryKind::PeriodReset,
                HistoryKind::Expire
            ]
        );
        assert_eq!(log[3].change, -450);
    }

    #[test]
    fn deducts_draw_the_allowance_then_the_earliest_expiry_then_grants_without_one() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = month(10, now);
        let mut log = Vec::new();
        let forever = account
            .grant(
                grant(GrantKind::Paid, 10, None),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("grant");
        let late = account
            .grant(
                grant(GrantKind::Trial, 10, Some("2026-06-01T00:00:00.000Z")),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("grant");
        let soon = account
            .grant(
                grant(GrantKind::Promotion, 10, Some("2026-02-01T00:00:00.000Z")),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("grant");
        assert!(account.deduct(25, now, Caller::default(), &mut log));
        let left: Vec<(&str, i64)> = account
            .grants
            .iter()
            .map(|g| (g.id.as_str(), g.left))
            .collect();
        assert_eq!(
            left,
            [(late.as_str(), 5), (forever.as_str(), 10)],
            "{soon} was used up"
        );
        assert_eq!(account.allowance.used, 10);
        assert!(account.balance(now).trial(), "trial credits remain");
    }

    #[test]
    fn a_hold_returns_what_it_did_not_commit_to_the_buckets_it_came_from() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = month(10, now);
        let mut log = Vec::new();
        account
            .grant(
                grant(GrantKind::Paid, 10, None),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("grant");
        let hold = account
            .reserve(
                15,
                ts("2026-01-10T00:05:00.000Z"),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("reserve")
            .expect("enough");
        assert_eq!((hold.allowance, hold.grants.len()), (10, 1));
        assert_eq!((account.remaining(), account.held()), (5, 15));
        let settled = account
            .settle_hold(&hold.id, Some(12), now, &mut log)
            .expect("commit");
        assert_eq!((settled.committed, settled.returned), (12, 3));
        assert_eq!(account.remaining(), 8, "3 went back to the grant");
        assert_eq!(account.held(), 0);
        let error = account
            .settle_hold(&hold.id, None, now, &mut log)
            .expect_err("settled");
        assert!(matches!(error, MeterError::NotFound(_)));
    }

    #[test]
    fn credits_returned_to_an_expired_grant_or_an_ended_period_are_gone() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = month(5, now);
        let mut log = Vec::new();
        account
            .grant(
                grant(GrantKind::Paid, 5, Some("2026-01-10T00:01:00.000Z")),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("grant");
        let hold = account
            .reserve(
                10,
                ts("2026-03-01T00:00:00.000Z"),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("reserve")
            .expect("enough");
        let later = ts("2026-02-11T00:00:00.000Z");
        let settled = account
            .settle_hold(&hold.id, None, later, &mut log)
            .expect("release");
        assert_eq!(settled.returned, 0);
        assert_eq!(account.remaining(), 5, "the new period's allowance only");
        assert!(
            account.grants.is_empty(),
            "the expired grant is gone once nothing holds it"
        );
    }

    #[test]
    fn held_allowance_never_returns_to_a_later_period_with_the_same_end() {
        // Resets on Jan 30 and Jan 31 both end on Feb 28 (clamped).
        let mut account = month(51, ts("2026-01-30T10:00:00.000Z"));
        let mut log = Vec::new();
        let now = ts("2026-01-31T10:00:00.000Z");
        let hold = account
            .reserve(
                1,
                ts("2026-02-01T00:00:00.000Z"),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("reserve")
            .expect("enough");
        account
            .reset(51, CreditPeriod::Month, now, Caller::default(), &mut log)
            .expect("in range");
        assert!(account.deduct(51, now, Caller::default(), &mut log));
        let settled = account
            .settle_hold(&hold.id, None, now, &mut log)
            .expect("release");
        assert_eq!((settled.returned, account.remaining()), (0, 0));
    }

    #[test]
    fn a_reset_past_the_maximum_balance_with_the_grants_is_refused() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = CreditAccount::default();
        let mut log = Vec::new();
        account
            .grant(
                grant(GrantKind::Paid, MAX_CREDITS - 100, None),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("fits");
        let error = account
            .reset(101, CreditPeriod::Month, now, Caller::default(), &mut log)
            .expect_err("too much");
        assert_eq!(error.field, "total");
        assert!(
            account
                .reset(100, CreditPeriod::Month, now, Caller::default(), &mut log)
                .is_ok()
        );
    }

    #[test]
    fn an_expired_hold_is_released_by_the_next_call() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = month(10, now);
        let mut log = Vec::new();
        let hold = account
            .reserve(
                4,
                ts("2026-01-10T00:00:30.000Z"),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("reserve")
            .expect("enough");
        account.settle(ts("2026-01-10T00:00:30.000Z"), &mut log);
        assert_eq!((account.remaining(), account.held()), (10, 0));
        let last = log.last().expect("logged");
        assert_eq!(
            (last.kind, last.change, last.hold.as_str()),
            (HistoryKind::HoldExpired, 4, hold.id.as_str())
        );
    }

    #[test]
    fn grant_ids_are_the_key_unless_taken() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = CreditAccount::default();
        let mut log = Vec::new();
        let with = |id| NewGrant {
            id,
            ..grant(GrantKind::Paid, 1, None)
        };
        assert_eq!(
            account.grant(with("pack-1"), now, Caller::default(), &mut log),
            Ok("pack-1".into())
        );
        assert_eq!(
            account.grant(with("pack-1"), now, Caller::default(), &mut log),
            Ok("pack-1#1".into())
        );
        assert_eq!(
            account.grant(with(""), now, Caller::default(), &mut log),
            Ok("g2".into())
        );
    }

    #[test]
    fn grants_past_the_maximum_balance_or_count_are_refused() {
        let now = ts("2026-01-10T00:00:00.000Z");
        let mut account = CreditAccount::default();
        let mut log = Vec::new();
        account
            .grant(
                grant(GrantKind::Paid, MAX_CREDITS, None),
                now,
                Caller::default(),
                &mut log,
            )
            .expect("fits");
        let error = account.grant(
            grant(GrantKind::Paid, 1, None),
            now,
            Caller::default(),
            &mut log,
        );
        assert!(matches!(error, Err(MeterError::InvalidArgument(ref e)) if e.field == "amount"));
        let mut account = CreditAccount::default();
        for _ in 0..MAX_LIVE_GRANTS {
            account
                .grant(
                    grant(GrantKind::Paid, 1, None),
                    now,
                    Caller::default(),
                    &mut log,
                )
                .expect("fits");
        }
        let error = account.grant(
            grant(GrantKind::Paid, 1, None),
            now,
            Caller::default(),
            &mut log,
        );
        assert!(matches!(error, Err(MeterError::FailedPrecondition(_))));
    }

    #[derive(Clone, Debug)]
    enum Step {
        Deduct(i64),
        Grant(i64, Option<i64>),
        Reserve(i64, i64),
        Commit(usize, i64),
        Release(usize),
        Wait(i64),
        Reset(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1i64..60).prop_map(Step::Deduct),
            (1i64..80, proptest::option::of(1i64..5_000_000_000))
                .prop_map(|(a, e)| Step::Grant(a, e)),
            (1i64..60, 1i64..3_000_000_000).prop_map(|(a, t)| Step::Reserve(a, t)),
            (0usize..4, 0i64..60).prop_map(|(i, c)| Step::Commit(i, c)),
            (0usize..4).prop_map(Step::Release),
            (0i64..3_000_000_000).prop_map(Step::Wait),
            (0i64..100).prop_map(Step::Reset),
        ]
    }

    proptest! {
        /// Whatever happens, `remaining` never goes below zero, held credits
        /// are exactly the open holds, and the history's changes add up to
        /// the change of `remaining`.
        #[test]
        fn the_history_adds_up_and_nothing_goes_negative(steps in proptest::collection::vec(step(), 1..60)) {
            let mut now = ts("2026-01-31T10:00:00.000Z");
            let mut account = month(50, now);
            let mut log = Vec::new();
            let start = account.remaining();
            for step in steps {
                match step {
                    Step::Deduct(n) => { account.deduct(n, now, Caller::default(), &mut log); }
                    Step::Grant(n, e) => {
                        let expires = e.and_then(|ms| Timestamp::from_millis(now.as_millis() + ms));
                        let _ = account.grant(NewGrant { id: "", kind: GrantKind::Paid, amount: n, expires }, now, Caller::default(), &mut log);
                    }
                    Step::Reserve(n, ttl) => {
                        let expires = Timestamp::from_millis(now.as_millis() + ttl).expect("in range");
                        account.reserve(n, expires, now, Caller::default(), &mut log).expect("few holds");
                    }
                    Step::Commit(i, c) => if let Some(hold) = account.holds.get(i).cloned() {
                        let _ = account.settle_hold(&hold.id, Some(c.min(hold.amount)), now, &mut log);
                    },
                    Step::Release(i) => if let Some(hold) = account.holds.get(i).cloned() {
                        let _ = account.settle_hold(&hold.id, None, now, &mut log);
                    },
                    Step::Wait(ms) => {
                        now = Timestamp::from_millis(now.as_millis() + ms).expect("in range");
                        account.settle(now, &mut log);
                    }
                    Step::Reset(total) => account.reset(total, CreditPeriod::Month, now, Caller::default(), &mut log).expect("in range"),
                }
                prop_assert!(account.remaining() >= 0);
                prop_assert!(account.allowance.used >= 0 && account.allowance.used <= account.allowance.total.max(account.allowance.used));
                let held_on_grants: i64 = account.grants.iter().map(|g| g.held).sum();
                let held_parts: i64 = account.holds.iter().flat_map(|h| h.grants.iter().map(|(_, n)| *n)).sum();
                prop_assert_eq!(held_on_grants, held_parts);
                prop_assert!(account.grants.iter().all(|g| g.left >= 0 && g.held >= 0 && g.left + g.held <= g.amount));
                let changes: i64 = log.iter().map(|e| e.change).sum();
                prop_assert_eq!(start + changes, account.remaining());
                prop_assert_eq!(log.last().map_or(start, |e| e.remaining), account.remaining());
            }
        }
    }
}
