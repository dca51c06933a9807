//! What only the Redis store can show: its stored layout, its Lua period math
//! against the domain's, and its behaviour when Redis misbehaves or goes away.

use std::time::Duration;

use meter_core::{
    AccountId, CreditError, CreditLedger, CreditPeriod, DeductCredits, GrantCredits,
    IdempotencyKey, Reason, ResetCredits, StoreError, Timestamp,
};
use meter_redis::{LUA_PRELUDE, RedisConfig, RedisCreditLedger, RedisStore, keys};
use meter_testkit::RedisServer;
use proptest::{prelude::*, strategy::ValueTree, test_runner::TestRunner};
use redis::AsyncCommands;

fn ledger(server: &RedisServer) -> RedisCreditLedger {
    let config = RedisConfig {
        url: server.url(),
        connections: 2,
        connect_timeout: Duration::from_millis(500),
    };
    RedisCreditLedger::new(
        RedisStore::open(&config).expect("valid url"),
        Duration::from_secs(3600),
    )
}

fn account(name: &str) -> AccountId {
    AccountId::parse("account_id", name).expect("valid")
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("valid timestamp")
}

fn deduct(who: &AccountId, amount: i64, key: &str) -> DeductCredits {
    let key = IdempotencyKey::parse_optional("idempotency_key", key).expect("valid");
    DeductCredits::new(who.clone(), amount, Reason::default(), key).expect("valid")
}

#[tokio::test]
async fn the_credits_hash_reads_as_documented_with_redis_cli() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let who = account("u1");
    let start = at("2026-01-31T10:00:00.000Z");
    let request = ResetCredits {
        account: who.clone(),
        total: 1_000,
        period: CreditPeriod::Month,
        idempotency: None,
    };
    ledger.reset(&request, start).await.expect("reset");
    ledger
        .deduct(&deduct(&who, 30, ""), at("2026-02-01T00:00:00.000Z"))
        .await
        .expect("deduct");
    let mut conn = server.connection().await;
    let fields: std::collections::BTreeMap<String, String> =
        conn.hgetall("user:{u1}:credits").await.expect("hgetall");
    let expected = [
        ("isTrialCredits", "false"),
        ("lastUpdate", "2026-02-01T00:00:00.000Z"),
        ("resetAnchor", "2026-01-31T10:00:00.000Z"),
        ("resetDate", "2026-02-28T10:00:00.000Z"),
        ("resetPeriod", "month"),
        ("total", "1000"),
        ("used", "30"),
    ];
    let expected: std::collections::BTreeMap<String, String> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(fields, expected);
}

#[tokio::test]
async fn the_lua_period_math_agrees_with_the_domain() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    // One EVAL answers a whole batch of random cases: ARGV is (period, anchor_ms, now_ms)*.
    let script = redis::Script::new(&format!(
        "{LUA_PRELUDE}\nlocal t = period_math()\nlocal out = {{}}\nfor i = 1, #ARGV, 3 do\n  local s, e = t.period_containing(tonumber(ARGV[i+1]), ARGV[i], tonumber(ARGV[i+2]))\n  table.insert(out, t.format_time(s)); table.insert(out, t.format_time(e))\n  table.insert(out, t.format_time(t.parse_time(t.format_time(tonumber(ARGV[i+2])))))\nend\nreturn out"
    ));
    let period = prop_oneof![
        Just(CreditPeriod::Day),
        Just(CreditPeriod::Week),
        Just(CreditPeriod::Month),
        Just(CreditPeriod::Year)
    ];
    let case = (period, 0i64..4_000_000_000_000, 0i64..400_000_000_000);
    let cases = proptest::collection::vec(case, 500);
    let mut runner = TestRunner::deterministic();
    for _ in 0..4 {
        let batch = cases.new_tree(&mut runner).expect("cases").current();
        let mut invocation = script.prepare_invoke();
        for (period, anchor, offset) in &batch {
            invocation
                .arg(period.as_str())
                .arg(*anchor)
                .arg(anchor + offset);
        }
        let lua: Vec<String> = invocation.invoke_async(&mut conn).await.expect("eval");
        for (i, (period, anchor, offset)) in batch.iter().enumerate() {
            let (anchor, now) = (
                Timestamp::from_millis(*anchor).expect("ms"),
                Timestamp::from_millis(anchor + offset).expect("ms"),
            );
            let (start, end) = period.period_containing(anchor, now).expect("in range");
            let rust = [start.to_string(), end.to_string(), now.to_string()];
            assert_eq!(
                &lua[i * 3..i * 3 + 3],
                &rust,
                "{period} from {anchor} at {now}"
            );
        }
    }
}

