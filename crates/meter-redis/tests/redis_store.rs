//! What only the Redis store can show: its stored layout, its Lua period math
//! against the domain's, and its behaviour when Redis misbehaves or goes away.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use meter_core::{
    AccountId, CreditLedger, CreditPeriod, DeductCredits, GrantCredits, GrantKind,
    HistoryRetention, IdempotencyKey, IdempotencyWindow, MeterError, Reason, ReserveCredits,
    ResetCredits, ResetTo, SettleHold, StoreError, Timestamp,
};
use meter_redis::{
    RedisConfig, RedisCreditLedger, RedisStore, keys,
    script::{LuaScript, lib, names},
};
use meter_testkit::{RedisServer, timestamp as at};
use proptest::{prelude::*, strategy::ValueTree, test_runner::TestRunner};
use redis::AsyncCommands;

const HOUR: Duration = Duration::from_secs(3600);

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        connections: 2,
        connect_timeout: Duration::from_millis(500),
        ..RedisConfig::new(server.url())
    }
}

fn ledger_on(config: &RedisConfig) -> (RedisStore, RedisCreditLedger) {
    let store = RedisStore::open(config).expect("valid url");
    let window = IdempotencyWindow::new(HOUR).expect("valid window");
    (
        store.clone(),
        RedisCreditLedger::new(store, window, HistoryRetention::DEFAULT),
    )
}

fn ledger(server: &RedisServer) -> RedisCreditLedger {
    ledger_on(&config(server)).1
}

fn account(name: &str) -> AccountId {
    AccountId::parse("account_id", name).expect("valid")
}

fn key(text: &str) -> Option<IdempotencyKey> {
    IdempotencyKey::parse_optional("idempotency_key", text).expect("valid")
}

fn deduct(who: &AccountId, amount: i64, idem: &str) -> DeductCredits {
    DeductCredits::new(who.clone(), amount, Reason::default(), key(idem)).expect("valid")
}

fn grant(who: &AccountId, amount: i64, idem: &str) -> GrantCredits {
    GrantCredits::new(
        who.clone(),
        amount,
        Reason::default(),
        GrantKind::Paid,
        None,
        key(idem),
        Timestamp::EPOCH,
    )
    .expect("valid")
}

fn reset(who: &AccountId, total: i64) -> ResetCredits {
    ResetCredits {
        account: who.clone(),
        to: ResetTo::Fixed {
            total,
            period: CreditPeriod::Month,
        },
        idempotency: None,
    }
}

const NOW: &str = "2026-01-01T00:00:00.000Z";

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn the_credit_keys_read_as_documented_with_redis_cli() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let who = account("u1");
    ledger
        .reset(&reset(&who, 1_000), at("2026-01-31T10:00:00.000Z"))
        .await
        .expect("reset");
    let now = at("2026-02-01T00:00:00.000Z");
    let reason = Reason::parse("reason", "chat: gpt-4o").expect("valid");
    ledger
        .deduct(
            &DeductCredits::new(who.clone(), 30, reason, key("msg-1")).expect("valid"),
            now,
        )
        .await
        .expect("deduct");
    let pack = GrantCredits::new(
        who.clone(),
        500,
        Reason::default(),
        GrantKind::Paid,
        Some(at("2026-12-31T00:00:00.000Z")),
        key("pack-1"),
        now,
    )
    .expect("valid");
    ledger.grant(&pack, now).await.expect("grant");
    let hold = ReserveCredits::new(deduct(&who, 980, ""), Duration::from_secs(60));
    ledger.reserve(&hold, now).await.expect("reserve");
    let mut conn = server.connection().await;
    let credits: BTreeMap<String, String> =
        conn.hgetall("user:{u1}:credits").await.expect("hgetall");
    assert_eq!(
        credits,
        fields(&[
            ("lastUpdate", "2026-02-01T00:00:00.000Z"),
            ("meta", "1|1|1|980|2026-02-01T00:01:00.000Z"),
            ("resetAnchor", "2026-01-31T10:00:00.000Z"),
            ("resetDate", "2026-02-28T10:00:00.000Z"),
            ("resetPeriod", "month"),
            ("total", "1000"),
            ("used", "1000"),
        ])
    );
    let grants: BTreeMap<String, String> = conn.hgetall("user:{u1}:grants").await.expect("hgetall");
    assert_eq!(
        grants,
        fields(&[(
            "pack-1",
            "paid|500|490|10|2026-02-01T00:00:00.000Z|2026-12-31T00:00:00.000Z"
        )])
    );
    let holds: BTreeMap<String, String> = conn.hgetall("user:{u1}:holds").await.expect("hgetall");
    assert_eq!(
        holds,
        fields(&[("h1", "980|2026-02-01T00:01:00.000Z|970|1|pack-1=10")])
    );
    let history: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XRANGE")
        .arg("user:{u1}:history")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    let entries: Vec<(String, String)> = history
        .iter()
        .map(|(id, fields)| (id.clone(), fields["entry"].clone()))
        .collect();
    let (january, february) = (at("2026-01-31T10:00:00.000Z").as_millis(), now.as_millis());
    assert_eq!(
        entries,
        [
            (
                format!("{january}-0"),
                "2026-01-31T10:00:00.000Z|reset|1000|1000|1000||||".to_owned()
            ),
            (
                format!("{february}-0"),
                "2026-02-01T00:00:00.000Z|deduct|30|-30|970|msg-1|||chat: gpt-4o".to_owned()
            ),
            (
                format!("{february}-1"),
                "2026-02-01T00:00:00.000Z|grant|500|500|1470|pack-1|pack-1||".to_owned()
            ),
            (
                format!("{february}-2"),
                "2026-02-01T00:00:00.000Z|reserve|980|-980|490|||h1|".to_owned()
            ),
        ]
    );
    let ttl: i64 = conn.pttl("user:{u1}:history").await.expect("pttl");
    assert!(ttl > 0, "the history expires by itself: {ttl}");
}

