//! The behaviour every [`UsageStore`] must show, run by
//! [`usage_store_contract!`](crate::usage_store_contract) with the fixed clock.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use meter_core::{
    AccountStore, CheckQuota, Consumer, EventLogPage, EventOutcome, MetricKind, RecordUsage,
    Timestamp, UsageEvent, UsagePeriod, UsageRetention, UsageStore,
};

use super::account;
use crate::timestamp as at;

/// Runs every usage-store contract test against the `(usage, accounts,
/// guard)` that `$make` (an async block) yields: the usage store and the
/// account store of one backing store.
#[macro_export]
macro_rules! usage_store_contract {
    ($make:expr) => {
        $crate::usage_store_contract!(@usage $make;
            events_count_once_into_their_month_and_day,
            gauges_keep_the_peak_and_periods_expire,
            racing_callers_never_both_take_the_last_unit,
            closed_months_are_rejected_and_strict_metrics_refused,
        );
        $crate::usage_store_contract!(@accounts $make;
            rankings_follow_usage_and_leave_with_the_account,
            the_event_log_keeps_events_with_metadata_newest_first,
        );
    };
    (@usage $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::usage::$name(|| async {
                    let (usage, _accounts, guard) = $make.await;
                    (usage, guard)
                })
                .await;
            }
        )*
    };
    (@accounts $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::usage::$name(|| $make).await;
            }
        )*
    };
}

const DAY: Duration = Duration::from_secs(86_400);

fn event(who: &str, metric: &str, value: i64, id: &str, time: &str) -> UsageEvent {
    UsageEvent {
        account: account(who),
        metric: metric.to_owned(),
        value,
        event_id: id.to_owned(),
        time: at(time),
        metadata: BTreeMap::new(),
    }
}

fn batch(who: &str, events: Vec<(UsageEvent, MetricKind)>) -> RecordUsage {
    RecordUsage {
        account: account(who),
        events,
        retention: UsageRetention {
            dedupe_window: DAY,
            ..UsageRetention::default()
        },
    }
}

/// Each event id counts once within the window (in one batch or across
/// calls); counters add into the event's UTC month and day, and the month
/// equals the sum of its days, across a rollover at UTC midnight.
pub async fn events_count_once_into_their_month_and_day<S, G, F, Fut>(make: F)
where
    S: UsageStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (store, _guard) = make().await;
    let now = at("2026-12-31T23:59:00.000Z");
    let sum = MetricKind::Sum;
    let outcomes = store
        .record(
            &batch(
                "u-use",
                vec![
                    (
                        event("u-use", "api_request", 5, "e1", "2026-12-31T23:59:59.999Z"),
                        sum,
                    ),
                    (
                        event("u-use", "api_request", 7, "e2", "2027-01-01T00:00:00.000Z"),
                        sum,
                    ),
                    (
                        event("u-use", "api_request", 5, "e1", "2026-12-31T23:59:59.999Z"),
                        sum,
                    ),
                    (
                        event("u-use", "email_sent", 2, "e3", "2026-12-30T10:00:00.000Z"),
                        sum,
                    ),
                ],
            ),
            now,
        )
        .await
        .expect("record");
    assert_eq!(
        outcomes,
        [
            EventOutcome::Recorded {
                month_total: 5,
                day_total: 5
            },
            EventOutcome::Recorded {
                month_total: 7,
                day_total: 7
            },
            EventOutcome::Duplicate,
            EventOutcome::Recorded {
                month_total: 2,
                day_total: 2
            },
        ],
        "the rollover at UTC midnight starts January"
    );
    let again = store
        .record(
            &batch(
                "u-use",
                vec![(
                    event("u-use", "api_request", 5, "e1", "2026-12-31T23:59:59.999Z"),
                    sum,
                )],
            ),
            now,
        )
        .await
        .expect("record");
    assert_eq!(again, [EventOutcome::Duplicate], "across calls too");
    // A total past 2^53 - 1 is rejected, and the event's id stays free.
    let big = store
        .record(
            &batch(
                "u-use",
                vec![
                    (
                        event(
                            "u-use",
                            "tokens",
                            meter_core::MAX_CREDITS,
                            "t1",
                            "2026-12-30T10:00:00.000Z",
                        ),
                        sum,
                    ),
                    (
                        event("u-use", "tokens", 1, "t2", "2026-12-30T10:00:00.000Z"),
                        sum,
                    ),
                ],
            ),
            now,
        )
        .await
        .expect("record");
    assert!(matches!(big[0], EventOutcome::Recorded { .. }));
    assert!(matches!(big[1], EventOutcome::Rejected(_)), "{big:?}");
    let period = |text| UsagePeriod::parse("period", text).expect("period");
    let december = store
        .usage(&account("u-use"), period("2026-12"), now)
        .await
        .expect("read");
    assert_eq!(
        december,
        BTreeMap::from([
            ("api_request".to_owned(), 5),
            ("email_sent".to_owned(), 2),
            ("tokens".to_owned(), meter_core::MAX_CREDITS),
        ])
    );
    let mut days = BTreeMap::new();
    for day in ["2026-12-30", "2026-12-31"] {
        for (metric, value) in store
            .usage(&account("u-use"), period(day), now)
            .await
            .expect("read")
        {
            *days.entry(metric).or_insert(0) += value;
        }
    }
    assert_eq!(days, december, "the month is the sum of its days");
    // Past the window, the id counts again.
    let later = Timestamp::from_millis(now.as_millis() + 2 * 86_400_000).expect("time");
    let renewed = store
        .record(
            &batch(
                "u-use",
                vec![(
                    event("u-use", "api_request", 1, "e1", "2027-01-02T00:00:00.000Z"),
                    sum,
                )],
            ),
            later,
        )
        .await
        .expect("record");
    assert_eq!(
        renewed,
        [EventOutcome::Recorded {
            month_total: 8,
            day_total: 1
        }]
    );
}

