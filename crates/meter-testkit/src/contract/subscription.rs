//! The behaviour every [`AccountStore`] must show for accounts and
//! subscriptions, driven through the use cases ([`Subscriptions`],
//! [`Credits`]) on the fixed clock, run by
//! [`account_store_contract!`](crate::account_store_contract).

use std::{future::Future, sync::Arc, time::Duration};

use meter_core::{
    AccountStore, Charge, CreditLedger, Credits, GrantCredits, GrantKind, HistoryKind,
    HistoryQuery, IdempotencyWindow, MeterError, PlanCatalog, ProfileFields, Reason,
    SubscriptionRequest, SubscriptionStatus, Subscriptions, Timestamp,
};

use super::{account, key};
use crate::{FixedClock, timestamp as at};

/// The catalog of these tests: free, a monthly and a yearly plan with
/// monthly credits.
const CATALOG: &str = r#"
[plans.free]
credits = 100
billing_interval = "month"
price_micros = 0

[plans.standard]
credits = 500
billing_interval = "month"
price_micros = 15_000_000

[plans.pro-yearly]
credits = 1_000
credit_period = "month"
billing_interval = "year"
price_micros = 290_000_000
"#;

/// Both use cases over one store, on one fixed clock.
struct World<L, A> {
    credits: Credits<L, FixedClock>,
    subscriptions: Subscriptions<A, FixedClock>,
    clock: FixedClock,
}

fn world<L: CreditLedger, A: AccountStore>(ledger: L, accounts: A, now: &str) -> World<L, A> {
    let catalog = Arc::new(PlanCatalog::from_toml("contract", CATALOG).expect("catalog"));
    let clock = FixedClock::at(now);
    World {
        credits: Credits::new(ledger, Arc::clone(&catalog), clock.clone()),
        subscriptions: Subscriptions::new(accounts, catalog, clock.clone()),
        clock,
    }
}

fn profile(email: &str) -> ProfileFields {
    ProfileFields {
        email: Some(email.to_owned()),
        name: Some("Ada".to_owned()),
        image: None,
        role: Some("owner".to_owned()),
    }
}

/// A subscription to `plan` in `status` for the billing period `start..end`.
fn billed(plan: &str, status: SubscriptionStatus, start: &str, end: &str) -> SubscriptionRequest {
    SubscriptionRequest {
        plan: plan.to_owned(),
        status: Some(status),
        period_start: Some(at(start)),
        period_end: Some(at(end)),
        customer_id: "cus_1".to_owned(),
        subscription_id: "sub_1".to_owned(),
        ..SubscriptionRequest::default()
    }
}

fn charge(credits: i64) -> Charge {
    Charge::Credits(credits)
}

async fn spend<L: CreditLedger>(credits: &Credits<L, FixedClock>, who: &str, amount: i64) -> bool {
    let request = credits
        .price(account(who), charge(amount), Reason::default(), None)
        .expect("valid deduct");
    credits
        .deduct(&request)
        .await
        .expect("deduct")
        .outcome
        .applied
}

