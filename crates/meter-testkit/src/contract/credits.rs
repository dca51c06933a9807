//! The behaviour every [`CreditLedger`] must show, run against each store by
//! [`credit_ledger_contract!`](crate::credit_ledger_contract).

use std::{future::Future, sync::Arc, time::Duration};

use meter_core::{
    AccountId, Clock, CreditLedger, CreditPeriod, DeductCredits, GrantCredits, GrantKind,
    HistoryKind, HistoryQuery, HistoryRetention, Idempotency, IdempotencyWindow, MAX_CREDITS,
    MeterError, Reason, ReserveCredits, ResetCredits, ResetTo, SettleHold, Timestamp,
};

use super::{account, deduct, key};
use crate::{FixedClock, timestamp as at};

/// The idempotency window of most contract tests.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

fn window(length: Duration) -> IdempotencyWindow {
    IdempotencyWindow::new(length).expect("a valid test window")
}

/// Runs every contract test against the ledger built by `$make`, an async
/// block that may use the [`IdempotencyWindow`] `$window` and the
/// [`HistoryRetention`] `$retention` and yields `(ledger, guard)`.
#[macro_export]
macro_rules! credit_ledger_contract {
    ($window:ident, $retention:ident => $make:expr) => {
        $crate::credit_ledger_contract!(@each $window, $retention => $make;
            an_unknown_account_has_no_balance_and_cannot_be_charged,
            grant_then_deduct_moves_total_and_used,
            deduct_never_goes_below_zero_under_contention,
            an_idempotent_replay_applies_once,
            a_declined_deduct_is_replayed_as_declined,
            reusing_a_key_with_other_arguments_is_a_conflict_and_writes_nothing,
            idempotency_keys_belong_to_one_account,
            idempotency_keys_are_forgotten_once_the_window_has_passed,
            a_due_reset_is_applied_by_the_next_mutation,
            resets_keep_the_billing_anchor_after_downtime,
            reset_starts_a_fresh_period_and_keeps_grants,
            a_grant_past_the_maximum_balance_is_refused_and_writes_nothing,
            a_pack_survives_the_period_reset_and_expires_at_its_expiry,
            deducts_draw_the_allowance_then_grants_by_earliest_expiry,
            trial_and_paid_grants_keep_their_kinds,
            concurrent_reserve_commit_release_cycles_end_exact,
            an_expired_hold_is_released_by_the_next_call,
            settling_a_hold_twice_answers_the_first_outcome,
            the_history_adds_up_to_the_balance_change_newest_first,
            the_history_is_trimmed_by_count_and_age,
            held_allowance_goes_back_only_to_the_period_it_came_from,
            a_reset_past_the_maximum_balance_with_the_grants_is_refused,
        );
    };
    (@each $window:ident, $retention:ident => $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::credits::$name(
                    |$window: ::meter_core::IdempotencyWindow,
                     $retention: ::meter_core::HistoryRetention| $make,
                )
                .await;
            }
        )*
    };
}

fn grant(who: &AccountId, amount: i64, trial: bool, idem: &str) -> GrantCredits {
    let kind = if trial {
        GrantKind::Trial
    } else {
        GrantKind::Paid
    };
    grant_of(who, amount, kind, None, idem)
}

fn grant_of(
    who: &AccountId,
    amount: i64,
    kind: GrantKind,
    expires: Option<&str>,
    idem: &str,
) -> GrantCredits {
    GrantCredits::new(
        who.clone(),
        amount,
        Reason::default(),
        kind,
        expires.map(at),
        key(idem),
        Timestamp::EPOCH,
    )
    .expect("valid grant")
}

fn reserve(who: &AccountId, amount: i64, ttl: Duration, idem: &str) -> ReserveCredits {
    ReserveCredits::new(deduct(who, amount, idem), ttl)
}

fn commit(who: &AccountId, hold: &str, amount: Option<i64>) -> SettleHold {
    SettleHold::new(who.clone(), hold, amount, Reason::default()).expect("valid settlement")
}

fn history_window() -> HistoryRetention {
    HistoryRetention::DEFAULT
}

fn reset(who: &AccountId, total: i64, period: CreditPeriod) -> ResetCredits {
    ResetCredits {
        account: who.clone(),
        to: ResetTo::Fixed { total, period },
        idempotency: None,
    }
}

const NOW: &str = "2026-03-10T12:00:00.000Z";