/// A gauge keeps the period's peak, not the sum; a period is forgotten
/// after its retention.
pub async fn gauges_keep_the_peak_and_periods_expire<S, G, F, Fut>(make: F)
where
    S: UsageStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (store, _guard) = make().await;
    let now = at("2026-06-15T12:00:00.000Z");
    let max = MetricKind::Max;
    let outcomes = store
        .record(
            &batch(
                "u-gauge",
                vec![
                    (
                        event(
                            "u-gauge",
                            "storage_gb",
                            40,
                            "s1",
                            "2026-06-01T00:00:00.000Z",
                        ),
                        max,
                    ),
                    (
                        event(
                            "u-gauge",
                            "storage_gb",
                            62,
                            "s2",
                            "2026-06-10T00:00:00.000Z",
                        ),
                        max,
                    ),
                    (
                        event(
                            "u-gauge",
                            "storage_gb",
                            55,
                            "s3",
                            "2026-06-15T00:00:00.000Z",
                        ),
                        max,
                    ),
                ],
            ),
            now,
        )
        .await
        .expect("record");
    assert_eq!(
        outcomes.last(),
        Some(&EventOutcome::Recorded {
            month_total: 62,
            day_total: 55
        })
    );
    let june = UsagePeriod::parse("period", "2026-06").expect("period");
    let read = store
        .usage(&account("u-gauge"), june, now)
        .await
        .expect("read");
    assert_eq!(read.get("storage_gb"), Some(&62));
    // 90 days after June ends, June is gone.
    let after = Timestamp::parse("2026-09-29T00:00:01.000Z").expect("time");
    let gone = store
        .usage(&account("u-gauge"), june, after)
        .await
        .expect("read");
    assert!(gone.is_empty(), "{gone:?}");
}

/// A quota check of `u-quota` consuming one SMS as the event `take-<i>`.
fn take_one_sms(catalog: &Arc<meter_core::PlanCatalog>, i: usize) -> CheckQuota {
    CheckQuota {
        account: account("u-quota"),
        metric: "sms".into(),
        kind: MetricKind::Sum,
        amount: 1,
        catalog: Arc::clone(catalog),
        consume: Some(batch(
            "u-quota",
            vec![(
                event(
                    "u-quota",
                    "sms",
                    1,
                    &format!("take-{i}"),
                    "2026-03-10T12:00:00.000Z",
                ),
                MetricKind::Sum,
            )],
        )),
    }
}