/// Sign-up gives the free allowance; an upgrade to a yearly plan starts its
/// monthly allowance from the billing period's start (a grant untouched);
/// the allowance resets every month for 13 months, the renewal included;
/// a cancellation at period end keeps the plan until the renewal time and
/// then falls back to free, lazily, with the free allowance from then.
pub async fn an_account_lives_from_sign_up_to_free_again<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-01-15T09:00:00.000Z");
    let who = account("u-life");

    let signed = w
        .subscriptions
        .register(who.clone(), profile("ada@example.com"), None)
        .await
        .expect("register");
    let (created, view) = signed.outcome;
    assert!(created);
    assert_eq!(view.subscription.plan, "free");
    assert_eq!(view.subscription.status, SubscriptionStatus::Active);
    assert!(!view.active, "the free plan is not a paying one");
    assert_eq!(view.balance.allowance.total, 100);
    assert_eq!(
        view.balance.reset_time(),
        Some(at("2026-02-15T09:00:00.000Z"))
    );
    assert_eq!(view.profile.joined, at("2026-01-15T09:00:00.000Z"));
    assert!(spend(&w.credits, "u-life", 30).await);
    let pack = GrantCredits::new(
        who.clone(),
        50,
        Reason::default(),
        GrantKind::Paid,
        None,
        key("pack-1"),
        Timestamp::EPOCH,
    )
    .expect("valid grant");
    w.credits.grant(&pack).await.expect("grant");

    w.clock.set("2026-01-20T10:00:00.000Z");
    let upgraded = w
        .subscriptions
        .update(
            who.clone(),
            billed(
                "pro-yearly",
                SubscriptionStatus::Active,
                "2026-01-20T10:00:00.000Z",
                "2027-01-20T10:00:00.000Z",
            ),
            Some(at("2026-01-20T10:00:00.000Z")),
            key("evt_upgrade"),
        )
        .await
        .expect("upgrade")
        .outcome;
    assert!(upgraded.applied);
    assert_eq!(upgraded.subscription.plan, "pro-yearly");
    assert_eq!(
        upgraded.subscription.purchase_time,
        Some(at("2026-01-20T10:00:00.000Z"))
    );
    assert_eq!(
        upgraded.next_credit_reset,
        Some(at("2026-02-20T10:00:00.000Z")),
        "monthly credits inside a yearly plan"
    );
    let balance = w.credits.balance(&who).await.expect("balance");
    assert_eq!(
        (
            balance.allowance.total,
            balance.allowance.used,
            balance.remaining()
        ),
        (1_000, 0, 1_050),
        "the plan's allowance from 0; the pack untouched"
    );
    let view = w.subscriptions.account(&who).await.expect("account");
    assert!(view.active);

    // Thirteen months: each resets the allowance, the renewal at month 12 too.
    for month in 1..=13u32 {
        assert!(spend(&w.credits, "u-life", 400).await, "month {month}");
        let (year, m) = (2026 + (month / 12) as i32, month % 12 + 1);
        let boundary = format!("{year}-{m:02}-20T10:00:00.000Z");
        w.clock.set(&boundary);
        w.clock.advance(Duration::from_secs(3600));
        if month == 12 {
            assert!(spend(&w.credits, "u-life", 50).await);
            let renewed = w
                .subscriptions
                .update(
                    who.clone(),
                    billed(
                        "pro-yearly",
                        SubscriptionStatus::Active,
                        "2027-01-20T10:00:00.000Z",
                        "2028-01-20T10:00:00.000Z",
                    ),
                    Some(at("2027-01-20T10:30:00.000Z")),
                    key("evt_renewal"),
                )
                .await
                .expect("renewal")
                .outcome;
            assert!(renewed.applied);
            assert_eq!(
                renewed.subscription.purchase_time,
                Some(at("2026-01-20T10:00:00.000Z")),
                "the same plan: bought when first bought"
            );
        }
        let balance = w.credits.balance(&who).await.expect("balance");
        let used_since_boundary = if month == 12 { 50 } else { 0 };
        assert_eq!(
            (balance.allowance.total, balance.allowance.used),
            (1_000, used_since_boundary),
            "month {month} starts afresh at its boundary; the renewal webhook after \
             it gives no second allowance"
        );
        let next = if m == 12 {
            format!("{}-01-20T10:00:00.000Z", year + 1)
        } else {
            format!("{year}-{:02}-20T10:00:00.000Z", m + 1)
        };
        assert_eq!(balance.reset_time(), Some(at(&next)), "month {month}");
    }

    w.clock.set("2027-03-01T00:00:00.000Z");
    let canceled = w
        .subscriptions
        .cancel(who.clone(), true, String::new(), None, key("evt_cancel"))
        .await
        .expect("cancel")
        .outcome;
    assert_eq!(
        canceled.subscription.plan, "pro-yearly",
        "kept until renewal"
    );
    assert!(canceled.subscription.cancel_at_period_end);
    w.clock.set("2028-01-20T09:59:59.999Z");
    let (before_end, _) = w.subscriptions.subscription(&who).await.expect("read");
    assert_eq!(before_end.plan, "pro-yearly");

    w.clock.set("2028-01-25T00:00:00.000Z");
    let (after, next_reset) = w.subscriptions.subscription(&who).await.expect("read");
    assert_eq!(after.plan, "free");
    assert_eq!(after.status, SubscriptionStatus::Canceled);
    assert_eq!(after.canceled_time, Some(at("2028-01-20T10:00:00.000Z")));
    assert_eq!(after.customer_id, "cus_1", "billing ids kept");
    assert_eq!(next_reset, Some(at("2028-02-20T10:00:00.000Z")));
    let view = w.subscriptions.account(&who).await.expect("account");
    assert!(!view.active);
    assert_eq!(
        (view.balance.allowance.total, view.balance.allowance.used),
        (100, 0),
        "the free allowance from the renewal time"
    );
    // A write settles the same way; the pack is still there.
    assert!(spend(&w.credits, "u-life", 120).await);
    let balance = w.credits.balance(&who).await.expect("balance");
    assert_eq!(balance.remaining(), 30);
    assert_eq!(
        newest_plan_change(&w.credits, &who).await,
        Some((at("2028-01-20T10:00:00.000Z"), 100)),
        "the fall back is in the history at the renewal time"
    );
}

/// The time and amount of the account's newest `plan_change` history entry.
async fn newest_plan_change<L: CreditLedger>(
    credits: &Credits<L, FixedClock>,
    who: &meter_core::AccountId,
) -> Option<(Timestamp, i64)> {
    let history = credits
        .history(who, &HistoryQuery::parse(500, "").expect("query"))
        .await
        .expect("history");
    history
        .entries
        .iter()
        .find(|(_, e)| e.kind == HistoryKind::PlanChange)
        .map(|(_, e)| (e.time, e.amount))
}

