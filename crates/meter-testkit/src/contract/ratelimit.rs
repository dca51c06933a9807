//! The behaviour every [`RateLimitStore`] must show, run by
//! [`rate_limit_store_contract!`](crate::rate_limit_store_contract) with
//! the fixed clock: the algorithms' answers exactly as
//! `meter_ratelimit::algorithm` computes them, exact under concurrency,
//! and a refused request counting nothing.

use std::{future::Future, sync::Arc, time::Duration};

use meter_ratelimit::{Algorithm, Check, Limit, Outcome, RateLimitStore, State};

use crate::FixedClock;

/// Runs every rate-limit-store contract test against the `(store, guard)`
/// that `$make` (a closure from a [`FixedClock`] to an async block) yields.
#[macro_export]
macro_rules! rate_limit_store_contract {
    ($make:expr) => {
        $crate::rate_limit_store_contract!(@tests $make;
            every_algorithm_answers_as_the_reference_model,
            shadow_and_look_only_checks_keep_the_state_exact,
            a_clock_stepped_back_never_hands_out_a_fresh_limit,
            racing_checks_admit_exactly_the_limit,
            a_refused_request_counts_none_of_its_checks,
            the_sliding_window_never_admits_more_than_the_limit_across_an_edge,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::ratelimit::$name($make).await;
            }
        )*
    };
}

const SECOND: Duration = Duration::from_secs(1);

fn limit(requests: u64, window: Duration, algorithm: Algorithm) -> Limit {
    Limit::new(requests, window, algorithm).expect("valid test limit")
}

fn check(key: &str, limit: Limit, cost: u64) -> Check {
    Check {
        key: key.to_owned(),
        limit,
        cost,
        enforce: true,
    }
}

async fn one<S: RateLimitStore>(store: &S, check: Check) -> Outcome {
    let outcomes = store.check(vec![check]).await.expect("store answers");
    assert_eq!(outcomes.len(), 1);
    outcomes[0]
}

/// A reproducible pseudo-random sequence (xorshift), so both stores meet
/// the same steps.
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Each algorithm, checked at irregular times with irregular costs, answers
/// exactly what the reference state machine answers: allowed, remaining,
/// reset and retry, to the microsecond.
pub async fn every_algorithm_answers_as_the_reference_model<S, G, F>(make: impl Fn(FixedClock) -> F)
where
    S: RateLimitStore,
    F: Future<Output = (S, G)>,
{
    let clock = FixedClock::at("2026-03-10T12:00:00.250Z");
    let (store, _guard) = make(clock.clone()).await;
    for (algorithm, requests, window) in [
        (Algorithm::SlidingWindow, 7, Duration::from_millis(1_500)),
        (Algorithm::SlidingWindow, 3, Duration::from_secs(60)),
        (Algorithm::FixedWindow, 5, Duration::from_millis(700)),
        (Algorithm::TokenBucket, 7, Duration::from_secs(1)),
        (Algorithm::TokenBucket, 4, Duration::from_secs(60)),
    ] {
        let limit = limit(requests, window, algorithm);
        let key = format!("model:{algorithm:?}:{requests}:{}", window.as_millis());
        let mut model = State::new(algorithm);
        let mut steps = Steps(0x9E37_79B9_7F4A_7C15 ^ requests);
        let mut admitted = 0;
        for step in 0..300 {
            clock.advance(Duration::from_millis(
                steps.next(window.as_millis() as u64 / 3 + 2),
            ));
            let cost = 1 + steps.next(requests.min(3));
            // Some checks in shadow mode: alone in their request, they
            // answer and count as enforced ones do.
            let enforce = steps.next(4) != 0;
            let now = u64::try_from(meter_core::Clock::now(&clock).as_millis())
                .expect("after 1970")
                * 1_000;
            let (mut expected, at) = model.evaluate(&limit, cost, now);
            if expected.allowed {
                expected = model.commit(&limit, cost, at);
                admitted += 1;
            }
            let got = one(
                &store,
                Check {
                    enforce,
                    ..check(&key, limit, cost)
                },
            )
            .await;
            assert_eq!(
                got, expected,
                "{algorithm:?} {requests}/{window:?}, step {step}, cost {cost}"
            );
        }
        assert!(
            admitted > 10,
            "{algorithm:?}: the steps admit some ({admitted})"
        );
    }
}