/// 100 callers racing for the last 10 units of a hard limit: exactly 10 take one.
pub async fn racing_callers_never_both_take_the_last_unit<S, G, F, Fut>(make: F)
where
    S: UsageStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (store, _guard) = make().await;
    let now = at("2026-03-10T12:00:00.000Z");
    let sum = MetricKind::Sum;
    store
        .record(
            &batch(
                "u-quota",
                vec![(
                    event("u-quota", "sms", 90, "seed", "2026-03-01T00:00:00.000Z"),
                    sum,
                )],
            ),
            now,
        )
        .await
        .expect("seed");
    let store = Arc::new(store);
    // The free plan (the account has no subscription) allows 100 SMS, hard.
    let catalog = Arc::new(
        meter_core::PlanCatalog::from_toml(
            "contract",
            "[plans.free]\ncredits = 1\nbilling_interval = \"month\"\nprice_micros = 0\n\
             [plans.free.usage.sms]\nincluded = 100\n",
        )
        .expect("catalog"),
    );
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = Arc::clone(&store);
            let catalog = Arc::clone(&catalog);
            tokio::spawn(async move {
                let request = take_one_sms(&catalog, i);
                store.check_quota(&request, now).await.expect("quota")
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        let meter_core::QuotaOutcome {
            plan,
            decision,
            consumed: outcome,
        } = task.await.expect("task");
        assert_eq!((plan.as_str(), decision.limit), ("free", Some(100)));
        if decision.allowed {
            allowed += 1;
            assert!(matches!(outcome, Some(EventOutcome::Recorded { .. })));
        } else {
            assert_eq!(outcome, None, "a refused call records nothing");
        }
    }
    assert_eq!(allowed, 10);
    let march = UsagePeriod::parse("period", "2026-03").expect("period");
    let read = store
        .usage(&account("u-quota"), march, now)
        .await
        .expect("read");
    assert_eq!(read.get("sms"), Some(&100));
    // A retry of a call that took a unit, at the limit: allowed, nothing taken.
    for i in 0..100 {
        let retry = take_one_sms(&catalog, i);
        let outcome = store.check_quota(&retry, now).await.expect("retry");
        if outcome.consumed == Some(EventOutcome::Duplicate) {
            assert!(
                outcome.decision.allowed,
                "a retry of a taken unit is allowed"
            );
        } else {
            assert!(!outcome.decision.allowed, "the others are still refused");
        }
    }
    let read = store
        .usage(&account("u-quota"), march, now)
        .await
        .expect("read");
    assert_eq!(read.get("sms"), Some(&100), "retries took nothing");
}