/// Billing events arrive out of order: an older one is ignored and answers
/// the stored subscription; a newer one applies; a retry is a replay.
pub async fn older_billing_events_never_roll_a_subscription_back<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-05-01T12:00:00.000Z");
    let who = account("u-order");
    let update = |plan: &str, event: &str, evt: &str| {
        w.subscriptions.update(
            who.clone(),
            billed(
                plan,
                SubscriptionStatus::Active,
                "2026-05-01T00:00:00.000Z",
                "2026-06-01T00:00:00.000Z",
            ),
            Some(at(event)),
            key(evt),
        )
    };
    let newer = update("pro-yearly", "2026-05-01T11:00:00.000Z", "evt_2")
        .await
        .expect("newer");
    assert!(
        newer.outcome.applied,
        "a first event applies to any account"
    );
    assert!(spend(&w.credits, "u-order", 10).await);
    let older = update("standard", "2026-05-01T10:00:00.000Z", "evt_1")
        .await
        .expect("older")
        .outcome;
    assert!(!older.applied);
    assert_eq!(older.subscription.plan, "pro-yearly");
    assert_eq!(
        older.subscription.updated_at,
        Some(at("2026-05-01T11:00:00.000Z"))
    );
    let balance = w.credits.balance(&who).await.expect("balance");
    assert_eq!(
        (balance.allowance.total, balance.allowance.used),
        (1_000, 10),
        "nothing changed"
    );
    let retry = update("pro-yearly", "2026-05-01T11:00:00.000Z", "evt_2")
        .await
        .expect("retry");
    assert!(retry.replayed && retry.outcome.applied);
    assert_eq!(
        w.credits
            .balance(&who)
            .await
            .expect("balance")
            .allowance
            .used,
        10,
        "a replay starts no allowance"
    );
    // The same period, a later event: not a new period, nothing restarts.
    let same = update("pro-yearly", "2026-05-01T11:30:00.000Z", "evt_3")
        .await
        .expect("same period");
    assert!(same.outcome.applied && !same.replayed);
    assert_eq!(
        w.credits
            .balance(&who)
            .await
            .expect("balance")
            .allowance
            .used,
        10
    );
    let down = update("standard", "2026-05-01T11:45:00.000Z", "evt_4")
        .await
        .expect("downgrade")
        .outcome;
    assert!(down.applied);
    let balance = w.credits.balance(&who).await.expect("balance");
    assert_eq!(
        (balance.allowance.total, balance.allowance.used),
        (500, 0),
        "a new plan starts its allowance"
    );
    let reused = update("pro-yearly", "2026-05-01T11:50:00.000Z", "evt_4").await;
    assert!(matches!(
        reused,
        Err(MeterError::IdempotencyConflict { .. })
    ));
}

/// The status decides which plan's allowance applies: past_due keeps the
/// plan's, unpaid falls back to the default's, active again restores the
/// plan's; Reset without a total uses the account's plan; canceling now
/// falls back at once.
pub async fn the_status_decides_the_allowance<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-07-01T00:00:00.000Z");
    let who = account("u-status");
    w.subscriptions
        .register(who.clone(), ProfileFields::default(), None)
        .await
        .expect("register");
    let mut event = at("2026-07-01T00:00:00.000Z").as_millis();
    for (status, total, used) in [
        (SubscriptionStatus::Active, 500, 0),
        (SubscriptionStatus::PastDue, 500, 50),
        (SubscriptionStatus::Unpaid, 100, 0),
        (SubscriptionStatus::Active, 500, 0),
    ] {
        assert!(spend(&w.credits, "u-status", 50).await);
        event += 1_000;
        let outcome = w
            .subscriptions
            .update(
                who.clone(),
                billed(
                    "standard",
                    status,
                    "2026-07-01T00:00:00.000Z",
                    "2026-08-01T00:00:00.000Z",
                ),
                Timestamp::from_millis(event),
                None,
            )
            .await
            .expect("update")
            .outcome;
        assert_eq!(outcome.subscription.status, status);
        let balance = w.credits.balance(&who).await.expect("balance");
        assert_eq!(
            (balance.allowance.total, balance.allowance.used),
            (total, used),
            "{status}"
        );
    }
    w.clock.advance(Duration::from_secs(60));
    let reset = w
        .credits
        .reset(who.clone(), None, None)
        .await
        .expect("reset");
    assert_eq!(reset.outcome.allowance.total, 500, "the plan's credits");
    let canceled = w
        .subscriptions
        .cancel(who.clone(), false, String::new(), None, None)
        .await
        .expect("cancel")
        .outcome;
    assert_eq!(
        (
            canceled.subscription.plan.as_str(),
            canceled.subscription.status
        ),
        ("free", SubscriptionStatus::Canceled)
    );
    let balance = w.credits.balance(&who).await.expect("balance");
    assert_eq!(balance.allowance.total, 100, "the free allowance now");
    let reset = w
        .credits
        .reset(who.clone(), None, None)
        .await
        .expect("reset");
    assert_eq!(reset.outcome.allowance.total, 100);
}