#[tokio::test]
async fn corrupt_stored_data_is_reported_with_its_key_and_left_alone() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let mut conn = server.connection().await;
    let who = account("u-corrupt");
    let _: () = conn
        .hset_multiple(keys::credits(&who), &[("total", "ten"), ("used", "0")])
        .await
        .expect("hset");
    let read = ledger.balance(&who).await;
    assert!(
        matches!(read, Err(StoreError::Corrupt { ref key, .. }) if key == "user:{u-corrupt}:credits"),
        "{read:?}"
    );
    let write = ledger
        .deduct(&deduct(&who, 1, ""), at("2026-01-01T00:00:00.000Z"))
        .await;
    assert!(
        matches!(write, Err(CreditError::Store(StoreError::Corrupt { ref key, ref detail })) if key == "user:{u-corrupt}:credits" && detail.contains("total")),
        "{write:?}"
    );
    let total: String = conn.hget(keys::credits(&who), "total").await.expect("hget");
    assert_eq!(total, "ten");
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_script_flush() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let who = account("u-flush");
    let grant = GrantCredits::new(who.clone(), 5, Reason::default(), false, None).expect("valid");
    ledger
        .grant(&grant, at("2026-01-01T00:00:00.000Z"))
        .await
        .expect("grant");
    let mut conn = server.connection().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let again = ledger
        .grant(&grant, at("2026-01-01T00:00:00.000Z"))
        .await
        .expect("grant after NOSCRIPT");
    assert_eq!(again.outcome.total, 10);
}

#[tokio::test]
async fn idempotency_records_carry_the_window_as_ttl() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let who = account("u-ttl");
    ledger
        .deduct(&deduct(&who, 1, "k-1"), at("2026-01-01T00:00:00.000Z"))
        .await
        .expect("deduct");
    let mut conn = server.connection().await;
    let ttl: i64 = conn
        .pttl("user:{u-ttl}:idem:credits:k-1")
        .await
        .expect("pttl");
    assert!((3_500_000..=3_600_000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test]
async fn a_stopped_redis_is_unavailable_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let ledger = ledger(&server);
    let who = account("u-down");
    let now = at("2026-01-01T00:00:00.000Z");
    let grant = GrantCredits::new(who.clone(), 5, Reason::default(), false, None).expect("valid");
    ledger.grant(&grant, now).await.expect("grant");
    server.stop();
    for _ in 0..3 {
        let down = ledger.deduct(&deduct(&who, 1, ""), now).await;
        assert!(
            matches!(down, Err(CreditError::Store(StoreError::Unavailable(_)))),
            "{down:?}"
        );
        assert!(matches!(
            ledger.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }
    server.restart();
    // The dropped connections are replaced; the data is gone (persistence is off).
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(balance) = ledger.balance(&who).await {
            recovered = Some(balance);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recovered, Some(None), "reads work again after the restart");
    assert!(ledger.ping().await.is_ok());
}

async fn stat(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in INFO stats"))
}

// One scheduler thread makes the timing exact: all 256 calls queue their
// scripts in one tick, before the pipeline's driver takes a batch.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_calls_share_round_trips() {
    let server = RedisServer::start();
    let ledger = std::sync::Arc::new(ledger(&server));
    let who = account("u-pipelined");
    let now = at("2026-01-01T00:00:00.000Z");
    let grant =
        GrantCredits::new(who.clone(), 10_000, Reason::default(), false, None).expect("valid");
    ledger.grant(&grant, now).await.expect("grant");
    ledger
        .deduct(&deduct(&who, 1, ""), now)
        .await
        .expect("loads the deduct script");
    let mut conn = server.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("resetstat");
    let calls: Vec<_> = (0..256)
        .map(|_| {
            let (ledger, who) = (std::sync::Arc::clone(&ledger), who.clone());
            tokio::spawn(async move { ledger.deduct(&deduct(&who, 1, ""), now).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.expect("task").expect("deduct").outcome.applied);
    }
    // Unpipelined, Redis would read each of the 256 scripts on its own; in
    // one pipeline they arrive in a few reads of its 16 KiB input buffer.
    let reads = stat(&mut conn, "total_reads_processed").await;
    assert!(
        reads <= 16,
        "256 concurrent deducts took {reads} reads: not pipelined"
    );
    let stored = ledger.balance(&who).await.expect("read").expect("exists");
    assert_eq!(stored.used, 257);
}