/// Through the use cases: an event of a month closed longer ago than the
/// grace is rejected (and nothing written) while the rest of the call is
/// recorded; in strict mode an undeclared metric refuses the whole call,
/// naming the event's index.
pub async fn closed_months_are_rejected_and_strict_metrics_refused<S, G, F, Fut>(make: F)
where
    S: UsageStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
{
    use meter_core::{MeterError, PlanCatalog, RawUsageEvent, Usage, UsageSettings};

    let (store, _guard) = make().await;
    let catalog = Arc::new(
        PlanCatalog::from_toml(
            "contract",
            "[metrics.api_request]\n[plans.free]\ncredits = 1\nbilling_interval = \"month\"\nprice_micros = 0\n",
        )
        .expect("catalog"),
    );
    let clock = crate::FixedClock::at("2026-12-03T00:00:00.000Z");
    let strict = UsageSettings {
        strict_metrics: true,
        ..UsageSettings::default()
    };
    let usage = Usage::new(store, catalog, clock, strict);
    let raw = |id: &str, metric: &str, time: &str| RawUsageEvent {
        account_id: "u-grace".into(),
        metric: metric.into(),
        value: 1,
        event_id: id.into(),
        time: Some(at(time)),
        metadata: BTreeMap::new(),
    };
    let outcomes = usage
        .record(vec![
            raw("old", "api_request", "2026-10-31T12:00:00.000Z"),
            raw("late", "api_request", "2026-11-30T12:00:00.000Z"),
            raw("now", "api_request", "2026-12-02T12:00:00.000Z"),
        ])
        .await
        .expect("record");
    assert!(matches!(outcomes[0], EventOutcome::Rejected(ref why) if why.contains("2026-10")));
    assert!(
        matches!(outcomes[1], EventOutcome::Recorded { .. }),
        "November is within the grace"
    );
    assert!(matches!(outcomes[2], EventOutcome::Recorded { .. }));
    let (_, october) = usage
        .usage(&account("u-grace"), "2026-10", &[])
        .await
        .expect("read");
    assert!(october.is_empty(), "the rejected event wrote nothing");
    let strictly = usage
        .record(vec![
            raw("a", "api_request", "2026-12-02T12:00:00.000Z"),
            raw("b", "sms", "2026-12-02T12:00:00.000Z"),
        ])
        .await;
    assert!(
        matches!(strictly, Err(MeterError::InvalidArgument(ref e)) if e.field == "events[1].metric"),
        "{strictly:?}"
    );
    let (_, december) = usage
        .usage(&account("u-grace"), "2026-12", &[])
        .await
        .expect("read");
    assert_eq!(
        december.get("api_request"),
        Some(&1),
        "the refused call wrote nothing"
    );
}

/// The ranking of `metric` in `period` (text) as (account, used) pairs.
async fn ranking<S: UsageStore>(
    store: &S,
    metric: &str,
    period: &str,
    limit: usize,
    now: Timestamp,
) -> Vec<(String, i64)> {
    let period = UsagePeriod::parse("period", period).expect("period");
    store
        .top_consumers(metric, period, limit, now)
        .await
        .expect("top consumers")
        .into_iter()
        .map(|Consumer { account, used }| (account.to_string(), used))
        .collect()
}

