//! The store contract suite, on a real redis-server per test.

use meter_redis::{RedisConfig, RedisCreditLedger, RedisStore};
use meter_testkit::RedisServer;

meter_testkit::credit_ledger_contract!(window, retention => async move {
    let server = RedisServer::start();
    let store = RedisStore::open(&RedisConfig::new(server.url())).expect("valid url");
    (RedisCreditLedger::new(store, window, retention), server)
});

mod accounts {
    use meter_core::HistoryRetention;
    use meter_redis::{RedisAccounts, RedisConfig, RedisCreditLedger, RedisStore};
    use meter_testkit::RedisServer;

    meter_testkit::account_store_contract!(window => async move {
        let server = RedisServer::start();
        let store = RedisStore::open(&RedisConfig::new(server.url())).expect("valid url");
        (
            RedisCreditLedger::new(store.clone(), window, HistoryRetention::DEFAULT),
            RedisAccounts::new(store, window, HistoryRetention::DEFAULT),
            server,
        )
    });
}

mod stats {
    use meter_core::HistoryRetention;
    use meter_redis::{RedisAccounts, RedisConfig, RedisStats, RedisStore};
    use meter_testkit::RedisServer;

    meter_testkit::stats_store_contract!(window => async move {
        let server = RedisServer::start();
        let store = RedisStore::open(&RedisConfig::new(server.url())).expect("valid url");
        (
            RedisStats::new(store.clone(), window),
            RedisAccounts::new(store, window, HistoryRetention::DEFAULT),
            server,
        )
    });
}

mod usage {
    use meter_redis::{RedisConfig, RedisStore, RedisUsage};
    use meter_testkit::RedisServer;

    meter_testkit::usage_store_contract!(async move {
        let server = RedisServer::start();
        let store = RedisStore::open(&RedisConfig::new(server.url())).expect("valid url");
        (
            RedisUsage::new(store.clone()),
            meter_redis::RedisAccounts::new(
                store,
                meter_core::IdempotencyWindow::new(std::time::Duration::from_secs(3600))
                    .expect("valid window"),
                meter_core::HistoryRetention::DEFAULT,
            ),
            server,
        )
    });
}

mod ratelimit {
    use std::sync::Arc;

    use meter_redis::{RedisConfig, RedisRateLimits, RedisStore};
    use meter_testkit::{FixedClock, RedisServer};

    meter_testkit::rate_limit_store_contract!(|clock: FixedClock| async move {
        let server = RedisServer::start();
        let store = RedisStore::open(&RedisConfig::new(server.url())).expect("valid url");
        (RedisRateLimits::with_clock(store, Arc::new(clock)), server)
    });
}