/// Twenty concurrent first registrations create one account and allocate
/// its credits once; later calls move only `last_login`.
pub async fn concurrent_sign_ups_create_one_account<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = Arc::new(world(ledger, accounts, "2026-02-01T08:00:00.000Z"));
    let who = account("u-race");
    let calls = (0..20).map(|i| {
        let w = Arc::clone(&w);
        let who = who.clone();
        tokio::spawn(async move {
            w.subscriptions
                .register(who, profile(&format!("user{i}@example.com")), None)
                .await
                .expect("register")
                .outcome
        })
    });
    let mut created = 0;
    let mut emails = Vec::new();
    for call in calls {
        let (first, view) = call.await.expect("task");
        created += usize::from(first);
        emails.push(view.profile.email);
    }
    assert_eq!(created, 1, "one call created the account");
    emails.dedup();
    assert_eq!(emails.len(), 1, "every call saw the first profile");
    let history = w
        .credits
        .history(&who, &HistoryQuery::parse(100, "").expect("query"))
        .await
        .expect("history");
    assert_eq!(history.entries.len(), 1, "credits allocated once");
    assert_eq!(
        w.credits.balance(&who).await.expect("read").remaining(),
        100
    );

    w.clock.advance(Duration::from_secs(60));
    let (again, view) = w
        .subscriptions
        .register(who.clone(), profile("other@example.com"), None)
        .await
        .expect("again")
        .outcome;
    assert!(!again);
    assert_eq!(
        view.profile.email, emails[0],
        "a later call changes no profile"
    );
    assert_eq!(view.profile.joined, at("2026-02-01T08:00:00.000Z"));
    assert_eq!(view.profile.last_login, at("2026-02-01T08:01:00.000Z"));
}

/// Profiles change field by field; an account never registered is
/// NOT_FOUND; bad input writes nothing and does not block the next call.
pub async fn profiles_change_field_by_field_and_bad_input_writes_nothing<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-04-01T00:00:00.000Z");
    let who = account("u-profile");
    let missing = w.subscriptions.account(&who).await;
    assert!(
        matches!(missing, Err(MeterError::NotFound(_))),
        "{missing:?}"
    );
    let missing = w
        .subscriptions
        .update_profile(who.clone(), profile("a@example.com"), None)
        .await;
    assert!(
        matches!(missing, Err(MeterError::NotFound(_))),
        "{missing:?}"
    );
    let (sub, _) = w.subscriptions.subscription(&who).await.expect("read");
    assert_eq!(
        (sub.plan.as_str(), sub.status),
        ("free", SubscriptionStatus::Active)
    );

    w.subscriptions
        .register(who.clone(), profile("ada@example.com"), None)
        .await
        .expect("register");
    let changed = w
        .subscriptions
        .update_profile(
            who.clone(),
            ProfileFields {
                name: Some("Ada Lovelace".into()),
                role: Some(String::new()),
                ..ProfileFields::default()
            },
            key("profile-1"),
        )
        .await
        .expect("update")
        .outcome;
    assert_eq!(
        (
            changed.email.as_str(),
            changed.name.as_str(),
            changed.role.as_str()
        ),
        ("ada@example.com", "Ada Lovelace", "")
    );

    let field = |result: Result<_, MeterError>| match result {
        Err(MeterError::InvalidArgument(e)) => e.field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    };
    let bad_email = w
        .subscriptions
        .update_profile(who.clone(), profile("not-an-email"), None)
        .await;
    assert_eq!(field(bad_email.map(|_| ())), "email");
    let long = ProfileFields {
        name: Some("n".repeat(100_000)),
        ..ProfileFields::default()
    };
    let long = w
        .subscriptions
        .update_profile(who.clone(), long, None)
        .await;
    assert_eq!(field(long.map(|_| ())), "name");
    let unknown = w
        .subscriptions
        .update(
            who.clone(),
            billed(
                "platinum",
                SubscriptionStatus::Active,
                "2026-04-01T00:00:00.000Z",
                "2026-05-01T00:00:00.000Z",
            ),
            None,
            key("evt_bad"),
        )
        .await;
    assert_eq!(field(unknown.map(|_| ())), "plan");
    let future = w
        .subscriptions
        .update(
            who.clone(),
            billed(
                "standard",
                SubscriptionStatus::Active,
                "2026-04-01T00:00:00.000Z",
                "2026-05-01T00:00:00.000Z",
            ),
            Some(at("2026-04-02T00:00:00.000Z")),
            key("evt_bad"),
        )
        .await;
    assert_eq!(field(future.map(|_| ())), "event_time");
    let no_status = SubscriptionRequest {
        status: None,
        ..billed(
            "standard",
            SubscriptionStatus::Active,
            "2026-04-01T00:00:00.000Z",
            "2026-05-01T00:00:00.000Z",
        )
    };
    let no_status = w
        .subscriptions
        .update(who.clone(), no_status, None, None)
        .await;
    assert_eq!(field(no_status.map(|_| ())), "status");

    let view = w.subscriptions.account(&who).await.expect("account");
    assert_eq!(view.profile.name, "Ada Lovelace", "nothing written");
    assert_eq!(view.subscription.plan, "free");
    let valid = w
        .subscriptions
        .update(
            who.clone(),
            billed(
                "standard",
                SubscriptionStatus::Active,
                "2026-04-01T00:00:00.000Z",
                "2026-05-01T00:00:00.000Z",
            ),
            None,
            key("evt_bad"),
        )
        .await
        .expect("the key of a refused call is free");
    assert!(valid.outcome.applied && !valid.replayed);
}

