//! StatsService end to end: the real meterd on a real redis-server, real gRPC.

mod support;

use std::time::Duration;

use meter_api::v1::{
    GetStatsRequest, RecordConversationRequest, RecordLoginRequest, ResetStatsRequest,
    SetMoodRequest, Stats, SubscriptionStatus, UpdateSubscriptionRequest,
    stats_service_client::StatsServiceClient,
    subscription_service_client::SubscriptionServiceClient,
};
use meter_testkit::{FixedClock, RedisServer};
use support::{Meterd, ts};
use tonic::{Code, transport::Channel};

/// meterd on a fresh redis-server, keeping `recent` conversations, on `clock`.
async fn meterd(redis: &RedisServer, clock: &FixedClock, recent: usize) -> Meterd {
    let config = meterd::Config {
        recent_conversations: recent,
        ..support::config(support::redis(redis.url()))
    };
    Meterd::start_with_clock(config, clock.clone()).await
}

fn login(account: &str, time: Option<&str>, zone: &str) -> RecordLoginRequest {
    RecordLoginRequest {
        account_id: account.into(),
        time: time.map(ts),
        time_zone: zone.into(),
        idempotency_key: String::new(),
    }
}

async fn stats(client: &mut StatsServiceClient<Channel>, account: &str) -> Stats {
    client
        .get_stats(GetStatsRequest {
            account_id: account.into(),
        })
        .await
        .expect("get stats")
        .into_inner()
        .stats
        .expect("stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_logins_of_one_instant_count_one_day() {
    let redis = RedisServer::start();
    let clock = FixedClock::at("2026-05-01T08:00:00.000Z");
    let meterd = meterd(&redis, &clock, 3).await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut client = StatsServiceClient::new(meterd.channel());
            tokio::spawn(async move {
                client
                    .record_login(login("u-fifty", None, "America/New_York"))
                    .await
                    .expect("login")
                    .into_inner()
            })
        })
        .collect();
    let mut firsts = 0;
    for call in calls {
        let reply = call.await.expect("task");
        firsts += usize::from(reply.first_login_today);
        assert_eq!(reply.days_active, 1);
    }
    assert_eq!(firsts, 1, "first_login_today exactly once");
    let mut client = StatsServiceClient::new(meterd.channel());
    let read = stats(&mut client, "u-fifty").await;
    assert_eq!((read.days_active, read.login_streak), (1, 1));
    assert_eq!(read.last_login_date, "2026-05-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaks_local_days_recent_conversations_moods_and_the_plan() {
    let redis = RedisServer::start();
    let clock = FixedClock::at("2026-05-01T12:00:00.000Z");
    let meterd = meterd(&redis, &clock, 2).await;
    let mut client = StatsServiceClient::new(meterd.channel());

    // A ten-day streak, then a two-day gap.
    for day in 0..10 {
        clock.set("2026-05-01T12:00:00.000Z");
        clock.advance(Duration::from_secs(day * 86_400));
        let reply = client
            .record_login(login("u-streak", None, ""))
            .await
            .expect("login")
            .into_inner();
        assert!(reply.first_login_today);
    }
    clock.set("2026-05-13T12:00:00.000Z");
    let gap = client
        .record_login(login("u-streak", None, ""))
        .await
        .expect("login")
        .into_inner();
    assert_eq!(
        (gap.login_streak, gap.longest_streak, gap.days_active),
        (1, 10, 11)
    );

    // New York: 23:30 and 00:30 the next local day are two days; 23:30Z
    // and 00:30Z are one New York evening.
    let ny = "America/New_York";
    for (account, times, days) in [
        (
            "u-ny",
            ["2026-05-13T03:30:00.000Z", "2026-05-13T04:30:00.000Z"],
            2,
        ),
        (
            "u-ny-z",
            ["2026-05-12T23:30:00.000Z", "2026-05-13T00:30:00.000Z"],
            1,
        ),
    ] {
        for time in times {
            client
                .record_login(login(account, Some(time), ny))
                .await
                .expect("login");
        }
        assert_eq!(
            stats(&mut client, account).await.days_active,
            days,
            "{account}"
        );
    }
    let bad_zone = client
        .record_login(login("u-ny", None, "Nowhere/Special"))
        .await
        .expect_err("unknown zone");
    assert_eq!(bad_zone.code(), Code::InvalidArgument);
    assert!(
        bad_zone.message().starts_with("time_zone: "),
        "{}",
        bad_zone.message()
    );

    // The newest two conversations, whatever the order they come in.
    for (id, time) in [
        ("c1", "2026-05-10T10:00:00.000Z"),
        ("c3", "2026-05-12T10:00:00.000Z"),
        ("c2", "2026-05-11T10:00:00.000Z"),
        ("c3", "2026-05-12T10:00:00.000Z"),
    ] {
        client
            .record_conversation(RecordConversationRequest {
                account_id: "u-streak".into(),
                conversation_id: id.into(),
                title: format!("Talk {id}"),
                summary: "felt better".into(),
                time: Some(ts(time)),
                idempotency_key: String::new(),
            })
            .await
            .expect("conversation");
    }
    let read = stats(&mut client, "u-streak").await;
    assert_eq!(read.conversations, 3, "c3 twice counts once");
    let ids: Vec<&str> = read
        .recent_conversations
        .iter()
        .map(|c| c.conversation_id.as_str())
        .collect();
    assert_eq!(ids, ["c3", "c2"]);

    // Moods: one decimal kept; invalid scores change nothing.
    let set = client
        .set_mood(SetMoodRequest {
            account_id: "u-streak".into(),
            score: Some(6.66),
            idempotency_key: String::new(),
        })
        .await
        .expect("mood")
        .into_inner()
        .stats
        .expect("stats");
    assert!((set.mood_score - 6.7).abs() < 1e-9, "{}", set.mood_score);
    for bad in [f64::NAN, f64::INFINITY, -1.0, 10.5] {
        let refused = client
            .set_mood(SetMoodRequest {
                account_id: "u-streak".into(),
                score: Some(bad),
                idempotency_key: String::new(),
            })
            .await
            .expect_err("invalid score");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().starts_with("score: "),
            "{}",
            refused.message()
        );
    }
    assert!((stats(&mut client, "u-streak").await.mood_score - 6.7).abs() < 1e-9);

    // The plan comes from the subscription.
    assert_eq!(stats(&mut client, "u-streak").await.plan, "free");
    SubscriptionServiceClient::new(meterd.channel())
        .update_subscription(UpdateSubscriptionRequest {
            account_id: "u-streak".into(),
            plan: "pro".into(),
            status: SubscriptionStatus::Active.into(),
            ..UpdateSubscriptionRequest::default()
        })
        .await
        .expect("upgrade");
    assert_eq!(stats(&mut client, "u-streak").await.plan, "pro");

    let reset = client
        .reset_stats(ResetStatsRequest {
            account_id: "u-streak".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("reset")
        .into_inner()
        .stats
        .expect("stats");
    assert_eq!((reset.days_active, reset.conversations), (0, 0));
    assert!(reset.recent_conversations.is_empty() && !reset.mood_set);
    assert_eq!(reset.plan, "pro");
}
