//! The physical limit in the same run: `redis-benchmark` against the same
//! Redis, at the same concurrency, running the commands a scenario's
//! requests cost meterd (EVALSHA of the very scripts meterd runs).

use std::{
    process::Stdio,
    time::{SystemTime, UNIX_EPOCH},
};

use meter_core::HistoryRetention;
use meter_core::PlanCatalog;
use meter_redis::{accounts, credits, ratelimit, script::LuaScript, stats, usage};
use tokio::process::Command;

use crate::scenario::{CeilingCommand, SPREAD_ACCOUNTS};

/// One redis-benchmark measurement.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Ceiling {
    /// Commands per second.
    pub rate: f64,
    /// 50th percentile latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Runs redis-benchmark on one Redis with fixed settings.
pub struct CeilingProbe {
    redis_benchmark: String,
    host: String,
    port: u16,
    concurrency: usize,
    requests: u64,
}

/// The idempotency window the scripts are called with (unused without a key).
const WINDOW_MS: &str = "86400000";

/// `EVALSHA` of a credits script on the account's credit keys, with the head every
/// credits script starts with.
fn script_head(script: &LuaScript, account: &str) -> Vec<String> {
    head(script, account, &["credits", "grants", "holds", "history"])
}

/// `EVALSHA` of `script` on the keys `names` of `account`, then the clock,
/// no idempotency key, and meterd's default history retention.
fn head(script: &LuaScript, account: &str, names: &[&str]) -> Vec<String> {
    let retention = HistoryRetention::DEFAULT;
    let mut args = vec![
        "EVALSHA".to_owned(),
        script.hash().to_owned(),
        names.len().to_string(),
    ];
    args.extend(
        names
            .iter()
            .map(|name| format!("user:{{{account}}}:{name}")),
    );
    args.extend([
        now_ms().to_string(),
        now_text(),
        String::new(),
        WINDOW_MS.to_owned(),
        retention.max_entries.to_string(),
        retention.max_age_millis().to_string(),
    ]);
    args
}

/// The head of an account script: every key of `account`, the arguments of
/// [`head`], an empty key and the default plan of deploy/plans.toml.
fn account_head(script: &LuaScript, account: &str) -> Vec<String> {
    let keys = [
        "credits",
        "grants",
        "holds",
        "history",
        "profile",
        "subscription",
    ];
    let catalog = example_catalog();
    let free = catalog.default_plan();
    let mut args = head(script, account, &keys);
    args.extend([
        String::new(),
        free.name.clone(),
        free.billing_interval.as_str().to_owned(),
        free.price_micros.to_string(),
        free.credits.to_string(),
        free.credit_period.as_str().to_owned(),
    ]);
    args
}

/// The register script's arguments after the head: the profile.
const PROFILE: [&str; 4] = ["bench@example.com", "", "", ""];

/// The example catalog meterd starts with.
fn example_catalog() -> PlanCatalog {
    PlanCatalog::from_toml(
        "deploy/plans.toml",
        include_str!("../../../deploy/plans.toml"),
    )
    .expect("the example catalog parses")
}

/// Now, as meterd's clock would say.
fn now_timestamp() -> meter_core::Timestamp {
    meter_core::Timestamp::from_millis(now_ms()).unwrap_or(meter_core::Timestamp::EPOCH)
}

/// The ceiling's account `name` (with `__rand_int__` for redis-benchmark).
fn ceiling_account(name: &str) -> meter_core::AccountId {
    meter_core::AccountId::parse("account_id", name).expect("a valid account name")
}

/// One API request of `account` with the id `id`, now.
fn usage_event(
    account: &meter_core::AccountId,
    id: &str,
    now: meter_core::Timestamp,
) -> meter_core::UsageEvent {
    meter_core::UsageEvent {
        account: account.clone(),
        metric: "api_request".into(),
        value: 1,
        event_id: id.to_owned(),
        time: now,
        metadata: Default::default(),
    }
}

fn with(mut head: Vec<String>, rest: &[&str]) -> Vec<String> {
    head.extend(rest.iter().map(|a| (*a).to_owned()));
    head
}