/// Unknown accounts read as `None`, and a deduct on one is declined without creating it.
pub async fn an_unknown_account_has_no_balance_and_cannot_be_charged<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("nobody");
    assert_eq!(
        ledger.balance(&who, at(NOW)).await.map(|b| b.last_update),
        Ok(None)
    );
    let charged = ledger
        .deduct(&deduct(&who, 1, ""), at(NOW))
        .await
        .expect("deduct answers");
    assert!(!charged.outcome.applied);
    assert_eq!(charged.outcome.balance.remaining(), 0);
    assert_eq!(
        ledger.balance(&who, at(NOW)).await.map(|b| b.last_update),
        Ok(None),
        "a declined deduct creates nothing"
    );
}

/// Grants add to the total, deducts to used, and both stamp `last_update`.
pub async fn grant_then_deduct_moves_total_and_used<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-grant");
    let granted = ledger
        .grant(&grant(&who, 100, true, ""), at(NOW))
        .await
        .expect("grant");
    assert_eq!(
        (
            granted.outcome.balance.total(),
            granted.outcome.balance.used(),
            granted.outcome.balance.trial()
        ),
        (100, 0, true)
    );
    assert_eq!(
        granted.outcome.balance.allowance.schedule, None,
        "a grant alone sets no reset schedule"
    );
    let later = at("2026-03-10T12:00:01.500Z");
    let charged = ledger
        .deduct(&deduct(&who, 30, ""), later)
        .await
        .expect("deduct");
    assert!(charged.outcome.applied && !charged.replayed);
    assert_eq!(
        (
            charged.outcome.balance.used(),
            charged.outcome.balance.remaining()
        ),
        (30, 70)
    );
    let declined = ledger
        .deduct(&deduct(&who, 71, ""), later)
        .await
        .expect("deduct");
    assert!(!declined.outcome.applied);
    let stored = ledger.balance(&who, at(NOW)).await.expect("read");
    assert_eq!(
        (stored.total(), stored.used(), stored.trial()),
        (100, 30, true)
    );
    assert_eq!(stored.last_update, Some(later));
    let paid = ledger
        .grant(&grant(&who, 5, false, ""), later)
        .await
        .expect("grant");
    assert_eq!(
        (paid.outcome.balance.total(), paid.outcome.balance.trial()),
        (105, true),
        "a paid grant does not relabel the trial credits left"
    );
}

/// 64 concurrent tasks × 100 deducts of 1 on 5,000 credits: exactly 5,000 apply.
pub async fn deduct_never_goes_below_zero_under_contention<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let ledger = Arc::new(ledger);
    let who = account("u-hot");
    ledger
        .reset(&reset(&who, 5_000, CreditPeriod::Month), at(NOW))
        .await
        .expect("reset");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (ledger, who) = (Arc::clone(&ledger), who.clone());
            tokio::spawn(async move {
                let mut applied = 0;
                for _ in 0..100 {
                    let outcome = ledger
                        .deduct(&deduct(&who, 1, ""), at(NOW))
                        .await
                        .expect("deduct");
                    assert!(outcome.outcome.balance.used() <= 5_000);
                    applied += i64::from(outcome.outcome.applied);
                }
                applied
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.expect("task");
    }
    assert_eq!(applied, 5_000);
    let stored = ledger.balance(&who, at(NOW)).await.expect("read");
    assert_eq!((stored.used(), stored.remaining()), (5_000, 0));
}

/// The same key twice applies once and answers the first outcome, marked replayed.
pub async fn an_idempotent_replay_applies_once<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-idem");
    let first = ledger
        .grant(&grant(&who, 50, false, "pack-1"), at(NOW))
        .await
        .expect("grant");
    let again = ledger
        .grant(&grant(&who, 50, false, "pack-1"), at(NOW))
        .await
        .expect("grant");
    assert!(!first.replayed && again.replayed);
    assert_eq!(again.outcome, first.outcome);
    let charge = deduct(&who, 20, "msg-1");
    let first = ledger.deduct(&charge, at(NOW)).await.expect("deduct");
    let later = at("2026-03-10T13:00:00.000Z");
    let again = ledger.deduct(&charge, later).await.expect("deduct");
    assert!(first.outcome.applied && again.replayed);
    assert_eq!(
        again.outcome, first.outcome,
        "the replay answers the first outcome"
    );
    let stored = ledger.balance(&who, at(NOW)).await.expect("read");
    assert_eq!((stored.total(), stored.used()), (50, 20));
    assert_eq!(
        stored.last_update,
        Some(at(NOW)),
        "the replay wrote nothing"
    );
}

