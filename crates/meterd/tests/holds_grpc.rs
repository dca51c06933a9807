//! Allowance, grants, holds and history end to end: a real redis-server,
//! the real meterd, the generated client.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use meter_api::v1::{
    CommitRequest, DeductRequest, GrantKind, GrantRequest, HistoryKind, ListHistoryRequest,
    ReleaseRequest, ReserveRequest, ResetRequest, credits_service_client::CreditsServiceClient,
};
use meter_core::HistoryRetention;
use meter_testkit::{FixedClock, RedisServer, timestamp as at};
use meterd::Config;
use support::{Meterd, balance, config};
use tonic::{Code, Status, transport::Channel};

const NOW: &str = "2026-03-10T12:00:00.000Z";

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn time(text: &str) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at(text).as_millis() / 1000,
        nanos: 0,
    })
}

fn reserve(account: &str, amount: i64, ttl: i64, key: &str) -> ReserveRequest {
    ReserveRequest {
        account_id: account.into(),
        amount,
        ttl: seconds(ttl),
        idempotency_key: key.into(),
        ..ReserveRequest::default()
    }
}

fn commit(account: &str, hold: &str, amount: i64) -> CommitRequest {
    CommitRequest {
        account_id: account.into(),
        hold_id: hold.into(),
        amount,
        reason: "llm call settled".into(),
    }
}

fn release(account: &str, hold: &str) -> ReleaseRequest {
    ReleaseRequest {
        account_id: account.into(),
        hold_id: hold.into(),
        reason: String::new(),
    }
}

/// Every entry of the account's history, newest first, `page_size` at a time.
async fn history(
    client: &mut CreditsServiceClient<Channel>,
    account: &str,
    page_size: i32,
) -> Vec<meter_api::v1::HistoryEntry> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_history(ListHistoryRequest {
                account_id: account.into(),
                page_size,
                page_token,
            })
            .await
            .expect("history")
            .into_inner();
        assert!(page.entries.len() <= usize::try_from(page_size).expect("positive"));
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowance_grants_holds_and_history_through_the_generated_client() {
    let redis = RedisServer::start();
    let clock = FixedClock::at(NOW);
    let meterd = Meterd::start_with_clock(config(support::redis(redis.url())), clock.clone()).await;
    let mut client = meterd.credits();
    let who = "org_llm";
    client
        .reset(ResetRequest {
            account_id: who.into(),
            total: Some(100),
            idempotency_key: "plan-start".into(),
        })
        .await
        .expect("reset");
    let pack = client
        .grant(GrantRequest {
            account_id: who.into(),
            amount: 500,
            idempotency_key: "pack-1".into(),
            kind: GrantKind::Paid.into(),
            expire_time: time("2026-06-01T00:00:00.000Z"),
            ..GrantRequest::default()
        })
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(pack.grant_id, "pack-1");
    client
        .grant(GrantRequest {
            account_id: who.into(),
            amount: 20,
            kind: GrantKind::Trial.into(),
            expire_time: time("2026-03-20T00:00:00.000Z"),
            ..GrantRequest::default()
        })
        .await
        .expect("grant");
    let charged = client
        .deduct(DeductRequest {
            account_id: who.into(),
            amount: 110,
            ..DeductRequest::default()
        })
        .await
        .expect("deduct")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(
        (charged.total, charged.used, charged.remaining),
        (620, 110, 510)
    );
    assert!(charged.trial, "10 trial credits remain");
    let left: Vec<(GrantKind, i64)> = charged
        .grants
        .iter()
        .map(|g| (g.kind(), g.remaining))
        .collect();
    assert_eq!(
        left,
        [(GrantKind::Trial, 10), (GrantKind::Paid, 500)],
        "the allowance, then the trial grant expiring first"
    );
    let allowance = charged.allowance.expect("allowance");
    assert_eq!((allowance.used, allowance.remaining), (100, 0));

    let held = client
        .reserve(ReserveRequest {
            account_id: who.into(),
            feature: "chat:gpt-4o".into(),
            quantity: 10,
            ttl: seconds(60),
            idempotency_key: "call-1".into(),
            ..ReserveRequest::default()
        })
        .await
        .expect("reserve")
        .into_inner();
    assert!(held.applied);
    assert_eq!(held.charged, 30, "3 credits × 10");
    assert_eq!(held.expire_time, time("2026-03-10T12:01:00.000Z"));
    let during = held.balance.expect("balance");
    assert_eq!((during.remaining, during.held), (480, 30));
    let settled = client
        .commit(commit(who, &held.hold_id, 12))
        .await
        .expect("commit")
        .into_inner();
    let settlement = settled.settlement.expect("settlement");
    assert_eq!(
        (settlement.committed, settlement.amount, settlement.returned),
        (true, 12, 18)
    );
    assert_eq!(settled.balance.expect("balance").remaining, 498);
    let again = client
        .commit(commit(who, &held.hold_id, 30))
        .await
        .expect("commit again")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(
        again.settlement.map(|s| s.amount),
        Some(12),
        "the first settlement"
    );
    let released = client
        .release(release(who, &held.hold_id))
        .await
        .expect("release after commit")
        .into_inner();
    assert!(released.replayed && released.settlement.is_some_and(|s| s.committed));

    let second = client
        .reserve(reserve(who, 40, 60, ""))
        .await
        .expect("reserve")
        .into_inner();
    let over = client
        .commit(commit(who, &second.hold_id, 41))
        .await
        .expect_err("above the hold");
    assert_eq!(over.code(), Code::InvalidArgument);
    assert!(over.message().starts_with("amount: "), "{}", over.message());
    let back = client
        .release(release(who, &second.hold_id))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(back.settlement.map(|s| s.returned), Some(40));
    let unknown = client
        .commit(commit(who, "h404", 1))
        .await
        .expect_err("unknown hold");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let short = client
        .reserve(reserve(who, 7, 30, ""))
        .await
        .expect("reserve")
        .into_inner();
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        balance(&mut client, who).await.remaining,
        498,
        "released by itself"
    );
    let late = client
        .commit(commit(who, &short.hold_id, 7))
        .await
        .expect_err("expired");
    assert_eq!(late.code(), Code::NotFound);
    let declined = client
        .reserve(reserve(who, 499, 30, ""))
        .await
        .expect("reserve")
        .into_inner();
    assert!(!declined.applied && declined.hold_id.is_empty());

    let entries = history(&mut client, who, 4).await;
    let kinds: Vec<HistoryKind> = entries.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            HistoryKind::HoldExpired,
            HistoryKind::Reserve,
            HistoryKind::Release,
            HistoryKind::Reserve,
            HistoryKind::Commit,
            HistoryKind::Reserve,
            HistoryKind::Deduct,
            HistoryKind::Grant,
            HistoryKind::Grant,
            HistoryKind::Reset,
        ]
    );
    let end = balance(&mut client, who).await;
    assert_eq!(entries.iter().map(|e| e.change).sum::<i64>(), end.remaining);
    assert_eq!(entries[0].remaining, end.remaining);
    assert_eq!(entries[9].idempotency_key, "plan-start");
    assert_eq!(entries[4].reason, "llm call settled");
    assert_eq!(entries[8].grant_id, "pack-1");
}