#[tokio::test]
async fn the_lua_period_math_agrees_with_the_domain() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    // One EVAL answers a whole batch of random cases: ARGV is (period, anchor_ms, now_ms)*.
    let script = redis::Script::new(&format!(
        "{}\nlocal t = period_math()\nlocal out = {{}}\nfor i = 1, #ARGV, 3 do\n  local s, e = t.period_containing(tonumber(ARGV[i+1]), ARGV[i], tonumber(ARGV[i+2]))\n  table.insert(out, t.format_time(s)); table.insert(out, t.format_time(e))\n  table.insert(out, t.format_time(t.parse_time(t.format_time(tonumber(ARGV[i+2])))))\nend\nreturn out",
        lib::PERIOD.source
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
async fn corrupt_stored_numbers_and_times_are_refused_by_reads_and_writes_and_left_alone() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let mut conn = server.connection().await;
    let cases = [
        ("total", "1.5"),
        ("total", "1e3"),
        ("total", "inf"),
        ("total", "nan"),
        ("total", "0x10"),
        ("total", "007"),
        ("total", "9007199254740992"),
        ("used", "-1"),
        ("used", " 7"),
        ("resetDate", "2026-13-01T00:00:00.000Z"),
        ("resetAnchor", "2026-02-30T10:00:00.000Z"),
        ("resetPeriod", "fortnight"),
        ("lastUpdate", "yesterday"),
        ("lastUpdate", "2026-02-30T00:00:00.000Z"),
        ("meta", "one|1|0|0|"),
        ("meta", "0|1|0|-5|"),
        ("meta", "0|1|0|5|soon"),
        ("meta", "0|01|0|0|"),
        ("meta", "0|1|0|0"),
        ("meta", ""),
        ("total", ""),
        ("lastUpdate", ""),
    ];
    for (i, (field, bad)) in cases.iter().enumerate() {
        let who = account(&format!("u-corrupt-{i}"));
        let hash = keys::credits(&who);
        ledger
            .reset(&reset(&who, 100), at("2025-12-15T00:00:00.000Z"))
            .await
            .expect("reset");
        let _: () = conn.hset(&hash, *field, *bad).await.expect("hset");
        let before: BTreeMap<String, String> = conn.hgetall(&hash).await.expect("hgetall");

        let is_corrupt = |e: &StoreError| {
            matches!(e, StoreError::Corrupt { what, key, detail }
                if *what == format!("credits of account {who}") && *key == hash && detail.contains(field))
        };
        let read = ledger.balance(&who, at(NOW)).await;
        assert!(
            read.as_ref().is_err_and(is_corrupt),
            "{field} = {bad:?}: read gave {read:?}"
        );
        let now = at(NOW);
        let writes = [
            ledger
                .deduct(&deduct(&who, 1, "k-deduct"), now)
                .await
                .map(|_| ()),
            ledger
                .grant(&grant(&who, 1, "k-grant"), now)
                .await
                .map(|_| ()),
            ledger.reset(&reset(&who, 5), now).await.map(|_| ()),
            ledger
                .reserve(
                    &ReserveCredits::new(deduct(&who, 1, "k-reserve"), HOUR),
                    now,
                )
                .await
                .map(|_| ()),
            ledger
                .settle_hold(
                    &SettleHold::new(who.clone(), "h1", None, Reason::default()).expect("valid"),
                    now,
                )
                .await
                .map(|_| ()),
        ];
        for write in writes {
            assert!(
                matches!(write, Err(MeterError::Store(ref e)) if is_corrupt(e)),
                "{field} = {bad:?}: write gave {write:?}"
            );
        }
        let after: BTreeMap<String, String> = conn.hgetall(&hash).await.expect("hgetall");
        assert_eq!(after, before, "{field} = {bad:?}: nothing was touched");
        let remembered: bool = conn
            .exists(format!("user:{{{who}}}:idem:credits:v2:k-deduct"))
            .await
            .expect("exists");
        assert!(!remembered, "no idempotency record for a refused call");
    }
}

async fn info_field(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    name: &str,
) -> String {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_scripts_are_loaded_once_per_batch_after_a_script_flush() {
    let server = RedisServer::start();
    let ledger = Arc::new(ledger(&server));
    let who = account("u-flush");
    let now = at(NOW);
    ledger.grant(&grant(&who, 5, ""), now).await.expect("grant");
    let mut conn = server.connection().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("resetstat");
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let (ledger, who) = (Arc::clone(&ledger), who.clone());
            tokio::spawn(async move { ledger.grant(&grant(&who, 1, ""), now).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("grant after NOSCRIPT");
    }
    assert_eq!(
        ledger.balance(&who, at(NOW)).await.expect("read").total(),
        69
    );
    let loads = info_field(&mut conn, "commandstats", "cmdstat_script|load").await;
    let calls: u64 = loads
        .split(',')
        .find_map(|kv| kv.strip_prefix("calls="))
        .and_then(|n| n.parse().ok())
        .expect("SCRIPT LOAD was called");
    assert!(
        calls <= 8,
        "64 calls after a flush loaded the script {calls} times"
    );
}

meter_redis::layout! {
    /// The reply of the test scripts below.
    struct Ran as "RAN" {
        /// `yes` when the script ran.
        ran = "ran",
    }
}

static COUNTS: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "test/counts.lua",
        &[],
        &[],
        &[names::<Ran>()],
        "redis.call('INCR', KEYS[1])\nlocal out = new_RAN()\nout[RAN_ran] = 'yes'\nreturn out",
    )
});
static DOES_NOT_COMPILE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("test/broken.lua", &[], &[], &[], "return ((("));

