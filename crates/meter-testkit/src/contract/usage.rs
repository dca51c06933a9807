//! The behaviour every [`UsageStore`] must show, run by
//! [`usage_store_contract!`](crate::usage_store_contract) with the fixed clock.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use meter_core::{
    CheckQuota, EventOutcome, MetricKind, RecordUsage, Timestamp, UsageEvent, UsagePeriod,
    UsageStore,
};

use super::account;
use crate::timestamp as at;

/// Runs every usage-store contract test against the `(store, guard)` that
/// `$make` (an async block) yields.
#[macro_export]
macro_rules! usage_store_contract {
    ($make:expr) => {
        $crate::usage_store_contract!(@each $make;
            events_count_once_into_their_month_and_day,
            gauges_keep_the_peak_and_periods_expire,
            racing_callers_never_both_take_the_last_unit,
            closed_months_are_rejected_and_strict_metrics_refused,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
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
        dedupe_window: DAY,
        month_retention: 90 * DAY,
        day_retention: 35 * DAY,
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
