//! The behaviour every [`StatsStore`] must show, driven through the use
//! cases ([`ActivityStats`], [`Subscriptions`]) on the fixed clock, run by
//! [`stats_store_contract!`](crate::stats_store_contract).

use std::{future::Future, sync::Arc, time::Duration};

use meter_core::{
    AccountStore, ActivityStats, IdempotencyWindow, MeterError, PlanCatalog, StatsStore,
    SubscriptionRequest, SubscriptionStatus, Subscriptions,
};

use super::{account, key};
use crate::{FixedClock, timestamp as at};

/// Runs every stats-store contract test against the `(stats, accounts,
/// guard)` that `$make` (an async block over the [`IdempotencyWindow`]
/// `$window`) yields: both ports of one store.
#[macro_export]
macro_rules! stats_store_contract {
    ($window:ident => $make:expr) => {
        $crate::stats_store_contract!(@each $window => $make;
            logins_count_each_local_day_once_and_streaks_run,
            concurrent_logins_of_one_instant_count_once,
            conversations_count_once_and_the_recent_list_keeps_the_newest,
            moods_keep_one_decimal_and_a_reset_starts_over,
            the_plan_follows_the_subscription,
        );
    };
    (@each $window:ident => $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::stats::$name(
                    |$window: ::meter_core::IdempotencyWindow| $make,
                )
                .await;
            }
        )*
    };
}

const CATALOG: &str = r#"
[plans.free]
credits = 100
billing_interval = "month"
price_micros = 0

[plans.pro]
credits = 1000
billing_interval = "month"
price_micros = 29000000
"#;

struct World<S, A> {
    stats: ActivityStats<S, FixedClock>,
    subscriptions: Subscriptions<A, FixedClock>,
    clock: FixedClock,
}

async fn world<S, A, G, F, Fut>(make: F, now: &str) -> (World<S, A>, G)
where
    S: StatsStore,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (stats, accounts, guard) = make(window).await;
    let catalog = Arc::new(PlanCatalog::from_toml("contract", CATALOG).expect("catalog"));
    let clock = FixedClock::at(now);
    let world = World {
        stats: ActivityStats::new(stats, Arc::clone(&catalog), clock.clone()),
        subscriptions: Subscriptions::new(accounts, catalog, clock.clone()),
        clock,
    };
    (world, guard)
}

/// A ten-day streak, then a gap: the streak starts again and the longest
/// stays 10; many logins a day count once; the day is the user's local day
/// (in New York, 23:30 and 00:30 the next local day are two days, while
/// 23:30Z and 00:30Z are one New York evening).
pub async fn logins_count_each_local_day_once_and_streaks_run<S, A, G, F, Fut>(make: F)
where
    S: StatsStore,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (w, _guard) = world(make, "2026-05-01T08:00:00.000Z").await;
    let who = account("u-streak");
    for day in 0..10 {
        for hour in [0u64, 5, 9] {
            w.clock.set("2026-05-01T08:00:00.000Z");
            w.clock
                .advance(Duration::from_secs(day * 86_400 + hour * 3_600));
            let login = w
                .stats
                .record_login(who.clone(), None, "", None)
                .await
                .expect("login")
                .outcome;
            assert_eq!(login.first_login_today, hour == 0, "day {day} hour {hour}");
            assert_eq!(login.login_streak, i64::try_from(day).expect("small") + 1);
        }
    }
    w.clock.set("2026-05-13T08:00:00.000Z");
    let after_gap = w
        .stats
        .record_login(who.clone(), None, "UTC", None)
        .await
        .expect("login")
        .outcome;
    assert_eq!(
        (
            after_gap.days_active,
            after_gap.login_streak,
            after_gap.longest_streak
        ),
        (11, 1, 10)
    );

    let ny = "America/New_York";
    let login = |who, time: &str| w.stats.record_login(account(who), Some(at(time)), ny, None);
    w.clock.set("2026-06-02T12:00:00.000Z");
    // 23:30 and 00:30 New York time (EDT, UTC-4): two local days.
    assert!(
        login("u-ny", "2026-06-01T03:30:00.000Z")
            .await
            .expect("login")
            .outcome
            .first_login_today
    );
    let next = login("u-ny", "2026-06-01T04:30:00.000Z")
        .await
        .expect("login")
        .outcome;
    assert!(next.first_login_today);
    assert_eq!((next.days_active, next.login_streak), (2, 2));
    // 23:30Z and 00:30Z: 19:30 and 20:30 of one New York day.
    let first = login("u-ny-utc", "2026-06-01T23:30:00.000Z")
        .await
        .expect("login")
        .outcome;
    let second = login("u-ny-utc", "2026-06-02T00:30:00.000Z")
        .await
        .expect("login")
        .outcome;
    assert!(first.first_login_today && !second.first_login_today);
    assert_eq!(second.days_active, 1);

    let unknown = w
        .stats
        .record_login(who.clone(), None, "Mars/Olympus_Mons", None)
        .await;
    assert!(
        matches!(unknown, Err(MeterError::InvalidArgument(ref e)) if e.field == "time_zone"),
        "{unknown:?}"
    );
    let future = w
        .stats
        .record_login(who.clone(), Some(at("2026-07-01T00:00:00.000Z")), "", None)
        .await;
    assert!(
        matches!(future, Err(MeterError::InvalidArgument(ref e)) if e.field == "time"),
        "{future:?}"
    );
    let replayed = w
        .stats
        .record_login(who.clone(), None, "", key("login-1"))
        .await
        .expect("login");
    // A retry a moment later, still without a time: the same request.
    w.clock.advance(Duration::from_millis(250));
    let again = w
        .stats
        .record_login(who.clone(), None, "", key("login-1"))
        .await
        .expect("login");
    assert!(!replayed.replayed && again.replayed);
    assert_eq!(again.outcome, replayed.outcome);
    let zero = w
        .stats
        .record_login(who.clone(), Some(at("1970-01-01T00:00:00.000Z")), "", None)
        .await;
    assert!(
        matches!(zero, Err(MeterError::InvalidArgument(ref e)) if e.field == "time"),
        "an unset timestamp sent as zero: {zero:?}"
    );
    let any_case = w
        .stats
        .record_login(account("u-case"), None, "america/new_york", None)
        .await;
    assert!(any_case.is_ok(), "{any_case:?}");
}

