//! The store contract suite, on a real redis-server per test.

use std::time::Duration;

use meter_redis::{RedisConfig, RedisCreditLedger, RedisStore};
use meter_testkit::RedisServer;

fn config(url: String) -> RedisConfig {
    RedisConfig {
        url,
        connections: 4,
        connect_timeout: Duration::from_secs(2),
    }
}

meter_testkit::credit_ledger_contract!(window => async move {
    let server = RedisServer::start();
    let store = RedisStore::open(&config(server.url())).expect("valid url");
    (RedisCreditLedger::new(store, window), server)
});