impl CeilingProbe {
    /// Loads meterd's scripts into the Redis at `url` and funds the ceiling's accounts.
    pub async fn prepare(
        redis_benchmark: String,
        url: &str,
        concurrency: usize,
        requests: u64,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
        let info = client.get_connection_info().addr().to_string();
        let (host, port) = info
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
            .ok_or_else(|| format!("cannot tell host and port of {url}"))?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        for script in [
            credits::deduct_script(),
            credits::grant_script(),
            credits::reset_script(),
            credits::reserve_script(),
            credits::snapshot_script(),
            accounts::register_script(),
            accounts::get_script(),
            stats::login_script(),
            stats::get_script(),
            usage::record_script(),
            ratelimit::check_script(),
        ] {
            let _: String = script
                .load_command()
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
        }
        let mut accounts = vec![HOT.to_owned(), CYCLE.to_owned()];
        accounts.extend((0..SPREAD_ACCOUNTS).map(|i| format!("ceiling-{i:012}")));
        // Every account starts with the largest allowance, renewed yearly.
        let total = ((1i64 << 53) - 1).to_string();
        for account in accounts {
            let args = with(
                script_head(credits::reset_script(), &account),
                &[&total, "year", ""],
            );
            let funded: Result<Vec<Option<String>>, _> = redis::cmd(&args[0])
                .arg(&args[1..])
                .query_async(&mut conn)
                .await;
            funded.map_err(|e| format!("funding the ceiling accounts: {e}"))?;
        }
        // The accounts the login and account-read ceilings use, registered.
        let mut registered = vec![HOT.to_owned()];
        registered.extend((0..SPREAD_ACCOUNTS).map(|i| format!("ceiling-login-{i:012}")));
        for account in registered {
            let args = with(
                account_head(accounts::register_script(), &account),
                &PROFILE,
            );
            let made: Result<Vec<Option<String>>, _> = redis::cmd(&args[0])
                .arg(&args[1..])
                .query_async(&mut conn)
                .await;
            made.map_err(|e| format!("registering the ceiling accounts: {e}"))?;
        }
        // The account the stats-read ceiling reads has stats.
        let mut login = vec![
            "EVALSHA".to_owned(),
            stats::login_script().hash().to_owned(),
            "4".to_owned(),
        ];
        login.extend(
            ["stats", "stats:recent", "stats:seen", "subscription"]
                .map(|name| format!("user:{{{HOT}}}:{name}")),
        );
        login.extend([
            now_ms().to_string(),
            now_text(),
            String::new(),
            WINDOW_MS.to_owned(),
            now_text()[..10].to_owned(),
            "1970-01-01".to_owned(),
        ]);
        let counted: Result<Vec<Option<String>>, _> = redis::cmd(&login[0])
            .arg(&login[1..])
            .query_async(&mut conn)
            .await;
        counted.map_err(|e| format!("a login for the stats ceiling: {e}"))?;
        Ok(Self {
            redis_benchmark,
            host,
            port,
            concurrency,
            requests,
        })
    }