/// Fifty logins of one instant: one is the first of the day, the day counts once.
pub async fn concurrent_logins_of_one_instant_count_once<S, A, G, F, Fut>(make: F)
where
    S: StatsStore,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (w, _guard) = world(make, "2026-05-01T08:00:00.000Z").await;
    let w = Arc::new(w);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let w = Arc::clone(&w);
            tokio::spawn(async move {
                w.stats
                    .record_login(account("u-race"), None, "Europe/Paris", None)
                    .await
                    .expect("login")
                    .outcome
            })
        })
        .collect();
    let mut firsts = 0;
    for call in calls {
        let outcome = call.await.expect("task");
        firsts += usize::from(outcome.first_login_today);
        assert_eq!(outcome.days_active, 1);
    }
    assert_eq!(firsts, 1);
    let view = w.stats.get(&account("u-race")).await.expect("read");
    assert_eq!(view.stats.days_active, 1);
}

/// Each conversation id counts once; the recent list keeps the newest
/// three by time, whatever order they come in.
pub async fn conversations_count_once_and_the_recent_list_keeps_the_newest<S, A, G, F, Fut>(make: F)
where
    S: StatsStore,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (w, _guard) = world(make, "2026-05-10T00:00:00.000Z").await;
    let who = account("u-talk");
    let record = |id: &str, time: &str| {
        let (id, time) = (id.to_owned(), at(time));
        let w = &w;
        let who = who.clone();
        async move {
            w.stats
                .record_conversation(
                    who,
                    &id,
                    &format!("Title {id}"),
                    "A summary,\nwith lines",
                    Some(time),
                    None,
                )
                .await
                .expect("record")
                .outcome
        }
    };
    record("c1", "2026-05-01T10:00:00.000Z").await;
    record("c2", "2026-05-03T10:00:00.000Z").await;
    record("c3", "2026-05-02T10:00:00.000Z").await;
    let (counted, _) = record("c2", "2026-05-03T10:00:00.000Z").await;
    assert!(!counted, "the same id counts once");
    record("c4", "2026-05-04T10:00:00.000Z").await;
    // A retry without a time, a moment later, with its key: a replay.
    let retry = || {
        w.stats
            .record_conversation(who.clone(), "c5", "t", "", None, key("conv-5"))
    };
    let first = retry().await.expect("record");
    w.clock.advance(Duration::from_millis(250));
    let again = retry().await.expect("retry");
    assert!(again.replayed && !first.replayed);
    let (counted, view) = record("c0", "2026-04-30T10:00:00.000Z").await;
    assert!(counted, "older than every one kept: counted, not listed");
    assert_eq!(view.stats.conversations, 6);
    let ids: Vec<&str> = view.stats.recent.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c5", "c4", "c2"], "the newest three, newest first");
    assert_eq!(view.stats.recent[1].title, "Title c4");
    assert_eq!(view.stats.recent[1].summary, "A summary,\nwith lines");
    let read = w.stats.get(&who).await.expect("read");
    assert_eq!(read.stats, view.stats);
    let bad = w
        .stats
        .record_conversation(who.clone(), "c 9", "t", "", None, None)
        .await;
    assert!(
        matches!(bad, Err(MeterError::InvalidArgument(ref e)) if e.field == "conversation_id"),
        "{bad:?}"
    );
    let long = w
        .stats
        .record_conversation(who.clone(), "c9", &"t".repeat(201), "", None, None)
        .await;
    assert!(
        matches!(long, Err(MeterError::InvalidArgument(ref e)) if e.field == "title"),
        "{long:?}"
    );
    assert_eq!(
        w.stats.get(&who).await.expect("read").stats.conversations,
        6
    );
}