/// What billing really sends: a renewal webhook that comes after the
/// allowance already reset at the boundary (what was used since stays
/// used), two events of the same second in the wrong order, events about
/// another billing subscription, status-only updates, late cancellations,
/// retries without an event time, and cancellations of nothing.
pub async fn billing_events_as_they_really_come<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-01-01T00:00:00.000Z");
    let who = account("u-real");
    let event = |text: &str| Some(at(text));
    let update = |request: SubscriptionRequest, time: &str, evt: &str| {
        w.subscriptions
            .update(who.clone(), request, event(time), key(evt))
    };
    let monthly = |status, start: &str, end: &str, sub: &str| SubscriptionRequest {
        subscription_id: sub.to_owned(),
        ..billed("standard", status, start, end)
    };
    let first = update(
        monthly(
            SubscriptionStatus::Active,
            "2026-01-01T00:00:00.000Z",
            "2026-02-01T00:00:00.000Z",
            "sub_Y",
        ),
        "2026-01-01T00:00:00.000Z",
        "evt_1",
    )
    .await
    .expect("subscribe");
    assert!(first.outcome.applied);
    assert!(spend(&w.credits, "u-real", 100).await);

    // Same second, earlier stage, delivered second: ignored.
    let tie = update(
        monthly(
            SubscriptionStatus::Incomplete,
            "2026-01-01T00:00:00.000Z",
            "2026-02-01T00:00:00.000Z",
            "sub_Y",
        ),
        "2026-01-01T00:00:00.000Z",
        "evt_0",
    )
    .await
    .expect("tie")
    .outcome;
    assert!(!tie.applied);
    assert_eq!(tie.subscription.status, SubscriptionStatus::Active);

    // Another billing subscription expiring: ignored, as is its deletion.
    w.clock.set("2026-01-02T00:00:00.000Z");
    let other = update(
        monthly(
            SubscriptionStatus::IncompleteExpired,
            "2026-01-01T00:00:00.000Z",
            "2026-02-01T00:00:00.000Z",
            "sub_X",
        ),
        "2026-01-02T00:00:00.000Z",
        "evt_x",
    )
    .await
    .expect("other")
    .outcome;
    assert!(!other.applied);
    let other_cancel = w
        .subscriptions
        .cancel(
            who.clone(),
            false,
            "sub_X".into(),
            None,
            key("evt_x_deleted"),
        )
        .await
        .expect("other cancel")
        .outcome;
    assert!(!other_cancel.applied);
    assert_eq!(other_cancel.subscription.plan, "standard");

    // A status-only update keeps the billing period.
    let status_only = SubscriptionRequest {
        period_start: None,
        period_end: None,
        ..monthly(
            SubscriptionStatus::PastDue,
            "2026-01-01T00:00:00.000Z",
            "2026-02-01T00:00:00.000Z",
            "",
        )
    };
    let past_due = update(status_only, "2026-01-02T00:00:01.000Z", "evt_2")
        .await
        .expect("past due")
        .outcome;
    assert!(past_due.applied);
    assert_eq!(
        (
            past_due.subscription.period_start,
            past_due.subscription.renewal_time
        ),
        (
            event("2026-01-01T00:00:00.000Z"),
            event("2026-02-01T00:00:00.000Z")
        )
    );
    assert_eq!(past_due.subscription.subscription_id, "sub_Y");
    assert_eq!(
        w.credits.balance(&who).await.expect("read").allowance.used,
        100
    );

    // The renewal webhook comes an hour after the boundary, when 200 more
    // were used: they stay used.
    w.clock.set("2026-02-01T01:00:00.000Z");
    assert!(spend(&w.credits, "u-real", 200).await);
    let renewal = update(
        monthly(
            SubscriptionStatus::Active,
            "2026-02-01T00:00:00.000Z",
            "2026-03-01T00:00:00.000Z",
            "sub_Y",
        ),
        "2026-02-01T00:00:05.000Z",
        "evt_3",
    )
    .await
    .expect("renewal")
    .outcome;
    assert!(renewal.applied);
    assert_eq!(renewal.next_credit_reset, event("2026-03-01T00:00:00.000Z"));
    let balance = w.credits.balance(&who).await.expect("read");
    assert_eq!(
        (balance.allowance.total, balance.allowance.used),
        (500, 200),
        "the renewal gives no second allowance"
    );
    // An older period's event does not move the period back.
    let stale = update(
        monthly(
            SubscriptionStatus::Active,
            "2026-01-01T00:00:00.000Z",
            "2026-02-01T00:00:00.000Z",
            "sub_Y",
        ),
        "2026-02-01T00:00:06.000Z",
        "evt_4",
    )
    .await
    .expect("stale period")
    .outcome;
    assert_eq!(
        stale.subscription.period_start,
        event("2026-02-01T00:00:00.000Z")
    );
    assert_eq!(
        w.credits.balance(&who).await.expect("read").allowance.used,
        200
    );

    // A retry without an event time is the same request: a replay.
    let cancel = || {
        w.subscriptions
            .cancel(who.clone(), true, String::new(), None, key("evt_cancel"))
    };
    let first_cancel = cancel().await.expect("cancel");
    w.clock.advance(Duration::from_secs(1));
    let retried = cancel().await.expect("retry");
    assert!(retried.replayed && !first_cancel.replayed);

    // Canceling at the end of a period that already ended, its renewal not
    // recorded, is refused; nothing changes.
    let late = world_account_cancel_late(&w, &who).await;
    assert!(
        matches!(late, Err(MeterError::FailedPrecondition(_))),
        "{late:?}"
    );

    // Canceling now twice keeps the first cancellation's time.
    w.clock.set("2026-02-10T00:00:00.000Z");
    let now_1 = w
        .subscriptions
        .cancel(who.clone(), false, String::new(), None, None)
        .await
        .expect("cancel now")
        .outcome;
    w.clock.set("2026-02-11T00:00:00.000Z");
    let now_2 = w
        .subscriptions
        .cancel(who.clone(), false, String::new(), None, None)
        .await
        .expect("cancel again")
        .outcome;
    assert_eq!(
        now_1.subscription.canceled_time,
        event("2026-02-10T00:00:00.000Z")
    );
    assert_eq!(
        now_2.subscription.canceled_time,
        now_1.subscription.canceled_time
    );
    assert_eq!(
        w.credits.balance(&who).await.expect("read").allowance.total,
        100,
        "free from the first cancellation"
    );

    // Nothing to cancel on an account without a subscription.
    let nobody = account("u-nobody");
    let nothing = w
        .subscriptions
        .cancel(nobody.clone(), false, String::new(), None, None)
        .await
        .expect("cancel nothing")
        .outcome;
    assert!(!nothing.applied);
    assert_eq!(
        w.credits.balance(&nobody).await.expect("read").last_update,
        None,
        "nothing written"
    );
}