/// A deduct declined for lack of credits is remembered as declined, even after a grant.
pub async fn a_declined_deduct_is_replayed_as_declined<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-declined");
    let charge = deduct(&who, 10, "msg-9");
    assert!(
        !ledger
            .deduct(&charge, at(NOW))
            .await
            .expect("deduct")
            .outcome
            .applied
    );
    ledger
        .grant(&grant(&who, 100, false, ""), at(NOW))
        .await
        .expect("grant");
    let again = ledger.deduct(&charge, at(NOW)).await.expect("deduct");
    assert!(again.replayed && !again.outcome.applied);
    assert_eq!(ledger.balance(&who, at(NOW)).await.expect("read").used(), 0);
}

/// A key reused with other arguments is refused, and nothing is written.
pub async fn reusing_a_key_with_other_arguments_is_a_conflict_and_writes_nothing<L, G, F, Fut>(
    make: F,
) where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-conflict");
    ledger
        .grant(&grant(&who, 100, false, ""), at(NOW))
        .await
        .expect("grant");
    ledger
        .deduct(&deduct(&who, 5, "k"), at(NOW))
        .await
        .expect("deduct");
    let before = ledger.balance(&who, at(NOW)).await.expect("read");
    let other_amount = ledger.deduct(&deduct(&who, 6, "k"), at(NOW)).await;
    assert!(
        matches!(other_amount, Err(MeterError::IdempotencyConflict { ref key }) if key == "k"),
        "{other_amount:?}"
    );
    let other_operation = ledger.grant(&grant(&who, 5, false, "k"), at(NOW)).await;
    assert!(
        matches!(other_operation, Err(MeterError::IdempotencyConflict { .. })),
        "{other_operation:?}"
    );
    assert_eq!(ledger.balance(&who, at(NOW)).await.expect("read"), before);
}

/// The same key on two accounts is two requests.
pub async fn idempotency_keys_belong_to_one_account<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let (a, b) = (account("u-a"), account("u-b"));
    let on_a = ledger
        .grant(&grant(&a, 10, false, "same"), at(NOW))
        .await
        .expect("grant");
    let on_b = ledger
        .grant(&grant(&b, 10, false, "same"), at(NOW))
        .await
        .expect("grant");
    assert!(!on_a.replayed && !on_b.replayed);
    assert_eq!(ledger.balance(&b, at(NOW)).await.expect("read").total(), 10);
}

/// A key is remembered until the window has passed by the store's clock, then
/// it is a new request again.
pub async fn idempotency_keys_are_forgotten_once_the_window_has_passed<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let hour = Duration::from_secs(3600);
    let (ledger, _guard) = make(window(hour), history_window()).await;
    let clock = FixedClock::at(NOW);
    let who = account("u-window");
    ledger
        .grant(&grant(&who, 10, false, "g"), clock.now())
        .await
        .expect("grant");
    clock.advance(hour - Duration::from_millis(1));
    let within = ledger
        .grant(&grant(&who, 10, false, "g"), clock.now())
        .await
        .expect("grant");
    assert!(
        within.replayed,
        "the last millisecond of the window replays"
    );
    clock.advance(Duration::from_millis(1));
    let after = ledger
        .grant(&grant(&who, 10, false, "g"), clock.now())
        .await
        .expect("grant");
    assert!(!after.replayed, "once the window has passed the key is new");
    assert_eq!(after.outcome.balance.total(), 20);
    let again = ledger
        .grant(&grant(&who, 10, false, "g"), clock.now())
        .await
        .expect("grant");
    assert!(
        again.replayed && again.outcome.balance.total() == 20,
        "and is remembered again"
    );
}

/// Once `reset_time` has passed, the next mutation resets `used` before applying.
pub async fn a_due_reset_is_applied_by_the_next_mutation<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-lazy");
    let start = at("2026-01-15T09:00:00.000Z");
    ledger
        .reset(&reset(&who, 100, CreditPeriod::Month), start)
        .await
        .expect("reset");
    ledger
        .deduct(&deduct(&who, 90, ""), start)
        .await
        .expect("deduct");
    // Still in the first period: only 10 remain.
    let late_january = at("2026-02-15T08:59:59.999Z");
    assert!(
        !ledger
            .deduct(&deduct(&who, 20, ""), late_january)
            .await
            .expect("deduct")
            .outcome
            .applied
    );
    let february = at("2026-02-15T09:00:00.000Z");
    let charged = ledger
        .deduct(&deduct(&who, 20, ""), february)
        .await
        .expect("deduct");
    assert!(charged.outcome.applied);
    assert_eq!(charged.outcome.balance.used(), 20);
    let stored = ledger.balance(&who, february).await.expect("read");
    assert_eq!(stored.used(), 20);
    assert_eq!(stored.reset_time(), Some(at("2026-03-15T09:00:00.000Z")));
    assert_eq!(stored.last_update, Some(february));
}