/// Every metric and period ranks its consumers by their totals (a gauge
/// by its peak), highest first, ties by account id descending; duplicates
/// and rejected events change nothing; units a quota check consumes count;
/// a deleted account leaves every ranking.
pub async fn rankings_follow_usage_and_leave_with_the_account<S, A, G, F, Fut>(make: F)
where
    S: UsageStore,
    A: AccountStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (store, accounts, _guard) = make().await;
    let now = at("2026-03-10T12:00:00.000Z");
    let (sum, max) = (MetricKind::Sum, MetricKind::Max);
    let time = "2026-03-10T11:00:00.000Z";
    for (who, events) in [
        (
            "a-1",
            vec![
                (event("a-1", "api_request", 5, "r1", time), sum),
                (event("a-1", "storage", 100, "s1", time), max),
                (event("a-1", "storage", 40, "s2", time), max),
            ],
        ),
        (
            "a-2",
            vec![(event("a-2", "api_request", 9, "r1", time), sum)],
        ),
        (
            "a-3",
            vec![(event("a-3", "api_request", 5, "r1", time), sum)],
        ),
        (
            "a-1",
            vec![(
                event("a-1", "api_request", 4, "r2", "2026-03-09T23:00:00.000Z"),
                sum,
            )],
        ),
        (
            "a-2",
            vec![
                // A duplicate raises nothing.
                (event("a-2", "api_request", 50, "r1", time), sum),
                (event("a-2", "storage", 70, "s1", time), max),
            ],
        ),
    ] {
        store
            .record(&batch(who, events), now)
            .await
            .expect("record");
    }
    let pairs = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
        list.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect()
    };
    assert_eq!(
        ranking(&store, "api_request", "2026-03", 10, now).await,
        pairs(&[("a-2", 9), ("a-1", 9), ("a-3", 5)]),
        "by total, ties by account id descending"
    );
    assert_eq!(
        ranking(&store, "api_request", "2026-03", 2, now).await,
        pairs(&[("a-2", 9), ("a-1", 9)])
    );
    assert_eq!(
        ranking(&store, "api_request", "2026-03-10", 10, now).await,
        pairs(&[("a-2", 9), ("a-3", 5), ("a-1", 5)]),
        "a day ranks that day's usage"
    );
    assert_eq!(
        ranking(&store, "api_request", "2026-03-09", 10, now).await,
        pairs(&[("a-1", 4)])
    );
    assert_eq!(
        ranking(&store, "storage", "2026-03", 10, now).await,
        pairs(&[("a-1", 100), ("a-2", 70)]),
        "a gauge ranks by its peak"
    );
    assert!(
        ranking(&store, "api_request", "2026-02", 10, now)
            .await
            .is_empty()
    );
    assert!(
        ranking(&store, "email_sent", "2026-03", 10, now)
            .await
            .is_empty()
    );
    // Units a quota check consumes are usage like any other.
    let catalog = Arc::new(
        meter_core::PlanCatalog::from_toml(
            "contract",
            "[plans.free]\ncredits = 1\nbilling_interval = \"month\"\nprice_micros = 0\n\
             [plans.free.usage.sms]\nincluded = 100\n",
        )
        .expect("catalog"),
    );
    let taken = store
        .check_quota(&take_one_sms(&catalog, 0), now)
        .await
        .expect("quota");
    assert!(taken.decision.allowed);
    assert_eq!(
        ranking(&store, "sms", "2026-03", 10, now).await,
        pairs(&[("u-quota", 1)])
    );
    assert!(
        accounts
            .delete_account(&account("a-2"))
            .await
            .expect("delete")
    );
    assert_eq!(
        ranking(&store, "api_request", "2026-03", 10, now).await,
        pairs(&[("a-1", 9), ("a-3", 5)]),
        "a deleted account leaves the rankings"
    );
    assert_eq!(
        ranking(&store, "storage", "2026-03", 10, now).await,
        pairs(&[("a-1", 100)])
    );
    assert_eq!(
        ranking(&store, "api_request", "2026-03-10", 10, now).await,
        pairs(&[("a-3", 5), ("a-1", 5)])
    );
}

/// A page of `who`'s log as (event id, metric) pairs, and the next cursor.
async fn log_page<S: UsageStore>(
    store: &S,
    who: &str,
    metric: Option<&str>,
    before: Option<String>,
    size: usize,
    retention: UsageRetention,
    now: Timestamp,
) -> (Vec<String>, Option<String>) {
    let page = EventLogPage {
        metric: metric.map(str::to_owned),
        before,
        size,
        retention,
    };
    let (events, next) = store
        .events(&account(who), &page, now)
        .await
        .expect("events");
    (events.into_iter().map(|e| e.event.event_id).collect(), next)
}