/// A cancellation at period end of `who` after its billing period ended
/// (the clock moved past it, no renewal recorded).
async fn world_account_cancel_late<L: CreditLedger, A: AccountStore>(
    w: &World<L, A>,
    who: &meter_core::AccountId,
) -> Result<(), MeterError> {
    let late = account("u-late");
    w.subscriptions
        .update(
            late.clone(),
            billed(
                "standard",
                SubscriptionStatus::Active,
                "2026-01-05T00:00:00.000Z",
                "2026-01-25T00:00:00.000Z",
            ),
            Some(at("2026-01-05T00:00:00.000Z")),
            None,
        )
        .await?;
    let _ = who;
    let refused = w
        .subscriptions
        .cancel(late.clone(), true, String::new(), None, None)
        .await
        .map(|_| ());
    let (after, _) = w.subscriptions.subscription(&late).await?;
    assert!(!after.cancel_at_period_end, "nothing written");
    refused
}

/// Renewals of a plan billed on the 31st keep one allowance per period
/// through short months; a renewal stamped a moment ahead of the clock
/// waits for the boundary; a switch of billing subscriptions in one second
/// lands on the new one whatever the delivery order; a past-due account
/// ignores another subscription's expiry; a free account has nothing to cancel.
pub async fn renewals_and_switches_never_give_a_second_allowance<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-01-31T00:00:00.000Z");
    let who = account("u-31st");
    let monthly = |start: &str, end: &str, sub: &str, status| SubscriptionRequest {
        subscription_id: sub.to_owned(),
        ..billed("standard", status, start, end)
    };
    let periods = [
        "2026-01-31T00:00:00.000Z",
        "2026-02-28T00:00:00.000Z",
        "2026-03-31T00:00:00.000Z",
        "2026-04-30T00:00:00.000Z",
        "2026-05-31T00:00:00.000Z",
    ];
    for (i, pair) in periods.windows(2).enumerate() {
        let (start, end) = (pair[0], pair[1]);
        // The webhook an hour after the boundary; 300 spent meanwhile.
        w.clock.set(start);
        w.clock.advance(Duration::from_secs(3600));
        if i > 0 {
            assert!(spend(&w.credits, "u-31st", 300).await, "period {i}");
        }
        let renewal = w
            .subscriptions
            .update(
                who.clone(),
                monthly(start, end, "sub_1", SubscriptionStatus::Active),
                Some(at(start)),
                key(&format!("evt_{i}")),
            )
            .await
            .expect("renewal")
            .outcome;
        assert!(renewal.applied);
        assert_eq!(renewal.next_credit_reset, Some(at(end)), "period {i}");
        let balance = w.credits.balance(&who).await.expect("read");
        let used = if i == 0 { 0 } else { 300 };
        assert_eq!(
            (balance.allowance.total, balance.allowance.used),
            (500, used),
            "period {i}: one allowance, what was used since the boundary stays used"
        );
        assert!(spend(&w.credits, "u-31st", 100).await);
    }

    // A renewal stamped two minutes ahead of meterd's clock: the running
    // period runs to its end, then resets on the same schedule.
    w.clock.set("2026-06-30T23:58:00.000Z");
    let early = w
        .subscriptions
        .update(
            who.clone(),
            monthly(
                "2026-06-30T00:00:00.000Z",
                "2026-07-31T00:00:00.000Z",
                "sub_1",
                SubscriptionStatus::Active,
            ),
            Some(at("2026-06-30T00:00:00.000Z")),
            key("evt_early"),
        )
        .await;
    assert!(early.is_ok(), "{early:?}");
    let ahead = w
        .subscriptions
        .update(
            who.clone(),
            monthly(
                "2026-07-31T00:00:00.000Z",
                "2026-08-31T00:00:00.000Z",
                "sub_1",
                SubscriptionStatus::Active,
            ),
            Some(at("2026-07-31T00:00:00.000Z")),
            key("evt_ahead"),
        )
        .await;
    assert!(
        matches!(ahead, Err(MeterError::InvalidArgument(ref e)) if e.field == "current_period_start"),
        "a month ahead is refused: {ahead:?}"
    );
    w.clock.set("2026-07-30T23:58:00.000Z");
    assert!(spend(&w.credits, "u-31st", 50).await);
    let used_before = w.credits.balance(&who).await.expect("read").allowance.used;
    let soon = w
        .subscriptions
        .update(
            who.clone(),
            monthly(
                "2026-07-31T00:00:00.000Z",
                "2026-08-31T00:00:00.000Z",
                "sub_1",
                SubscriptionStatus::Active,
            ),
            Some(at("2026-07-31T00:00:00.000Z")),
            key("evt_soon"),
        )
        .await
        .expect("two minutes ahead")
        .outcome;
    assert!(soon.applied);
    assert_eq!(
        w.credits.balance(&who).await.expect("read").allowance.used,
        used_before,
        "nothing restarts before the boundary"
    );
    w.clock.set("2026-07-31T00:00:01.000Z");
    let balance = w.credits.balance(&who).await.expect("read");
    assert_eq!(
        (balance.allowance.used, balance.reset_time()),
        (0, Some(at("2026-08-31T00:00:00.000Z")))
    );

    // Past due, then another subscription's expiry: ignored.
    let past_due = w
        .subscriptions
        .update(
            who.clone(),
            monthly(
                "2026-07-31T00:00:00.000Z",
                "2026-08-31T00:00:00.000Z",
                "sub_1",
                SubscriptionStatus::PastDue,
            ),
            Some(at("2026-07-31T00:00:01.000Z")),
            None,
        )
        .await
        .expect("past due")
        .outcome;
    assert!(past_due.applied);
    let expired = w
        .subscriptions
        .update(
            who.clone(),
            monthly(
                "2026-07-30T00:00:00.000Z",
                "2026-08-30T00:00:00.000Z",
                "sub_abandoned",
                SubscriptionStatus::IncompleteExpired,
            ),
            Some(at("2026-07-31T00:00:01.000Z")),
            None,
        )
        .await
        .expect("other")
        .outcome;
    assert!(!expired.applied);
    assert_eq!(expired.subscription.subscription_id, "sub_1");

    // Switching billing subscriptions in one second, either delivery order.
    for (n, cancel_first) in [(0, true), (1, false)] {
        let switcher = account(&format!("u-switch-{n}"));
        let old = || {
            w.subscriptions.update(
                switcher.clone(),
                monthly(
                    "2026-07-01T00:00:00.000Z",
                    "2026-08-01T00:00:00.000Z",
                    "sub_old",
                    SubscriptionStatus::Active,
                ),
                Some(at("2026-07-01T00:00:00.000Z")),
                None,
            )
        };
        old().await.expect("old subscription");
        let second = Some(at("2026-07-31T00:00:00.000Z"));
        let cancel = || {
            w.subscriptions
                .cancel(switcher.clone(), false, "sub_old".into(), second, None)
        };
        let new = || {
            w.subscriptions.update(
                switcher.clone(),
                SubscriptionRequest {
                    plan: "pro-yearly".into(),
                    ..monthly(
                        "2026-07-31T00:00:00.000Z",
                        "2027-07-31T00:00:00.000Z",
                        "sub_new",
                        SubscriptionStatus::Active,
                    )
                },
                second,
                None,
            )
        };
        if cancel_first {
            cancel().await.expect("cancel");
            new().await.expect("new");
        } else {
            new().await.expect("new");
            let late = cancel().await.expect("cancel").outcome;
            assert!(!late.applied, "the old subscription's deletion is ignored");
        }
        let (now_on, _) = w.subscriptions.subscription(&switcher).await.expect("read");
        assert_eq!(
            (now_on.plan.as_str(), now_on.subscription_id.as_str()),
            ("pro-yearly", "sub_new"),
            "cancel first: {cancel_first}"
        );
    }

    // A registered free account has nothing to cancel.
    let free = account("u-free");
    w.subscriptions
        .register(free.clone(), ProfileFields::default(), None)
        .await
        .expect("register");
    let nothing = w
        .subscriptions
        .cancel(free.clone(), false, String::new(), None, None)
        .await
        .expect("cancel")
        .outcome;
    assert!(!nothing.applied);
    assert_eq!(nothing.subscription.status, SubscriptionStatus::Active);
}