/// After months without calls, the reset lands on the anchor day, clamped in short months.
pub async fn resets_keep_the_billing_anchor_after_downtime<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-anchor");
    ledger
        .reset(
            &reset(&who, 100, CreditPeriod::Month),
            at("2028-01-31T10:00:00.000Z"),
        )
        .await
        .expect("reset");
    let first = ledger.balance(&who, at(NOW)).await.expect("read");
    assert_eq!(
        first.reset_time(),
        Some(at("2028-02-29T10:00:00.000Z")),
        "leap year"
    );
    ledger
        .deduct(&deduct(&who, 40, ""), at("2028-02-01T00:00:00.000Z"))
        .await
        .expect("deduct");
    // A grant in mid-April applies the resets of Feb 29 and Mar 31 first.
    let granted = ledger
        .grant(&grant(&who, 1, false, ""), at("2028-04-15T00:00:00.000Z"))
        .await
        .expect("grant");
    assert_eq!(
        (
            granted.outcome.balance.used(),
            granted.outcome.balance.total()
        ),
        (0, 101)
    );
    assert_eq!(
        granted.outcome.balance.reset_time(),
        Some(at("2028-04-30T10:00:00.000Z"))
    );
    let yearly = account("u-anchor-yearly");
    ledger
        .reset(
            &reset(&yearly, 5, CreditPeriod::Year),
            at("2028-02-29T00:00:00.000Z"),
        )
        .await
        .expect("reset");
    let charged = ledger
        .deduct(&deduct(&yearly, 5, ""), at("2030-03-01T00:00:00.000Z"))
        .await
        .expect("deduct");
    assert_eq!(
        charged.outcome.balance.reset_time(),
        Some(at("2031-02-28T00:00:00.000Z"))
    );
}

/// Reset sets the allowance, zeroes its use and schedules the next reset;
/// grants (trial ones too) are untouched.
pub async fn reset_starts_a_fresh_period_and_keeps_grants<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-reset");
    ledger
        .grant(&grant(&who, 100, true, ""), at(NOW))
        .await
        .expect("grant");
    ledger
        .deduct(&deduct(&who, 60, ""), at(NOW))
        .await
        .expect("deduct");
    let mut request = reset(&who, 1_000, CreditPeriod::Month);
    request.idempotency = Some(Idempotency {
        key: key("plan-change-1").expect("key"),
        fingerprint: "reset\u{1f}1000".into(),
    });
    let fresh = ledger
        .reset(&request, at(NOW))
        .await
        .expect("reset")
        .outcome;
    assert_eq!(
        (
            fresh.total(),
            fresh.used(),
            fresh.remaining(),
            fresh.trial()
        ),
        (1_100, 60, 1_040, true),
        "the trial grant and its 40 left stay"
    );
    let schedule = fresh.allowance.schedule.expect("scheduled");
    assert_eq!(
        (schedule.anchor, schedule.next_reset),
        (at(NOW), at("2026-04-10T12:00:00.000Z"))
    );
    ledger
        .deduct(&deduct(&who, 7, ""), at(NOW))
        .await
        .expect("deduct");
    let retried = ledger.reset(&request, at(NOW)).await.expect("reset");
    assert!(retried.replayed);
    assert_eq!(
        ledger
            .balance(&who, at(NOW))
            .await
            .expect("read")
            .allowance
            .used,
        7,
        "a retried reset wipes nothing"
    );
}

/// A grant that would pass [`MAX_CREDITS`] is refused naming `amount`; nothing changes.
pub async fn a_grant_past_the_maximum_balance_is_refused_and_writes_nothing<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-max");
    ledger
        .grant(&grant(&who, MAX_CREDITS - 1, false, ""), at(NOW))
        .await
        .expect("grant");
    let at_max = ledger
        .grant(&grant(&who, 1, false, ""), at(NOW))
        .await
        .expect("grant");
    assert_eq!(
        at_max.outcome.balance.total(),
        MAX_CREDITS,
        "the maximum itself is exact"
    );
    let refused = ledger.grant(&grant(&who, 1, false, "over"), at(NOW)).await;
    assert!(
        matches!(refused, Err(MeterError::InvalidArgument(ref e)) if e.field == "amount"),
        "{refused:?}"
    );
    assert_eq!(
        ledger.balance(&who, at(NOW)).await.expect("read").total(),
        MAX_CREDITS
    );
}