/// Retries `call` with the same arguments while meterd answers UNAVAILABLE
/// (Redis down, or a change that may or may not have been applied),
/// counting the retries in `retries`.
async fn retried<T, F, Fut>(retries: &AtomicUsize, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    for _ in 0..400 {
        match call().await {
            Err(status) if status.code() == Code::Unavailable => {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
    panic!("meterd stayed UNAVAILABLE for 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_and_commit_stay_exact_when_redis_is_killed_and_callers_retry() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    // Room in the history for every one of the 961 changes.
    let retention = HistoryRetention::new(1_000, Duration::from_secs(3600)).expect("valid");
    let meterd = Meterd::start(Config {
        history: retention,
        ..config(support::redis(redis.url()))
    })
    .await;
    let who = "org_crash";
    let mut client = meterd.credits();
    client
        .reset(ResetRequest {
            account_id: who.into(),
            total: Some(1_000_000),
            idempotency_key: String::new(),
        })
        .await
        .expect("reset");
    let retries = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let (client, retries) = (meterd.credits(), Arc::clone(&retries));
            tokio::spawn(async move {
                let mut committed = 0;
                for round in 0..60 {
                    let key = format!("call-{caller}-{round}");
                    let held = retried(&retries, || {
                        let (mut client, request) = (client.clone(), reserve(who, 10, 3600, &key));
                        async move { client.reserve(request).await }
                    })
                    .await
                    .expect("reserve")
                    .into_inner();
                    assert!(held.applied);
                    let amount = 1 + (caller + round) % 10;
                    let settled = retried(&retries, || {
                        let (mut client, request) =
                            (client.clone(), commit(who, &held.hold_id, amount));
                        async move { client.commit(request).await }
                    })
                    .await
                    .expect("commit")
                    .into_inner();
                    assert_eq!(settled.settlement.map(|s| s.amount), Some(amount));
                    committed += amount;
                }
                committed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let mut committed = 0;
    for caller in callers {
        committed += caller.await.expect("caller");
    }
    assert!(
        retries.load(Ordering::Relaxed) > 0,
        "the kill came while calls were running"
    );
    let end = balance(&mut client, who).await;
    assert_eq!(end.held, 0, "every hold settled once");
    assert_eq!(end.used, committed, "every commit applied once");
    assert_eq!(end.remaining, 1_000_000 - committed);
    let entries = history(&mut client, who, 500).await;
    let commits = entries
        .iter()
        .filter(|e| e.kind() == HistoryKind::Commit)
        .count();
    assert_eq!(commits, 8 * 60, "one history entry per settlement");
}