/// A refused check in shadow mode within an admitted request, and a check
/// that only looks (cost 0), after buckets left the window: neither counts,
/// and the enforced checks after them still never admit more than the
/// limit in a window. A key checked with another window is another count.
pub async fn shadow_and_look_only_checks_keep_the_state_exact<S, G, F>(
    make: impl Fn(FixedClock) -> F,
) where
    S: RateLimitStore,
    F: Future<Output = (S, G)>,
{
    let clock = FixedClock::at("2026-03-10T12:00:00.000Z");
    let (store, _guard) = make(clock.clone()).await;
    let sliding = limit(3, 60 * SECOND, Algorithm::SlidingWindow);
    for _ in 0..3 {
        assert!(one(&store, check("{s}k", sliding, 1)).await.allowed);
        clock.advance(10 * SECOND);
    }
    // 12:00:30 -> 12:01:01: the bucket of 12:00:00 has left the window.
    clock.advance(31 * SECOND);
    let shadow = Check {
        enforce: false,
        ..check("{s}k", sliding, 2)
    };
    let outcomes = store
        .check(vec![check("{s}other", sliding, 1), shadow])
        .await
        .expect("store answers");
    assert!(outcomes[0].allowed && !outcomes[1].allowed, "{outcomes:?}");
    let look = one(&store, check("{s}k", sliding, 0)).await;
    assert!(look.allowed && look.remaining == 1, "{look:?}");
    clock.advance(SECOND);
    assert!(
        one(&store, check("{s}k", sliding, 1)).await.allowed,
        "12:00:10's unit is still in"
    );
    clock.advance(SECOND);
    let refused = one(&store, check("{s}k", sliding, 1)).await;
    assert!(!refused.allowed, "3 units since 12:00:10: {refused:?}");
    assert_eq!(
        refused.retry_after_us, 7_000_000,
        "12:00:10's unit leaves at 12:01:10"
    );
    let other_window = limit(3, 30 * SECOND, Algorithm::SlidingWindow);
    assert_eq!(
        one(&store, check("{s}k", other_window, 1)).await.remaining,
        2
    );
}

/// A clock stepped back (a failover to a Redis whose clock is behind)
/// counts as the latest time seen: a fixed window keeps counting in the
/// window it counted, even after a look from the next one; a sliding
/// window forgets only the buckets that had left the window.
pub async fn a_clock_stepped_back_never_hands_out_a_fresh_limit<S, G, F>(
    make: impl Fn(FixedClock) -> F,
) where
    S: RateLimitStore,
    F: Future<Output = (S, G)>,
{
    let clock = FixedClock::at("2026-03-10T12:00:00.000Z");
    let (store, _guard) = make(clock.clone()).await;
    let fixed = limit(2, 60 * SECOND, Algorithm::FixedWindow);
    assert!(one(&store, check("back-f", fixed, 2)).await.allowed);
    clock.set("2026-03-10T12:01:01.000Z");
    assert!(
        one(&store, check("back-f", fixed, 0)).await.allowed,
        "a look counts nothing"
    );
    clock.set("2026-03-10T12:00:50.000Z");
    let refused = one(&store, check("back-f", fixed, 1)).await;
    assert!(!refused.allowed, "still the window of 12:00: {refused:?}");

    let sliding = limit(2, 60 * SECOND, Algorithm::SlidingWindow);
    clock.set("2026-03-10T13:00:00.000Z");
    assert!(one(&store, check("back-s", sliding, 1)).await.allowed);
    clock.set("2026-03-10T13:00:30.000Z");
    assert!(one(&store, check("back-s", sliding, 1)).await.allowed);
    clock.set("2026-03-10T13:01:10.000Z");
    assert!(
        !one(&store, check("back-s", sliding, 2)).await.allowed,
        "13:00:30's unit is in"
    );
    clock.set("2026-03-10T13:00:50.000Z");
    let back = one(&store, check("back-s", sliding, 1)).await;
    assert!(
        back.allowed && back.remaining == 0,
        "13:00:00's unit had left: {back:?}"
    );
    assert!(!one(&store, check("back-s", sliding, 1)).await.allowed);
}