// One scheduler thread: both calls leave in one batch, and both meet NOSCRIPT.
#[tokio::test(flavor = "current_thread")]
async fn a_script_that_fails_to_load_does_not_answer_for_one_that_ran() {
    let server = RedisServer::start();
    let store = RedisStore::open(&config(&server)).expect("valid url");
    let counted = {
        let store = store.clone();
        tokio::spawn(async move { store.run::<Ran>(COUNTS.call(&["counter"])).await })
    };
    let broken = {
        let store = store.clone();
        tokio::spawn(async move { store.run::<Ran>(DOES_NOT_COMPILE.call(&["other"])).await })
    };
    let counted = counted.await.expect("task");
    let broken = broken.await.expect("task");
    assert_eq!(
        counted.map(|r| r.ran),
        Ok(Some("yes".into())),
        "it ran: its own reply"
    );
    assert!(
        matches!(broken, Err(StoreError::Protocol(ref e)) if e.contains("compil")),
        "{broken:?}"
    );
    let count: i64 = server.connection().await.get("counter").await.expect("get");
    assert_eq!(count, 1, "it ran once");
}

#[tokio::test]
async fn idempotency_records_name_their_expiry_and_carry_the_window_as_ttl() {
    let server = RedisServer::start();
    let ledger = ledger(&server);
    let who = account("u-ttl");
    ledger
        .deduct(&deduct(&who, 1, "k-1"), at(NOW))
        .await
        .expect("deduct");
    let mut conn = server.connection().await;
    let record_key = "user:{u-ttl}:idem:credits:v2:k-1";
    let ttl: i64 = conn.pttl(record_key).await.expect("pttl");
    assert!((3_500_000..=3_600_000).contains(&ttl), "ttl {ttl} ms");
    let record: String = conn.get(record_key).await.expect("get");
    let expiry = at(NOW).as_millis() + 3_600_000;
    assert!(
        record.contains(&format!("\"exp\":\"{expiry}\"")),
        "the record expires by the caller's clock: {record}"
    );
    assert!(record.contains("\"fp\":\"deduct"), "{record}");
}

