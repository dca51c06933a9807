//! The behaviour every [`CreditLedger`] must show, run against each store by
//! [`credit_ledger_contract!`](crate::credit_ledger_contract).

use std::{future::Future, sync::Arc, time::Duration};

use meter_core::{
    AccountId, Clock, CreditLedger, CreditPeriod, DeductCredits, GrantCredits, Idempotency,
    IdempotencyKey, IdempotencyWindow, MAX_CREDITS, MeterError, Reason, ResetCredits,
};

use crate::{FixedClock, timestamp as at};

/// The idempotency window of most contract tests.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

fn window(length: Duration) -> IdempotencyWindow {
    IdempotencyWindow::new(length).expect("a valid test window")
}

/// Runs every contract test against the ledger built by `$make`, an async
/// block that may use the [`IdempotencyWindow`] `$window` and yields `(ledger, guard)`.
#[macro_export]
macro_rules! credit_ledger_contract {
    ($window:ident => $make:expr) => {
        $crate::credit_ledger_contract!(@each $window => $make;
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
            reset_starts_a_fresh_period_and_clears_the_trial_flag,
            a_grant_past_the_maximum_balance_is_refused_and_writes_nothing,
        );
    };
    (@each $window:ident => $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::credits::$name(|$window: ::meter_core::IdempotencyWindow| $make).await;
            }
        )*
    };
}

fn account(name: &str) -> AccountId {
    AccountId::parse("account_id", name).expect("valid test account")
}

fn key(text: &str) -> Option<IdempotencyKey> {
    IdempotencyKey::parse_optional("idempotency_key", text).expect("valid test key")
}

fn deduct(who: &AccountId, amount: i64, idem: &str) -> DeductCredits {
    DeductCredits::new(who.clone(), amount, Reason::default(), key(idem)).expect("valid deduct")
}

fn grant(who: &AccountId, amount: i64, trial: bool, idem: &str) -> GrantCredits {
    GrantCredits::new(who.clone(), amount, Reason::default(), trial, key(idem))
        .expect("valid grant")
}

fn reset(who: &AccountId, total: i64, period: CreditPeriod) -> ResetCredits {
    ResetCredits {
        account: who.clone(),
        total,
        period,
        idempotency: None,
    }
}

const NOW: &str = "2026-03-10T12:00:00.000Z";

/// Unknown accounts read as `None`, and a deduct on one is declined without creating it.
pub async fn an_unknown_account_has_no_balance_and_cannot_be_charged<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
    let who = account("nobody");
    assert_eq!(ledger.balance(&who).await, Ok(None));
    let charged = ledger
        .deduct(&deduct(&who, 1, ""), at(NOW))
        .await
        .expect("deduct answers");
    assert!(!charged.outcome.applied);
    assert_eq!(charged.outcome.balance.remaining(), 0);
    assert_eq!(
        ledger.balance(&who).await,
        Ok(None),
        "a declined deduct creates nothing"
    );
}

/// Grants add to the total, deducts to used, and both stamp `last_update`.
pub async fn grant_then_deduct_moves_total_and_used<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
    let who = account("u-grant");
    let granted = ledger
        .grant(&grant(&who, 100, true, ""), at(NOW))
        .await
        .expect("grant");
    assert_eq!(
        (
            granted.outcome.total,
            granted.outcome.used,
            granted.outcome.trial
        ),
        (100, 0, true)
    );
    assert_eq!(
        granted.outcome.schedule, None,
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
            charged.outcome.balance.used,
            charged.outcome.balance.remaining()
        ),
        (30, 70)
    );
    let declined = ledger
        .deduct(&deduct(&who, 71, ""), later)
        .await
        .expect("deduct");
    assert!(!declined.outcome.applied);
    let stored = ledger.balance(&who).await.expect("read").expect("exists");
    assert_eq!((stored.total, stored.used, stored.trial), (100, 30, true));
    assert_eq!(stored.last_update, Some(later));
    let paid = ledger
        .grant(&grant(&who, 5, false, ""), later)
        .await
        .expect("grant");
    assert_eq!((paid.outcome.total, paid.outcome.trial), (105, false));
}

/// 64 concurrent tasks × 100 deducts of 1 on 5,000 credits: exactly 5,000 apply.
pub async fn deduct_never_goes_below_zero_under_contention<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
                    assert!(outcome.outcome.balance.used <= 5_000);
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
    let stored = ledger.balance(&who).await.expect("read").expect("exists");
    assert_eq!((stored.used, stored.remaining()), (5_000, 0));
}