/// A 500-credit pack outlives the period reset (Reset 100 + pack 500 is not
/// 600 again next month) and what is left of it is gone at its expiry,
/// recorded in the history.
pub async fn a_pack_survives_the_period_reset_and_expires_at_its_expiry<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-pack");
    let start = at("2026-01-10T00:00:00.000Z");
    ledger
        .reset(&reset(&who, 100, CreditPeriod::Month), start)
        .await
        .expect("reset");
    let pack = ledger
        .grant(
            &grant_of(
                &who,
                500,
                GrantKind::Paid,
                Some("2026-03-01T00:00:00.000Z"),
                "pack-500",
            ),
            start,
        )
        .await
        .expect("grant");
    assert_eq!(
        pack.outcome.grant_id, "pack-500",
        "the idempotency key names the grant"
    );
    let charged = ledger
        .deduct(&deduct(&who, 150, ""), start)
        .await
        .expect("deduct");
    let after = &charged.outcome.balance;
    assert_eq!(
        (
            after.allowance.used,
            after.grants[0].left,
            after.remaining()
        ),
        (100, 450, 450),
        "the allowance goes first"
    );
    let february = at("2026-02-10T00:00:00.000Z");
    let next_period = ledger.balance(&who, february).await.expect("read");
    assert_eq!(
        (next_period.total(), next_period.remaining()),
        (600, 550),
        "the allowance is back; the pack is not refilled"
    );
    let march = at("2026-03-01T00:00:00.000Z");
    let expired = ledger
        .deduct(&deduct(&who, 1, ""), march)
        .await
        .expect("deduct");
    assert_eq!(
        (
            expired.outcome.balance.total(),
            expired.outcome.balance.remaining()
        ),
        (100, 99),
        "the pack's 450 expired"
    );
    assert!(expired.outcome.balance.grants.is_empty());
    let page = ledger
        .history(&who, &HistoryQuery::parse(0, "").expect("query"), march)
        .await
        .expect("history");
    let kinds: Vec<HistoryKind> = page.entries.iter().map(|(_, e)| e.kind).collect();
    assert_eq!(
        kinds,
        [
            HistoryKind::Deduct,
            HistoryKind::Expire,
            HistoryKind::PeriodReset,
            HistoryKind::Deduct,
            HistoryKind::Grant,
            HistoryKind::Reset,
        ],
        "newest first"
    );
    let expiry = &page.entries[1].1;
    assert_eq!(
        (expiry.change, expiry.grant.as_str(), expiry.time),
        (-450, "pack-500", march)
    );
}

/// The allowance first, then the grant expiring first, then the later one,
/// then the grant without expiry.
pub async fn deducts_draw_the_allowance_then_grants_by_earliest_expiry<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-order");
    let now = at(NOW);
    ledger
        .reset(&reset(&who, 10, CreditPeriod::Month), now)
        .await
        .expect("reset");
    for (amount, expires, id) in [
        (10, None, "forever"),
        (10, Some("2026-09-01T00:00:00.000Z"), "late"),
        (10, Some("2026-04-01T00:00:00.000Z"), "soon"),
    ] {
        ledger
            .grant(&grant_of(&who, amount, GrantKind::Paid, expires, id), now)
            .await
            .expect("grant");
    }
    let listed: Vec<String> = ledger
        .balance(&who, now)
        .await
        .expect("read")
        .grants
        .iter()
        .map(|g| g.id.clone())
        .collect();
    assert_eq!(
        listed,
        ["soon", "late", "forever"],
        "listed in deduct order"
    );
    let charged = ledger
        .deduct(&deduct(&who, 25, ""), now)
        .await
        .expect("deduct");
    let left: Vec<(String, i64)> = charged
        .outcome
        .balance
        .grants
        .iter()
        .map(|g| (g.id.clone(), g.left))
        .collect();
    assert_eq!(
        left,
        [("late".to_owned(), 5), ("forever".to_owned(), 10)],
        "allowance 10, soon 10, late 5; the used-up grant is no longer listed"
    );
    assert_eq!(charged.outcome.balance.allowance.used, 10);
}

/// Trial credits stay trial and paid stay paid, whatever is granted after.
pub async fn trial_and_paid_grants_keep_their_kinds<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-kinds");
    let now = at(NOW);
    ledger
        .grant(
            &grant_of(
                &who,
                20,
                GrantKind::Trial,
                Some("2026-03-24T12:00:00.000Z"),
                "trial",
            ),
            now,
        )
        .await
        .expect("grant");
    let paid = ledger
        .grant(&grant_of(&who, 1, GrantKind::Paid, None, "paid"), now)
        .await
        .expect("grant")
        .outcome
        .balance;
    let kinds: Vec<(String, GrantKind)> =
        paid.grants.iter().map(|g| (g.id.clone(), g.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("trial".to_owned(), GrantKind::Trial),
            ("paid".to_owned(), GrantKind::Paid)
        ]
    );
    assert!(paid.trial(), "trial credits remain");
    let used_up = ledger
        .deduct(&deduct(&who, 20, ""), now)
        .await
        .expect("deduct")
        .outcome
        .balance;
    assert!(!used_up.trial(), "no trial credits remain");
    assert_eq!(
        used_up.grants.iter().map(|g| g.kind).collect::<Vec<_>>(),
        [GrantKind::Paid]
    );
}