    /// The ceiling of `command` with `pipeline` commands per round trip and
    /// `concurrency` clients (the probe's own when `None`), measured now: not
    /// cached, since the machine's speed drifts, so each scenario's ceiling
    /// is taken right after its own load.
    pub async fn measure(
        &self,
        command: &CeilingCommand,
        pipeline: u32,
        concurrency: Option<usize>,
    ) -> Result<Ceiling, String> {
        // `__rand_int__` is replaced by redis-benchmark, from 0 to `-r` - 1.
        let (args, keyspace) = match command {
            CeilingCommand::DeductHot => (
                with(script_head(credits::deduct_script(), HOT), &["1", "", ""]),
                SPREAD_ACCOUNTS,
            ),
            CeilingCommand::DeductSpread => (
                with(
                    script_head(credits::deduct_script(), "ceiling-__rand_int__"),
                    &["1", "", ""],
                ),
                SPREAD_ACCOUNTS,
            ),
            CeilingCommand::ReadScript => {
                let script = credits::snapshot_script();
                let mut args = vec![
                    "EVALSHA".to_owned(),
                    script.hash().to_owned(),
                    "3".to_owned(),
                ];
                args.extend(
                    ["credits", "grants", "holds"].map(|name| format!("user:{{{HOT}}}:{name}")),
                );
                (args, SPREAD_ACCOUNTS)
            }
            // A grant bucket per account: each grant on one of 10^9
            // accounts, so none reaches the limit of live grants.
            CeilingCommand::Grant => (
                with(
                    script_head(credits::grant_script(), "ceiling-grant-__rand_int__"),
                    &["1", "paid", "", "", ""],
                ),
                1_000_000_000,
            ),
            CeilingCommand::Login => (
                with(
                    account_head(accounts::register_script(), "ceiling-login-__rand_int__"),
                    &PROFILE,
                ),
                SPREAD_ACCOUNTS,
            ),
            CeilingCommand::StatsLogin => {
                let mut args = vec![
                    "EVALSHA".to_owned(),
                    stats::login_script().hash().to_owned(),
                    "4".to_owned(),
                ];
                args.extend(
                    ["stats", "stats:recent", "stats:seen", "subscription"]
                        .map(|name| format!("user:{{ceiling-stats-__rand_int__}}:{name}")),
                );
                let today = now_text()[..10].to_owned();
                args.extend([
                    now_ms().to_string(),
                    now_text(),
                    String::new(),
                    WINDOW_MS.to_owned(),
                ]);
                args.extend([today, "1970-01-01".to_owned()]);
                (args, SPREAD_ACCOUNTS)
            }
            CeilingCommand::UsageRecord | CeilingCommand::UsageRecordBatch => {
                let size = if *command == CeilingCommand::UsageRecord {
                    1
                } else {
                    crate::scenario::USAGE_BATCH
                };
                let now = now_timestamp();
                // `__rand_int__` (a number from a billion) names the
                // account and the ids: new ids every time, as meterd's
                // scenario sends.
                let account = ceiling_account("ceiling-usage-__rand_int__");
                let events: Vec<_> = (0..size)
                    .map(|i| {
                        let event = usage_event(&account, &format!("e-{i}-__rand_int__"), now);
                        (event, meter_core::MetricKind::Sum)
                    })
                    .collect();
                (usage::record_command(&account, &events, now), 1_000_000_000)
            }
            CeilingCommand::UsageQuota => {
                let now = now_timestamp();
                let account = ceiling_account("ceiling-quota-__rand_int__");
                let catalog = std::sync::Arc::new(example_catalog());
                let event = usage_event(&account, "quota/q-__rand_int__", now);
                let request = meter_core::CheckQuota {
                    account: account.clone(),
                    metric: "api_request".into(),
                    kind: meter_core::MetricKind::Sum,
                    amount: 1,
                    catalog,
                    consume: Some(meter_core::RecordUsage {
                        account,
                        events: vec![(event, meter_core::MetricKind::Sum)],
                        retention: meter_core::UsageRetention::default(),
                    }),
                };
                (usage::quota_command(&request, now), 1_000_000_000)
            }
            CeilingCommand::RateLimitCheck | CeilingCommand::RateLimitEnvoy => {
                let limit = meter_ratelimit::Limit::new(
                    u64::from(crate::scenario::RATE_LIMIT),
                    std::time::Duration::from_secs(3_600),
                    meter_ratelimit::Algorithm::SlidingWindow,
                )
                .map_err(|e| format!("the ceiling's limit: {e}"))?;
                let check = |key: &str| meter_ratelimit::Check {
                    key: key.to_owned(),
                    limit,
                    cost: 1,
                    enforce: true,
                };
                let checks = if *command == CeilingCommand::RateLimitCheck {
                    vec![check("k:ceiling-rl-__rand_int__")]
                } else {
                    vec![
                        check("e:edge:remote_address=ceiling-ip-__rand_int__"),
                        check("e:edge:tenant=ceiling-tenant-__rand_int__"),
                    ]
                };
                (ratelimit::check_command(&checks), SPREAD_ACCOUNTS)
            }
            CeilingCommand::StatsRead => {
                let mut args = vec![
                    "EVALSHA".to_owned(),
                    stats::get_script().hash().to_owned(),
                    "4".to_owned(),
                ];
                args.extend(
                    ["stats", "stats:recent", "stats:seen", "subscription"]
                        .map(|name| format!("user:{{{HOT}}}:{name}")),
                );
                (args, SPREAD_ACCOUNTS)
            }
            CeilingCommand::AccountRead => {
                (account_head(accounts::get_script(), HOT), SPREAD_ACCOUNTS)
            }
            CeilingCommand::ReserveCycle => (
                with(
                    script_head(credits::reserve_script(), CYCLE),
                    &["2", &now_text(), "", ""],
                ),
                SPREAD_ACCOUNTS,
            ),
        };
        let output = Command::new(&self.redis_benchmark)
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-c",
                &concurrency.unwrap_or(self.concurrency).to_string(),
            ])
            .args([
                "-n",
                &self.requests.to_string(),
                "-P",
                &pipeline.to_string(),
            ])
            .args(["-r", &keyspace.to_string(), "--csv", "--precision", "3"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                format!(
                    "cannot run {}: {e} (install redis-tools)",
                    self.redis_benchmark
                )
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let ceiling = parse_csv(&text).ok_or_else(|| {
            format!(
                "unexpected redis-benchmark output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        Ok(ceiling)
    }
}

/// The hot account of the ceiling.
const HOT: &str = "ceiling-hot";
/// The account of the reserve cycle.
const CYCLE: &str = "ceiling-cycle";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// The current instant as the scripts' stored text, as meterd passes it.
fn now_text() -> String {
    meter_core::Timestamp::from_millis(now_ms())
        .unwrap_or(meter_core::Timestamp::EPOCH)
        .to_string()
}

/// Reads the data line of `redis-benchmark --csv`:
/// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms".
fn parse_csv(text: &str) -> Option<Ceiling> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("\"test\""))?;
    // The test name may contain commas; the last seven fields are numbers.
    let fields: Vec<f64> = line
        .rsplitn(8, ',')
        .take(7)
        .map(|f| f.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    // rsplitn yields from the end: max, p99, p95, p50, min, avg, rps.
    Some(Ceiling {
        rate: fields[6],
        p50_ms: fields[3],
        p99_ms: fields[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_line_gives_rate_and_percentiles_even_with_commas_in_the_name() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"EVALSHA abc,1 k\",\"48123.45\",\"1.2\",\"0.1\",\"1.1\",\"2.0\",\"2.3\",\"9.0\"\n";
        let ceiling = parse_csv(text).expect("parses");
        assert_eq!(
            (ceiling.rate, ceiling.p50_ms, ceiling.p99_ms),
            (48123.45, 1.1, 2.3)
        );
        assert!(parse_csv("garbage").is_none());
    }
}