/// The same key twice applies once and answers the first outcome, marked replayed.
pub async fn an_idempotent_replay_applies_once<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
    let stored = ledger.balance(&who).await.expect("read").expect("exists");
    assert_eq!((stored.total, stored.used), (50, 20));
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
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
    assert_eq!(
        ledger.balance(&who).await.expect("read").map(|b| b.used),
        Some(0)
    );
}

/// A key reused with other arguments is refused, and nothing is written.
pub async fn reusing_a_key_with_other_arguments_is_a_conflict_and_writes_nothing<L, G, F, Fut>(
    make: F,
) where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
    let who = account("u-conflict");
    ledger
        .grant(&grant(&who, 100, false, ""), at(NOW))
        .await
        .expect("grant");
    ledger
        .deduct(&deduct(&who, 5, "k"), at(NOW))
        .await
        .expect("deduct");
    let before = ledger.balance(&who).await.expect("read");
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
    assert_eq!(ledger.balance(&who).await.expect("read"), before);
}

/// The same key on two accounts is two requests.
pub async fn idempotency_keys_belong_to_one_account<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
    assert_eq!(
        ledger.balance(&b).await.expect("read").map(|b| b.total),
        Some(10)
    );
}

/// A key is remembered until the window has passed by the store's clock, then
/// it is a new request again.
pub async fn idempotency_keys_are_forgotten_once_the_window_has_passed<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let hour = Duration::from_secs(3600);
    let (ledger, _guard) = make(window(hour)).await;
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
    assert_eq!(after.outcome.total, 20);
    let again = ledger
        .grant(&grant(&who, 10, false, "g"), clock.now())
        .await
        .expect("grant");
    assert!(
        again.replayed && again.outcome.total == 20,
        "and is remembered again"
    );
}

/// Once `reset_time` has passed, the next mutation resets `used` before applying.
pub async fn a_due_reset_is_applied_by_the_next_mutation<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
    assert_eq!(charged.outcome.balance.used, 20);
    let stored = ledger.balance(&who).await.expect("read").expect("exists");
    assert_eq!(stored.used, 20);
    assert_eq!(
        stored.schedule.map(|s| s.next_reset),
        Some(at("2026-03-15T09:00:00.000Z"))
    );
    assert_eq!(stored.last_update, Some(february));
}

/// After months without calls, the reset lands on the anchor day, clamped in short months.
pub async fn resets_keep_the_billing_anchor_after_downtime<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
    let who = account("u-anchor");
    ledger
        .reset(
            &reset(&who, 100, CreditPeriod::Month),
            at("2028-01-31T10:00:00.000Z"),
        )
        .await
        .expect("reset");
    let first = ledger.balance(&who).await.expect("read").expect("exists");
    assert_eq!(
        first.schedule.map(|s| s.next_reset),
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
    assert_eq!((granted.outcome.used, granted.outcome.total), (0, 101));
    assert_eq!(
        granted.outcome.schedule.map(|s| s.next_reset),
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
        charged.outcome.balance.schedule.map(|s| s.next_reset),
        Some(at("2031-02-28T00:00:00.000Z"))
    );
}

/// Reset sets the total, zeroes used, schedules the next reset and clears the trial flag.
pub async fn reset_starts_a_fresh_period_and_clears_the_trial_flag<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
    assert_eq!((fresh.total, fresh.used, fresh.trial), (1_000, 0, false));
    let schedule = fresh.schedule.expect("scheduled");
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
        ledger.balance(&who).await.expect("read").map(|b| b.used),
        Some(7),
        "a retried reset wipes nothing"
    );
}

/// A grant that would pass [`MAX_CREDITS`] is refused naming `amount`; nothing changes.
pub async fn a_grant_past_the_maximum_balance_is_refused_and_writes_nothing<L, G, F, Fut>(make: F)
where
    L: CreditLedger,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, G)>,
{
    let (ledger, _guard) = make(window(DAY)).await;
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
        at_max.outcome.total, MAX_CREDITS,
        "the maximum itself is exact"
    );
    let refused = ledger.grant(&grant(&who, 1, false, "over"), at(NOW)).await;
    assert!(
        matches!(refused, Err(MeterError::InvalidArgument(ref e)) if e.field == "amount"),
        "{refused:?}"
    );
    assert_eq!(
        ledger.balance(&who).await.expect("read").map(|b| b.total),
        Some(MAX_CREDITS)
    );
}