/// 64 tasks each reserve 10, then commit 3, commit 10 or release, over and
/// over on one account: totals end exact and nothing stays held.
pub async fn concurrent_reserve_commit_release_cycles_end_exact<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let ledger = Arc::new(ledger);
    let who = account("u-holds");
    let now = at(NOW);
    ledger
        .reset(&reset(&who, 300, CreditPeriod::Month), now)
        .await
        .expect("reset");
    ledger
        .grant(
            &grant_of(
                &who,
                300,
                GrantKind::Paid,
                Some("2026-12-01T00:00:00.000Z"),
                "",
            ),
            now,
        )
        .await
        .expect("grant");
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let (ledger, who) = (Arc::clone(&ledger), who.clone());
            tokio::spawn(async move {
                let mut committed = 0;
                for round in 0..10 {
                    let held = ledger
                        .reserve(&reserve(&who, 10, Duration::from_secs(60), ""), now)
                        .await
                        .expect("reserve");
                    let Some((hold, _)) = held.outcome.hold else {
                        continue;
                    };
                    let amount = match (task + round) % 3 {
                        0 => Some(3),
                        1 => Some(10),
                        _ => None,
                    };
                    let settled = ledger
                        .settle_hold(&commit(&who, &hold, amount), now)
                        .await
                        .expect("settle");
                    assert_eq!(settled.outcome.settlement.committed, amount.unwrap_or(0));
                    committed += amount.unwrap_or(0);
                }
                committed
            })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        committed += task.await.expect("task");
    }
    let end = ledger.balance(&who, now).await.expect("read");
    assert_eq!(end.held, 0);
    assert_eq!(end.remaining(), 600 - committed);
    // A grant used up is no longer live: it leaves `total` and `used` both.
    assert_eq!(end.used() + end.remaining(), end.total());
}

/// A hold past its ttl goes back by itself on the next call; committing it
/// then is NOT_FOUND.
pub async fn an_expired_hold_is_released_by_the_next_call<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-ttl");
    let clock = FixedClock::at(NOW);
    ledger
        .reset(&reset(&who, 100, CreditPeriod::Month), clock.now())
        .await
        .expect("reset");
    let held = ledger
        .reserve(
            &reserve(&who, 70, Duration::from_secs(30), "call-1"),
            clock.now(),
        )
        .await
        .expect("reserve");
    let (hold, expires) = held.outcome.hold.expect("held");
    assert_eq!(expires, at("2026-03-10T12:00:30.000Z"));
    assert_eq!(
        (held.outcome.balance.remaining(), held.outcome.balance.held),
        (30, 70)
    );
    let declined = ledger
        .reserve(&reserve(&who, 31, Duration::from_secs(30), ""), clock.now())
        .await
        .expect("reserve");
    assert_eq!(
        declined.outcome.hold, None,
        "held credits are not available"
    );
    clock.advance(Duration::from_secs(30));
    let read = ledger.balance(&who, clock.now()).await.expect("read");
    assert_eq!(
        (read.remaining(), read.held),
        (100, 0),
        "a read sees it released"
    );
    let late = ledger
        .settle_hold(&commit(&who, &hold, Some(10)), clock.now())
        .await;
    assert!(matches!(late, Err(MeterError::NotFound(_))), "{late:?}");
    ledger
        .deduct(&deduct(&who, 1, ""), clock.now())
        .await
        .expect("deduct");
    let page = ledger
        .history(
            &who,
            &HistoryQuery::parse(2, "").expect("query"),
            clock.now(),
        )
        .await
        .expect("history");
    assert_eq!(page.entries[0].1.kind, HistoryKind::Deduct);
    let (_, entry) = &page.entries[1];
    assert_eq!(
        (entry.kind, entry.change, entry.hold.as_str(), entry.time),
        (HistoryKind::HoldExpired, 70, hold.as_str(), expires)
    );
}