#[tokio::test]
async fn a_stopped_redis_is_unavailable_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let (store, ledger) = ledger_on(&config(&server));
    let who = account("u-down");
    let now = at(NOW);
    ledger.grant(&grant(&who, 5, ""), now).await.expect("grant");
    server.stop();
    for _ in 0..3 {
        let down = ledger.deduct(&deduct(&who, 1, ""), now).await;
        assert!(
            matches!(
                down,
                Err(MeterError::Store(
                    StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_)
                ))
            ),
            "{down:?}"
        );
        assert!(store.ping().await.is_err());
    }
    server.restart();
    // The dropped connections are replaced; the data is gone (persistence is off).
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(balance) = ledger.balance(&who, at(NOW)).await {
            recovered = Some(balance);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        recovered.map(|b| b.last_update),
        Some(None),
        "reads work again after the restart (the data is gone)"
    );
    assert!(store.ping().await.is_ok());
}

// One scheduler thread makes the timing exact: all 256 calls queue their
// scripts in one tick, before the pipeline's driver takes a batch.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_calls_share_round_trips() {
    let server = RedisServer::start();
    let ledger = Arc::new(ledger(&server));
    let who = account("u-pipelined");
    let now = at(NOW);
    ledger
        .grant(&grant(&who, 10_000, ""), now)
        .await
        .expect("grant");
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
            let (ledger, who) = (Arc::clone(&ledger), who.clone());
            tokio::spawn(async move { ledger.deduct(&deduct(&who, 1, ""), now).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.expect("task").expect("deduct").outcome.applied);
    }
    // Unpipelined, Redis would read each of the 256 scripts on its own; in
    // one pipeline they arrive in a few reads of its 16 KiB input buffer.
    let reads: u64 = info_field(&mut conn, "stats", "total_reads_processed")
        .await
        .parse()
        .expect("a count");
    assert!(
        reads <= 16,
        "256 concurrent deducts took {reads} reads: not pipelined"
    );
    let stored = ledger.balance(&who, at(NOW)).await.expect("read");
    assert_eq!(stored.used(), 257);
}