/// 200 concurrent checks against a limit of 50 admit exactly 50, with each
/// algorithm; later checks in the same window are refused.
pub async fn racing_checks_admit_exactly_the_limit<S, G, F>(make: impl Fn(FixedClock) -> F)
where
    S: RateLimitStore,
    F: Future<Output = (S, G)>,
{
    // The start of a minute: a fixed window does not end mid-burst.
    let clock = FixedClock::at("2026-03-10T12:00:00.000Z");
    let (store, _guard) = make(clock).await;
    let store = Arc::new(store);
    for algorithm in [
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
        Algorithm::TokenBucket,
    ] {
        let limit = limit(50, 60 * SECOND, algorithm);
        let racers: Vec<_> = (0..200)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { one(&*store, check("race", limit, 1)).await.allowed })
            })
            .collect();
        let mut allowed = 0;
        for racer in racers {
            allowed += usize::from(racer.await.expect("racer"));
        }
        assert_eq!(allowed, 50, "{algorithm:?}");
        let after = one(&*store, check("race", limit, 1)).await;
        assert!(
            !after.allowed && after.remaining == 0 && after.retry_after_us > 0,
            "{algorithm:?}: {after:?}"
        );
    }
}

/// When one enforced check of a request is refused, none of its checks is
/// counted; a check in shadow mode that would refuse does not refuse the
/// request, and is not counted itself. (The keys share a hash tag: on Redis
/// Cluster, checks in different slots are separate atomic steps.)
pub async fn a_refused_request_counts_none_of_its_checks<S, G, F>(make: impl Fn(FixedClock) -> F)
where
    S: RateLimitStore,
    F: Future<Output = (S, G)>,
{
    let clock = FixedClock::at("2026-03-10T12:00:00.000Z");
    let (store, _guard) = make(clock).await;
    let roomy = limit(10, 60 * SECOND, Algorithm::SlidingWindow);
    let tight = limit(1, 60 * SECOND, Algorithm::FixedWindow);
    assert!(one(&store, check("{t}tight", tight, 1)).await.allowed);
    let outcomes = store
        .check(vec![
            check("{t}roomy", roomy, 3),
            check("{t}tight", tight, 1),
        ])
        .await
        .expect("store answers");
    assert!(outcomes[0].allowed && !outcomes[1].allowed, "{outcomes:?}");
    assert_eq!(
        outcomes[0].remaining, 10,
        "roomy is not counted: {outcomes:?}"
    );
    assert_eq!(
        one(&store, check("{t}roomy", roomy, 10)).await.remaining,
        0,
        "all 10 were left"
    );

    let shadow = Check {
        enforce: false,
        ..check("{t}tight", tight, 1)
    };
    let outcomes = store
        .check(vec![check("{t}other", roomy, 2), shadow])
        .await
        .expect("store answers");
    assert!(outcomes[0].allowed && !outcomes[1].allowed, "{outcomes:?}");
    assert_eq!(
        outcomes[0].remaining, 8,
        "the request was admitted and counted"
    );
    // A key checked twice in one request sees its first count.
    let outcomes = store
        .check(vec![
            check("{t}twice", roomy, 6),
            check("{t}twice", roomy, 6),
        ])
        .await
        .expect("store answers");
    assert!(outcomes[0].allowed && !outcomes[1].allowed, "{outcomes:?}");
    assert_eq!(
        one(&store, check("{t}twice", roomy, 4)).await.remaining,
        6,
        "nothing was counted"
    );
}

/// The sliding window's guarantee at a window edge: a burst at the end of
/// one window leaves no room at the start of the next (a fixed window
/// would admit the limit twice), and units come back as they age out.
pub async fn the_sliding_window_never_admits_more_than_the_limit_across_an_edge<S, G, F>(
    make: impl Fn(FixedClock) -> F,
) where
    S: RateLimitStore,
    F: Future<Output = (S, G)>,
{
    let clock = FixedClock::at("2026-03-10T12:00:59.000Z");
    let (store, _guard) = make(clock.clone()).await;
    let sliding = limit(10, 60 * SECOND, Algorithm::SlidingWindow);
    let fixed = limit(10, 60 * SECOND, Algorithm::FixedWindow);
    for _ in 0..10 {
        assert!(one(&store, check("s", sliding, 1)).await.allowed);
        assert!(one(&store, check("f", fixed, 1)).await.allowed);
    }
    clock.advance(2 * SECOND); // 12:01:01, past the fixed window's edge
    let refused = one(&store, check("s", sliding, 1)).await;
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(
        refused.retry_after_us, 58_000_000,
        "the burst ages out at 12:01:59"
    );
    assert!(
        one(&store, check("f", fixed, 1)).await.allowed,
        "a fixed window admits again"
    );
    clock.advance(58 * SECOND);
    let back = one(&store, check("s", sliding, 10)).await;
    assert!(back.allowed, "{back:?}");
}