/// Commit twice, or release after commit: the first settlement answers,
/// replayed. A commit above the hold is INVALID_ARGUMENT and writes nothing.
pub async fn settling_a_hold_twice_answers_the_first_outcome<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-settle");
    let now = at(NOW);
    ledger
        .reset(&reset(&who, 100, CreditPeriod::Month), now)
        .await
        .expect("reset");
    let (hold, _) = ledger
        .reserve(&reserve(&who, 40, Duration::from_secs(60), ""), now)
        .await
        .expect("reserve")
        .outcome
        .hold
        .expect("held");
    let before = ledger.balance(&who, now).await.expect("read");
    let over = ledger
        .settle_hold(&commit(&who, &hold, Some(41)), now)
        .await;
    assert!(
        matches!(over, Err(MeterError::InvalidArgument(ref e)) if e.field == "amount"),
        "{over:?}"
    );
    assert_eq!(ledger.balance(&who, now).await.expect("read"), before);
    let first = ledger
        .settle_hold(&commit(&who, &hold, Some(25)), now)
        .await
        .expect("commit");
    assert!(!first.replayed);
    assert_eq!(
        (
            first.outcome.settlement.committed,
            first.outcome.settlement.returned
        ),
        (25, 15)
    );
    assert_eq!(first.outcome.balance.remaining(), 75);
    for again in [Some(40), None] {
        let repeat = ledger
            .settle_hold(&commit(&who, &hold, again), now)
            .await
            .expect("replay");
        assert!(repeat.replayed);
        assert_eq!(repeat.outcome, first.outcome);
    }
    assert_eq!(
        ledger.balance(&who, now).await.expect("read").remaining(),
        75
    );
    let unknown = ledger.settle_hold(&commit(&who, "h999", None), now).await;
    assert!(
        matches!(unknown, Err(MeterError::NotFound(_))),
        "{unknown:?}"
    );
}

/// Entries come newest first, page by page; their changes add up to the
/// change of `remaining`, each states `remaining` after it, and keys and
/// reasons are kept.
pub async fn the_history_adds_up_to_the_balance_change_newest_first<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-history");
    let clock = FixedClock::at(NOW);
    ledger
        .reset(&reset(&who, 50, CreditPeriod::Day), clock.now())
        .await
        .expect("reset");
    let reason = Reason::parse("reason", "chat: gpt-4o").expect("valid");
    let charge = DeductCredits::new(who.clone(), 7, reason, key("msg-1")).expect("valid");
    ledger.deduct(&charge, clock.now()).await.expect("deduct");
    ledger
        .grant(
            &grant_of(&who, 30, GrantKind::Promotion, None, "promo"),
            clock.now(),
        )
        .await
        .expect("grant");
    let (hold, _) = ledger
        .reserve(&reserve(&who, 60, Duration::from_secs(10), ""), clock.now())
        .await
        .expect("reserve")
        .outcome
        .hold
        .expect("held");
    ledger
        .settle_hold(&commit(&who, &hold, Some(45)), clock.now())
        .await
        .expect("commit");
    clock.advance(Duration::from_secs(24 * 3600));
    ledger
        .deduct(&deduct(&who, 1, ""), clock.now())
        .await
        .expect("deduct");
    let end = ledger.balance(&who, clock.now()).await.expect("read");
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let page = ledger
            .history(
                &who,
                &HistoryQuery::parse(3, &token).expect("query"),
                clock.now(),
            )
            .await
            .expect("history");
        assert!(page.entries.len() <= 3);
        entries.extend(page.entries);
        match page.next {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    let kinds: Vec<HistoryKind> = entries.iter().map(|(_, e)| e.kind).collect();
    assert_eq!(
        kinds,
        [
            HistoryKind::Deduct,
            HistoryKind::PeriodReset,
            HistoryKind::Commit,
            HistoryKind::Reserve,
            HistoryKind::Grant,
            HistoryKind::Deduct,
            HistoryKind::Reset,
        ]
    );
    assert!(
        entries.windows(2).all(|pair| pair[0].0 > pair[1].0),
        "ids strictly decrease"
    );
    let changes: i64 = entries.iter().map(|(_, e)| e.change).sum();
    assert_eq!(changes, end.remaining(), "from nothing to the balance now");
    for pair in entries.windows(2) {
        let (newer, older) = (&pair[0].1, &pair[1].1);
        assert_eq!(older.remaining + newer.change, newer.remaining, "{newer:?}");
    }
    let deduct = &entries[5].1;
    assert_eq!(
        (
            deduct.amount,
            deduct.change,
            deduct.key.as_str(),
            deduct.reason.as_str()
        ),
        (7, -7, "msg-1", "chat: gpt-4o")
    );
    let committed = &entries[2].1;
    assert_eq!(
        (committed.amount, committed.change, committed.hold.as_str()),
        (45, 15, hold.as_str())
    );
    assert_eq!(entries[4].1.grant, "promo");
}