#[tokio::test]
async fn a_broken_connection_is_never_handed_out_again() {
    let server = RedisServer::start();
    let (_, ledger) = ledger_on(&RedisConfig {
        connections: 1,
        ..config(&server)
    });
    let who = account("u-killed");
    ledger
        .grant(&grant(&who, 100, ""), at(NOW))
        .await
        .expect("grant");
    // Redis drops meterd's connection, as a failover or a proxy restart does.
    let mut conn = server.connection().await;
    let killed = server.drop_clients(&mut conn).await;
    assert_eq!(killed, 1, "the ledger's one connection");
    // The first call may meet the dead socket; every later one gets a new connection.
    let first = ledger.balance(&who, at(NOW)).await;
    for i in 0..5 {
        let later = ledger.balance(&who, at(NOW)).await;
        assert!(
            matches!(later, Ok(ref b) if b.total() == 100),
            "call {} after the kill (first gave {first:?}): {later:?}",
            i + 2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_timeout_is_the_configured_one_not_redis_rs_default() {
    let server = RedisServer::start();
    let (_, patient) = ledger_on(&RedisConfig {
        response_timeout: Duration::from_millis(1_500),
        ..config(&server)
    });
    let (_, hasty) = ledger_on(&RedisConfig {
        response_timeout: Duration::from_millis(200),
        ..config(&server)
    });
    let who = account("u-slow");
    for ledger in [&patient, &hasty] {
        ledger
            .grant(&grant(&who, 10, ""), at(NOW))
            .await
            .expect("grant");
    }
    server.freeze();
    let started = Instant::now();
    let fast = hasty.deduct(&deduct(&who, 1, ""), at(NOW)).await;
    let fast_took = started.elapsed();
    let started = Instant::now();
    let slow = patient.deduct(&deduct(&who, 1, ""), at(NOW)).await;
    let slow_took = started.elapsed();
    server.thaw();
    for outcome in [&fast, &slow] {
        assert!(
            matches!(
                outcome,
                Err(MeterError::Store(StoreError::OutcomeUnknown(_)))
            ),
            "a call Redis did not answer may have been applied: {outcome:?}"
        );
    }
    assert!(
        fast_took < Duration::from_millis(1_200),
        "200 ms timeout took {fast_took:?}"
    );
    assert!(
        slow_took >= Duration::from_millis(1_400) && slow_took < Duration::from_secs(5),
        "1.5 s timeout took {slow_took:?}"
    );
    // Once Redis answers again both ledgers work (the timed-out connections were replaced).
    for ledger in [&patient, &hasty] {
        let mut answered = false;
        for _ in 0..100 {
            if ledger.balance(&who, at(NOW)).await.is_ok() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered, "the ledger recovers after the thaw");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_fills_the_pending_bound_and_every_other_call_fails_at_once() {
    let server = RedisServer::start();
    let (_, ledger) = ledger_on(&RedisConfig {
        max_pending: 16,
        response_timeout: Duration::from_secs(4),
        ..config(&server)
    });
    let ledger = Arc::new(ledger);
    let who = account("u-frozen");
    ledger
        .grant(&grant(&who, 1_000, ""), at(NOW))
        .await
        .expect("grant");
    server.freeze();
    let started = Instant::now();
    let calls: Vec<_> = (0..400)
        .map(|i| {
            let (ledger, who) = (Arc::clone(&ledger), who.clone());
            tokio::spawn(async move {
                let outcome = ledger
                    .deduct(&deduct(&who, 1, &format!("k-{i}")), at(NOW))
                    .await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    // Thaw only after the calls beyond the bound have had ample time to fail.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.thaw();
    let mut overloaded = 0;
    for call in calls {
        let (outcome, took) = call.await.expect("task");
        if let Err(MeterError::Store(StoreError::Overloaded(_))) = outcome {
            overloaded += 1;
            assert!(
                took < Duration::from_millis(1_500),
                "refused only after {took:?}"
            );
        }
    }
    assert!(
        overloaded >= 400 - 16,
        "only {overloaded} of 400 calls were refused at once past a bound of 16"
    );
    let after = ledger.deduct(&deduct(&who, 1, "after"), at(NOW)).await;
    assert!(
        after.is_ok_and(|r| r.outcome.applied),
        "works again after the thaw"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn closing_the_store_finishes_queued_calls_and_refuses_new_ones() {
    let server = RedisServer::start();
    let (store, ledger) = ledger_on(&config(&server));
    let who = account("u-close");
    ledger
        .reset(&reset(&who, 100), at(NOW))
        .await
        .expect("reset");
    let queued: Vec<_> = (0..20)
        .map(|_| {
            let (ledger, who) = (ledger.clone(), who.clone());
            tokio::spawn(async move { ledger.deduct(&deduct(&who, 1, ""), at(NOW)).await })
        })
        .collect();
    // Let every call queue its command before the store closes.
    tokio::task::yield_now().await;
    store.close().await;
    for call in queued {
        assert!(call.await.expect("task").is_ok_and(|r| r.outcome.applied));
    }
    let refused = ledger.balance(&who, at(NOW)).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(ref m)) if m.contains("closed")),
        "{refused:?}"
    );
    store.close().await;
    let mut conn = server.connection().await;
    let used: String = conn.hget(keys::credits(&who), "used").await.expect("hget");
    assert_eq!(used, "20");
}

#[tokio::test]
async fn a_change_the_replicas_do_not_confirm_may_have_been_applied_and_reads_are_not_held() {
    // A Redis without replicas can never confirm a change to one.
    let server = RedisServer::start();
    let (_, ledger) = ledger_on(&RedisConfig {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(100),
        ..config(&server)
    });
    let who = account("u-unreplicated");
    let granted = ledger.grant(&grant(&who, 100, "g-1"), at(NOW)).await;
    assert!(
        matches!(granted, Err(MeterError::Store(StoreError::OutcomeUnknown(ref m))) if m.contains("replica")),
        "{granted:?}"
    );
    // The master has the change: a read sees it, and is not held by WAIT.
    let balance = ledger.balance(&who, at(NOW)).await.expect("a read");
    assert_eq!(balance.total(), 100);
    // A retry with the same key replays, and still cannot be confirmed;
    // WAIT gives up after its own timeout, well inside the response timeout.
    let started = Instant::now();
    let again = ledger.grant(&grant(&who, 100, "g-1"), at(NOW)).await;
    assert!(
        matches!(again, Err(MeterError::Store(StoreError::OutcomeUnknown(_)))),
        "{again:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let balance = ledger.balance(&who, at(NOW)).await.expect("a read");
    assert_eq!(balance.total(), 100, "applied once");
}

#[tokio::test]
async fn a_change_a_replica_confirms_is_answered() {
    let primary = RedisServer::start();
    let replica_of = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &replica_of]);
    let (_, ledger) = ledger_on(&RedisConfig {
        wait_replicas: 1,
        ..config(&primary)
    });
    let who = account("u-replicated");
    // The replica may still be syncing for the first calls.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ledger.grant(&grant(&who, 100, "g-1"), at(NOW)).await {
            Ok(recorded) => {
                assert_eq!(recorded.outcome.balance.total(), 100);
                break;
            }
            Err(error) => assert!(Instant::now() < deadline, "{error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_replica: String = replica
        .connection()
        .await
        .hget(keys::grants(&who), "g-1")
        .await
        .expect("hget on the replica");
    assert!(
        on_replica.starts_with("paid|100|100|"),
        "the answered change is on the replica: {on_replica}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_thousands_of_idempotency_records_is_deleted_whole() {
    let server = RedisServer::start();
    let (store, ledger) = ledger_on(&config(&server));
    let ledger = Arc::new(ledger);
    let who = account("u-busy");
    ledger
        .reset(&reset(&who, 100_000), at(NOW))
        .await
        .expect("reset");
    // More records than Lua's unpack takes at once (about 8,000).
    let tasks: Vec<_> = (0..50)
        .map(|task| {
            let (ledger, who) = (Arc::clone(&ledger), who.clone());
            tokio::spawn(async move {
                for i in 0..180 {
                    ledger
                        .deduct(&deduct(&who, 1, &format!("k-{task}-{i}")), at(NOW))
                        .await
                        .expect("deduct");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let mut conn = server.connection().await;
    let listed: usize = conn
        .zcard(keys::idempotency_index(&who))
        .await
        .expect("zcard");
    assert_eq!(listed, 9_000);
    let accounts = meter_redis::RedisAccounts::new(
        store,
        IdempotencyWindow::new(HOUR).expect("valid window"),
        HistoryRetention::DEFAULT,
    );
    assert!(
        meter_core::AccountStore::delete_account(&accounts, &who)
            .await
            .expect("delete")
    );
    let left: Vec<String> = conn.keys("*{u-busy}*").await.expect("keys");
    assert_eq!(left, Vec::<String>::new());
}

/// Every usage key written expires by itself, is listed in the account's
/// index, and goes with DeleteAccount; another account's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_keys_expire_by_themselves_and_go_with_the_account() {
    use meter_core::{AccountStore, MetricKind, RecordUsage, UsageEvent, UsageStore};

    let server = RedisServer::start();
    let (store, _) = ledger_on(&config(&server));
    let usage = meter_redis::RedisUsage::new(store.clone());
    let now = at("2026-12-01T10:00:00.000Z");
    for who in ["u-metered", "u-other"] {
        let events = (0..3)
            .map(|i| {
                let event = UsageEvent {
                    account: account(who),
                    metric: "api_request".into(),
                    value: 2,
                    event_id: format!("e{i}"),
                    time: Timestamp::from_millis(now.as_millis() - i * 86_400_000).expect("time"),
                    // One event for the log.
                    metadata: if i == 0 {
                        BTreeMap::from([("route".to_owned(), "/v1".to_owned())])
                    } else {
                        BTreeMap::new()
                    },
                };
                (event, MetricKind::Sum)
            })
            .collect();
        let request = RecordUsage {
            account: account(who),
            events,
            retention: meter_core::UsageRetention {
                dedupe_window: HOUR,
                ..meter_core::UsageRetention::default()
            },
        };
        usage.record(&request, now).await.expect("record");
    }
    let mut conn = server.connection().await;
    let written: Vec<String> = conn.keys("*{u-metered}*").await.expect("keys");
    // seen ids, the index, the log, two months and three days.
    assert_eq!(written.len(), 8, "{written:?}");
    let rankings: Vec<String> = conn.keys("usage:top:*").await.expect("keys");
    assert_eq!(rankings.len(), 5, "two months and three days: {rankings:?}");
    for key in written.iter().chain(&rankings) {
        let ttl: i64 = conn.pttl(key).await.expect("pttl");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    let accounts = meter_redis::RedisAccounts::new(
        store,
        IdempotencyWindow::new(HOUR).expect("valid window"),
        HistoryRetention::DEFAULT,
    );
    assert!(
        accounts
            .delete_account(&account("u-metered"))
            .await
            .expect("delete")
    );
    let left: Vec<String> = conn.keys("*{u-metered}*").await.expect("keys");
    assert_eq!(left, Vec::<String>::new());
    let other: Vec<String> = conn.keys("*{u-other}*").await.expect("keys");
    assert_eq!(other.len(), 8);
    for ranking in &rankings {
        let members: Vec<String> = conn.zrange(ranking, 0, -1).await.expect("zrange");
        assert_eq!(
            members,
            ["u-other"],
            "{ranking}: the deleted account left it"
        );
    }
}

/// A sliding window whose header or list was lost (an early expiry, a
/// failover, an operator's DEL) answers and recovers: a list without its
/// header starts over, and a list that lost the bucket its header names as
/// the oldest is read whole, keeping the buckets still in the window.
#[tokio::test]
async fn a_sliding_window_recovers_from_a_lost_header_or_list() {
    use meter_ratelimit::{Algorithm, Check, Limit, RateLimitStore};

    let server = RedisServer::start();
    let store = RedisStore::open(&config(&server)).expect("valid url");
    let clock = meter_testkit::FixedClock::at("2026-03-10T12:00:00.000Z");
    let limits = meter_redis::RedisRateLimits::with_clock(store, Arc::new(clock.clone()));
    let limit = Limit::new(5, Duration::from_secs(60), Algorithm::SlidingWindow).expect("valid");
    let check = || Check {
        key: "k:lost".into(),
        limit,
        cost: 1,
        enforce: true,
    };
    let take = |limits: meter_redis::RedisRateLimits| async move {
        let outcomes = limits.check(vec![check()]).await.expect("answers");
        outcomes[0]
    };
    let (header, list) = ("rl:{k:lost}:s:60000000", "rl:{k:lost}:sl:60000000");
    let mut conn = server.connection().await;
    for step in 0..3 {
        assert!(take(limits.clone()).await.allowed, "step {step}");
        clock.advance(Duration::from_secs(10));
    }
    let sealed: i64 = conn.llen(list).await.expect("LLEN");
    assert_eq!(sealed, 2);

    // The header goes: the key starts over, and its old list with it.
    let _: () = conn.del(header).await.expect("DEL");
    let fresh = take(limits.clone()).await;
    assert_eq!((fresh.allowed, fresh.remaining), (true, 4), "{fresh:?}");
    let sealed: i64 = conn.llen(list).await.expect("LLEN");
    assert_eq!(sealed, 0, "the list without its header went");

    // 12:00:35, 12:00:40: two more buckets sealed, then the list goes and
    // one bucket (12:00:40) is sealed into a new list.
    for _ in 0..2 {
        clock.advance(Duration::from_secs(5));
        assert!(take(limits.clone()).await.allowed);
    }
    let _: () = conn.del(list).await.expect("DEL");
    clock.advance(Duration::from_secs(5));
    assert!(take(limits.clone()).await.allowed);
    // 12:01:31: the header's oldest (12:00:30) left; the list holds 12:00:40
    // instead, still in the window with 12:00:45: two units, this one three.
    clock.set("2026-03-10T12:01:31.000Z");
    let rebuilt = take(limits.clone()).await;
    assert_eq!(
        (rebuilt.allowed, rebuilt.remaining),
        (true, 2),
        "{rebuilt:?}"
    );
}