/// Events that carry metadata are logged as recorded (duplicates and
/// rejected events are not), read newest first page by page, of one
/// metric or all; the log shows at most its newest `log_entries` and
/// nothing older than `log_age`, and goes with the account.
pub async fn the_event_log_keeps_events_with_metadata_newest_first<S, A, G, F, Fut>(make: F)
where
    S: UsageStore,
    A: AccountStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, A, G)>,
{
    let (store, accounts, _guard) = make().await;
    let retention = UsageRetention {
        dedupe_window: DAY,
        log_entries: 5,
        log_age: 30 * DAY,
        ..UsageRetention::default()
    };
    let first_call = at("2026-03-01T10:00:00.000Z");
    let with_meta = |id: &str, metric: &str, note: &str| {
        let mut e = event("u-log", metric, 1, id, "2026-03-01T09:00:00.000Z");
        e.metadata = BTreeMap::from([
            ("note".to_owned(), note.to_owned()),
            ("route".to_owned(), "/v1/chat".to_owned()),
        ]);
        (e, MetricKind::Sum)
    };
    let request = RecordUsage {
        account: account("u-log"),
        events: vec![
            with_meta("m1", "api_request", "first"),
            (
                event(
                    "u-log",
                    "api_request",
                    1,
                    "plain",
                    "2026-03-01T09:00:00.000Z",
                ),
                MetricKind::Sum,
            ),
            with_meta("m2", "email_sent", "naïve ✓ | \"quoted\""),
            // A duplicate is not logged again.
            with_meta("m1", "api_request", "again"),
        ],
        retention,
    };
    store.record(&request, first_call).await.expect("record");
    let second_call = at("2026-03-11T10:00:00.000Z");
    let request = RecordUsage {
        events: vec![
            with_meta("m3", "api_request", "3"),
            with_meta("m4", "api_request", "4"),
            with_meta("m5", "email_sent", "5"),
        ],
        ..request
    };
    store.record(&request, second_call).await.expect("record");
    let page = EventLogPage {
        metric: None,
        before: None,
        size: 10,
        retention,
    };
    let (all, next) = store
        .events(&account("u-log"), &page, second_call)
        .await
        .expect("events");
    let ids: Vec<&str> = all.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["m5", "m4", "m3", "m2", "m1"], "newest first");
    assert_eq!(next, None);
    let m2 = &all[3];
    assert_eq!(m2.event.metric, "email_sent");
    assert_eq!(m2.event.value, 1);
    assert_eq!(m2.event.time, at("2026-03-01T09:00:00.000Z"));
    assert_eq!(m2.recorded_at, first_call);
    assert_eq!(
        m2.event.metadata.get("note").map(String::as_str),
        Some("naïve ✓ | \"quoted\""),
        "metadata comes back as sent"
    );
    assert_eq!(all[0].recorded_at, second_call);
    // Page by page, and by metric.
    let (first, next) = log_page(&store, "u-log", None, None, 2, retention, second_call).await;
    assert_eq!(first, ["m5", "m4"]);
    let (second, next) = log_page(&store, "u-log", None, next, 2, retention, second_call).await;
    assert_eq!(second, ["m3", "m2"]);
    let (third, next) = log_page(&store, "u-log", None, next, 2, retention, second_call).await;
    assert_eq!((third, next), (vec!["m1".to_owned()], None));
    let (api, next) = log_page(
        &store,
        "u-log",
        Some("api_request"),
        None,
        2,
        retention,
        second_call,
    )
    .await;
    assert_eq!(api, ["m4", "m3"]);
    let (api, next) = log_page(
        &store,
        "u-log",
        Some("api_request"),
        next,
        2,
        retention,
        second_call,
    )
    .await;
    assert_eq!((api, next), (vec!["m1".to_owned()], None));
    // Nothing older than `log_age`.
    let (kept, _) = log_page(
        &store,
        "u-log",
        None,
        None,
        10,
        retention,
        at("2026-04-01T10:00:00.000Z"),
    )
    .await;
    assert_eq!(
        kept,
        ["m5", "m4", "m3"],
        "the first call's events are past it"
    );
    // At most the newest `log_entries`.
    let request = RecordUsage {
        events: (6..=9)
            .map(|i| with_meta(&format!("m{i}"), "api_request", "more"))
            .collect(),
        ..request
    };
    store.record(&request, second_call).await.expect("record");
    let (newest, _) = log_page(&store, "u-log", None, None, 10, retention, second_call).await;
    assert_eq!(newest, ["m9", "m8", "m7", "m6", "m5"]);
    let later = at("2026-04-05T10:00:00.000Z");
    let (kept, _) = log_page(&store, "u-log", None, None, 10, retention, later).await;
    assert_eq!(kept, ["m9", "m8", "m7", "m6", "m5"]);
    let much_later = at("2026-04-12T10:00:00.000Z");
    let (kept, _) = log_page(&store, "u-log", None, None, 10, retention, much_later).await;
    assert!(kept.is_empty(), "{kept:?}");
    let (other, _) = log_page(&store, "u-other", None, None, 10, retention, second_call).await;
    assert!(other.is_empty());
    accounts
        .delete_account(&account("u-log"))
        .await
        .expect("delete");
    let (gone, _) = log_page(&store, "u-log", None, None, 10, retention, second_call).await;
    assert!(gone.is_empty(), "the log goes with the account: {gone:?}");
}