/// Only the newest `max_entries` entries are kept, and none older than `max_age`.
pub async fn the_history_is_trimmed_by_count_and_age<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let retention = HistoryRetention::new(5, Duration::from_secs(3600)).expect("valid");
    let (ledger, _guard) = make(window(DAY), retention).await;
    let who = account("u-trim");
    let clock = FixedClock::at(NOW);
    ledger
        .grant(&grant(&who, 100, false, ""), clock.now())
        .await
        .expect("grant");
    for _ in 0..8 {
        clock.advance(Duration::from_secs(60));
        ledger
            .deduct(&deduct(&who, 1, ""), clock.now())
            .await
            .expect("deduct");
    }
    let all = HistoryQuery::parse(100, "").expect("query");
    let page = ledger
        .history(&who, &all, clock.now())
        .await
        .expect("history");
    assert_eq!(page.entries.len(), 5, "the newest 5");
    assert!(
        page.entries
            .iter()
            .all(|(_, e)| e.kind == HistoryKind::Deduct)
    );
    assert_eq!(page.entries[0].1.remaining, 92);
    assert_eq!(page.next, None);
    clock.advance(Duration::from_secs(3600 - 60 * 2));
    let aged = ledger
        .history(&who, &all, clock.now())
        .await
        .expect("history");
    assert_eq!(
        aged.entries.len(),
        3,
        "entries older than an hour are gone: the last three are younger"
    );
    clock.advance(Duration::from_secs(3600));
    ledger
        .deduct(&deduct(&who, 1, ""), clock.now())
        .await
        .expect("deduct");
    let fresh = ledger
        .history(&who, &all, clock.now())
        .await
        .expect("history");
    assert_eq!(fresh.entries.len(), 1);
}

/// Resets on Jan 30 and Jan 31 both end on Feb 28: a hold made in the first
/// period returns nothing to the second, though they end alike.
pub async fn held_allowance_goes_back_only_to_the_period_it_came_from<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-periods");
    ledger
        .reset(
            &reset(&who, 51, CreditPeriod::Month),
            at("2026-01-30T10:00:00.000Z"),
        )
        .await
        .expect("reset");
    let now = at("2026-01-31T10:00:00.000Z");
    let (hold, _) = ledger
        .reserve(&reserve(&who, 1, Duration::from_secs(3600), ""), now)
        .await
        .expect("reserve")
        .outcome
        .hold
        .expect("held");
    let second = ledger
        .reset(&reset(&who, 51, CreditPeriod::Month), now)
        .await
        .expect("reset")
        .outcome;
    assert_eq!(second.reset_time(), Some(at("2026-02-28T10:00:00.000Z")));
    assert!(
        ledger
            .deduct(&deduct(&who, 51, ""), now)
            .await
            .expect("deduct")
            .outcome
            .applied
    );
    let released = ledger
        .settle_hold(&commit(&who, &hold, None), now)
        .await
        .expect("release");
    assert_eq!(released.outcome.settlement.returned, 0);
    assert_eq!(released.outcome.balance.remaining(), 0, "no credit made up");
}

/// A reset whose total, with the live grants, passes [`MAX_CREDITS`] is
/// refused naming `total`, and writes nothing.
pub async fn a_reset_past_the_maximum_balance_with_the_grants_is_refused<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow, HistoryRetention) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY), history_window()).await;
    let who = account("u-reset-max");
    ledger
        .grant(&grant(&who, MAX_CREDITS - 100, false, ""), at(NOW))
        .await
        .expect("grant");
    let before = ledger.balance(&who, at(NOW)).await.expect("read");
    let refused = ledger
        .reset(&reset(&who, 101, CreditPeriod::Month), at(NOW))
        .await;
    assert!(
        matches!(refused, Err(MeterError::InvalidArgument(ref e)) if e.field == "total"),
        "{refused:?}"
    );
    assert_eq!(ledger.balance(&who, at(NOW)).await.expect("read"), before);
    let fits = ledger
        .reset(&reset(&who, 100, CreditPeriod::Month), at(NOW))
        .await
        .expect("reset");
    assert_eq!(fits.outcome.total(), MAX_CREDITS);
    let page = ledger
        .history(
            &who,
            &HistoryQuery::parse(0, "0-0").expect("query"),
            at(NOW),
        )
        .await
        .expect("a page before the first id");
    assert!(page.entries.is_empty() && page.next.is_none());
}