/// Mood scores keep one decimal; NaN, infinities and out-of-range scores
/// are refused and leave the mood as it was; a reset starts over (the
/// conversation ids seen forgotten).
pub async fn moods_keep_one_decimal_and_a_reset_starts_over<S, A, G, F, Fut>(make: F)
where
    S: StatsStore,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (w, _guard) = world(make, "2026-05-10T00:00:00.000Z").await;
    let who = account("u-mood");
    let set = w
        .stats
        .set_mood(who.clone(), Some(7.25), None)
        .await
        .expect("mood")
        .outcome;
    assert_eq!(
        set.stats.mood_tenths,
        Some(73),
        "7.25 keeps one decimal: 7.3"
    );
    for bad in [
        None,
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(-0.1),
        Some(10.05),
        Some(11.0),
    ] {
        let refused = w.stats.set_mood(who.clone(), bad, None).await;
        assert!(
            matches!(refused, Err(MeterError::InvalidArgument(ref e)) if e.field == "score"),
            "{bad:?}: {refused:?}"
        );
    }
    for edge in [0.0, 10.0] {
        w.stats
            .set_mood(who.clone(), Some(edge), None)
            .await
            .expect("edge");
    }
    assert_eq!(
        w.stats.get(&who).await.expect("read").stats.mood_tenths,
        Some(100)
    );
    w.stats
        .record_conversation(who.clone(), "c1", "t", "", None, None)
        .await
        .expect("record");
    w.stats
        .record_login(who.clone(), None, "", None)
        .await
        .expect("login");
    let reset = w
        .stats
        .reset(who.clone(), None)
        .await
        .expect("reset")
        .outcome;
    assert_eq!(reset.stats, meter_core::Stats::default());
    assert_eq!(
        w.stats.get(&who).await.expect("read").stats,
        meter_core::Stats::default()
    );
    let (counted, _) = w
        .stats
        .record_conversation(who.clone(), "c1", "t", "", None, None)
        .await
        .expect("record")
        .outcome;
    assert!(counted, "after a reset the id counts again");
    assert!(
        w.subscriptions.delete_account(&who).await.expect("delete"),
        "an account with stats only had something to delete"
    );
    let reset_only = account("u-reset-only");
    w.stats
        .reset(reset_only.clone(), None)
        .await
        .expect("reset");
    assert!(
        !w.subscriptions
            .delete_account(&reset_only)
            .await
            .expect("delete"),
        "a reset leaves nothing behind"
    );
    assert_eq!(
        w.stats.get(&who).await.expect("read").stats,
        meter_core::Stats::default()
    );
    let (counted, _) = w
        .stats
        .record_conversation(who.clone(), "c1", "t", "", None, None)
        .await
        .expect("record")
        .outcome;
    assert!(counted, "the ids seen went with the account");
}

/// The plan of GetStats is the subscription's, read with the stats.
pub async fn the_plan_follows_the_subscription<S, A, G, F, Fut>(make: F)
where
    S: StatsStore,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (w, _guard) = world(make, "2026-05-10T00:00:00.000Z").await;
    let who = account("u-plan");
    assert_eq!(w.stats.get(&who).await.expect("read").plan, "free");
    let pro = SubscriptionRequest {
        plan: "pro".into(),
        status: Some(SubscriptionStatus::Active),
        period_start: Some(at("2026-05-10T00:00:00.000Z")),
        period_end: Some(at("2026-06-10T00:00:00.000Z")),
        ..SubscriptionRequest::default()
    };
    w.subscriptions
        .update(who.clone(), pro, None, None)
        .await
        .expect("upgrade");
    assert_eq!(w.stats.get(&who).await.expect("read").plan, "pro");
    let mood = w
        .stats
        .set_mood(who.clone(), Some(5.0), None)
        .await
        .expect("mood")
        .outcome;
    assert_eq!(
        mood.plan, "pro",
        "a mutation answers the plan, read in the same step"
    );
    w.clock.advance(Duration::from_secs(60));
    w.subscriptions
        .cancel(who.clone(), false, String::new(), None, None)
        .await
        .expect("cancel");
    assert_eq!(w.stats.get(&who).await.expect("read").plan, "free");
}