/// An applied subscription change (or a link) that names a billing
/// customer makes the customer lead to the account (the latest account
/// named wins); deleting the account removes its entries, and only its own.
pub async fn billing_customers_lead_to_their_account_until_it_is_deleted<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let w = world(ledger, accounts, "2026-04-10T09:00:00.000Z");
    let find = |customer: &'static str| w.subscriptions.account_of_customer(customer);
    assert_eq!(find("cus_1").await.expect("reads"), None);
    let bad = find("cus 1").await.expect_err("refused");
    assert!(bad.to_string().contains("billing_customer_id"), "{bad}");

    let plan = |customer: &str| SubscriptionRequest {
        customer_id: customer.to_owned(),
        ..billed(
            "standard",
            SubscriptionStatus::Active,
            "2026-04-01T00:00:00.000Z",
            "2026-05-01T00:00:00.000Z",
        )
    };
    let (first, second) = (account("u-cus-1"), account("u-cus-2"));
    w.subscriptions
        .update(first.clone(), plan("cus_1"), None, None)
        .await
        .expect("update");
    w.subscriptions
        .update(second.clone(), plan("cus_2"), None, None)
        .await
        .expect("update");
    assert_eq!(find("cus_1").await.expect("reads"), Some(first.clone()));
    assert_eq!(find("cus_2").await.expect("reads"), Some(second.clone()));
    w.subscriptions
        .delete_account(&first)
        .await
        .expect("delete");
    assert_eq!(
        find("cus_1").await.expect("reads"),
        None,
        "its entry went with it"
    );
    assert_eq!(
        find("cus_2").await.expect("reads"),
        Some(second.clone()),
        "others stay"
    );
    // The customer moves to another account: the latest named wins, and
    // deleting the account it left does not remove it.
    let third = account("u-cus-3");
    w.subscriptions
        .update(third.clone(), plan("cus_2"), None, None)
        .await
        .expect("update");
    assert_eq!(find("cus_2").await.expect("reads"), Some(third.clone()));
    w.subscriptions
        .delete_account(&second)
        .await
        .expect("delete");
    assert_eq!(find("cus_2").await.expect("reads"), Some(third.clone()));

    // An event older than the stored subscription (now, 09:00) is ignored:
    // it links nothing.
    let late = SubscriptionRequest {
        customer_id: "cus_late".to_owned(),
        ..plan("")
    };
    let ignored = w
        .subscriptions
        .update(
            third.clone(),
            late,
            Some(at("2026-04-10T07:00:00.000Z")),
            None,
        )
        .await
        .expect("older event answered");
    assert!(!ignored.outcome.applied);
    assert_eq!(find("cus_late").await.expect("reads"), None);

    // A customer linked before any subscription names it (a Checkout
    // session), to registered accounts only; every customer an account had
    // goes with it.
    let fourth = account("u-cus-4");
    let unknown = w
        .subscriptions
        .link_customer(&fourth, "cus_4", None)
        .await
        .expect_err("not registered");
    assert!(matches!(unknown, MeterError::NotFound(_)), "{unknown}");
    assert_eq!(find("cus_4").await.expect("reads"), None, "nothing written");
    w.subscriptions
        .register(fourth.clone(), ProfileFields::default(), None)
        .await
        .expect("register");
    let bad = w
        .subscriptions
        .link_customer(&fourth, "", None)
        .await
        .expect_err("refused");
    assert!(bad.to_string().contains("billing_customer_id"), "{bad}");
    for _ in 0..2 {
        w.subscriptions
            .link_customer(&fourth, "cus_4", None)
            .await
            .expect("link");
    }
    assert_eq!(find("cus_4").await.expect("reads"), Some(fourth.clone()));
    w.subscriptions
        .update(fourth.clone(), plan("cus_5"), None, None)
        .await
        .expect("update");
    assert_eq!(find("cus_4").await.expect("reads"), Some(fourth.clone()));
    assert_eq!(find("cus_5").await.expect("reads"), Some(fourth.clone()));

    // The link of the latest event time wins, whatever order they come in.
    let fifth = account("u-cus-5");
    w.subscriptions
        .register(fifth.clone(), ProfileFields::default(), None)
        .await
        .expect("register");
    let link = |who: meter_core::AccountId, time: &str| {
        let time = at(time);
        let subscriptions = &w.subscriptions;
        async move {
            subscriptions
                .link_customer(&who, "cus_moved", Some(time))
                .await
        }
    };
    link(fourth.clone(), "2026-04-10T08:00:00.000Z")
        .await
        .expect("link");
    link(fifth.clone(), "2026-04-10T08:30:00.000Z")
        .await
        .expect("link");
    assert_eq!(find("cus_moved").await.expect("reads"), Some(fifth.clone()));
    link(fourth.clone(), "2026-04-10T08:00:00.000Z")
        .await
        .expect("a late redelivery");
    assert_eq!(
        find("cus_moved").await.expect("reads"),
        Some(fifth.clone()),
        "the older link does not take it back"
    );
    let ahead = link(fourth.clone(), "2026-04-11T09:00:00.000Z")
        .await
        .expect_err("ahead of the clock");
    assert!(ahead.to_string().contains("event_time"), "{ahead}");
    w.subscriptions
        .delete_account(&fifth)
        .await
        .expect("delete");
    assert_eq!(find("cus_moved").await.expect("reads"), None);

    w.subscriptions
        .delete_account(&fourth)
        .await
        .expect("delete");
    assert_eq!(find("cus_4").await.expect("reads"), None);
    assert_eq!(find("cus_5").await.expect("reads"), None);
    assert_eq!(find("cus_2").await.expect("reads"), Some(third));
}
