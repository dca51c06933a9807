//! The scenarios: what one request is, how accounts are prepared, how the
//! end state is checked, and which Redis commands give the ceiling.
//!
//! A new scenario is a variant here plus its arms in the `match`es below.

use std::fmt;

use meter_api::v1::{
    CheckQuotaRequest, CommitRequest, DeductRequest, GetAccountRequest, GetBalanceRequest,
    GetStatsRequest, GetUsageRequest, GrantRequest, Profile, RecordLoginRequest,
    RecordUsageRequest, RegisterAccountRequest, ReserveRequest, ResetRequest, StreamUsageRequest,
    UsageEvent, credits_service_client::CreditsServiceClient,
    stats_service_client::StatsServiceClient,
    subscription_service_client::SubscriptionServiceClient,
    usage_service_client::UsageServiceClient,
};
use meter_api::{
    envoy::{
        extensions::common::ratelimit::v3::{
            RateLimitDescriptor,
            rate_limit_descriptor::{Entry, RateLimitOverride},
        },
        service::ratelimit::v3::{
            RateLimitRequest, rate_limit_response::Code as EnvoyCode,
            rate_limit_service_client::RateLimitServiceClient as EnvoyClient,
        },
        r#type::v3::RateLimitUnit,
    },
    v1::{
        CheckRateLimitRequest, RateLimitAlgorithm,
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use tonic::{Status, transport::Channel};

/// The clients every scenario drives, over one channel.
#[derive(Clone, Debug)]
pub struct Client {
    /// CreditsService.
    pub credits: CreditsServiceClient<Channel>,
    /// SubscriptionService.
    pub accounts: SubscriptionServiceClient<Channel>,
    /// StatsService.
    pub stats: StatsServiceClient<Channel>,
    /// UsageService.
    pub usage: UsageServiceClient<Channel>,
    /// RateLimitService.
    pub rate_limits: RateLimitServiceClient<Channel>,
    /// Envoy's rate limit service.
    pub envoy: EnvoyClient<Channel>,
}

impl Client {
    /// Both clients on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            credits: CreditsServiceClient::new(channel.clone()),
            accounts: SubscriptionServiceClient::new(channel.clone()),
            stats: StatsServiceClient::new(channel.clone()),
            usage: UsageServiceClient::new(channel.clone()),
            rate_limits: RateLimitServiceClient::new(channel.clone()),
            envoy: EnvoyClient::new(channel),
        }
    }
}

/// The credits of the default plan (`free` in deploy/plans.toml), which
/// registration allocates.
const FREE_CREDITS: i64 = 100;

/// The largest balance meterd accepts: hot accounts start there, so deducts never run dry.
const MAX_CREDITS: i64 = (1 << 53) - 1;
/// Accounts of the scenarios that spread load.
pub const SPREAD_ACCOUNTS: u64 = 1_000;
/// Total of each mixed-traffic account: room for every deduct and grant.
const MIXED_TOTAL: i64 = 1 << 40;
/// Total of the account that get-balance reads.
const READ_TOTAL: i64 = 1_000;

/// How requests reach meterd: HTTP/2 connections, and requests in flight over all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// HTTP/2 connections.
    pub connections: usize,
    /// Requests in flight at once, spread evenly over the connections.
    pub in_flight: usize,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_connection = self.in_flight.div_ceil(self.connections.max(1));
        write!(f, "{}×{per_connection}", self.connections)
    }
}

/// One benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Deduct 1 credit from one hot account.
    DeductHot,
    /// The same over 50 connections with 1 request in flight each: many
    /// client pods, each with its own channel.
    DeductHotMany,
    /// Deduct 1 credit from one of 1,000 accounts.
    DeductSpread,
    /// Read one account's balance.
    GetBalance,
    /// Grant 1 credit, each caller to its own accounts (a new one every 10
    /// grants: each live grant costs every call on its account, and an
    /// account holds at most 100).
    Grant,
    /// Real-looking traffic over 1,000 accounts: 70 % reads, 25 % deducts,
    /// 5 % grants (to each caller's own accounts, as in `grant`).
    Mixed,
    /// Reserve 2 credits of one hot account, then commit 1: one cycle of
    /// an LLM call, two calls.
    ReserveCommit,
    /// RegisterAccount of one of 1,000 registered accounts: a login, which
    /// moves `last_login` only.
    Login,
    /// GetAccount of one registered account: profile, subscription and
    /// balance in one read.
    GetAccount,
    /// RecordLogin of one of 1,000 accounts, in New York time: every
    /// login of a web app (each account's first counts the day).
    RecordLogin,
    /// GetStats of one account: the dashboard's poll.
    GetStats,
    /// RecordUsage of one event (a new id each) on one of 1,000 accounts.
    RecordUsage,
    /// RecordUsage of 100 events (new ids) of one of 1,000 accounts per call.
    RecordUsageBatch,
    /// StreamUsage of 10 messages of 100 events (new ids), each message of
    /// one of 1,000 accounts: one stream per call.
    RecordUsageStream,
    /// CheckQuota consuming 1 API request of one of 1,000 accounts (the
    /// free plan's hard limit of 1,000 a month).
    CheckQuota,
    /// CheckRateLimit of one of 1,000 keys, sliding window (a limit never
    /// reached: every check is counted).
    CheckRateLimit,
    /// Envoy's ShouldRateLimit with two descriptors of the example limits
    /// (`edge`: a client address of 1,000 and a tenant of 100), each with a
    /// limit override never reached: both counted, in one script.
    ShouldRateLimit,
}

/// The limit of the rate limit scenarios: never reached in a run.
pub const RATE_LIMIT: u32 = 1_000_000_000;
/// Tenants of `should-rate-limit`.
pub const TENANTS: u64 = 100;

/// Events per call of `record-usage-batch`, and per message of `record-usage-stream`.
pub const USAGE_BATCH: usize = 100;
/// Messages per stream of `record-usage-stream`.
pub const STREAM_MESSAGES: usize = 10;

/// What a request did, for the end-state check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A read, or a deduct that was declined.
    Nothing,
    /// One credit was deducted.
    Deducted,
    /// One credit was granted.
    Granted,
}

/// A Redis command run by redis-benchmark as the ceiling of one request kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeilingCommand {
    /// EVALSHA of the deduct script on one hot account.
    DeductHot,
    /// EVALSHA of the deduct script on one of 1,000 accounts.
    DeductSpread,
    /// EVALSHA of the grant script, each on a fresh account.
    Grant,
    /// EVALSHA of the snapshot script a balance read runs.
    ReadScript,
    /// EVALSHA of the reserve script with holds that expire at once: each
    /// call releases the previous hold and makes one, the Redis work of a
    /// reserve-commit cycle in one call.
    ReserveCycle,
    /// EVALSHA of the register script on one of 1,000 registered accounts.
    Login,
    /// EVALSHA of the account read script on one registered account.
    AccountRead,
    /// EVALSHA of the login script on one of 1,000 accounts (after the
    /// first, a login of a day already counted).
    StatsLogin,
    /// EVALSHA of the stats read script on one account.
    StatsRead,
    /// EVALSHA of the usage record script with one new event.
    UsageRecord,
    /// EVALSHA of the usage record script with 100 new events.
    UsageRecordBatch,
    /// EVALSHA of the quota script consuming one unit, on one of 10^9 accounts.
    UsageQuota,
    /// EVALSHA of the rate limit script with one sliding-window check of one of 1,000 keys.
    RateLimitCheck,
    /// EVALSHA of the rate limit script with two sliding-window checks.
    RateLimitEnvoy,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Self; 17] = [
        Self::DeductHot,
        Self::DeductHotMany,
        Self::DeductSpread,
        Self::GetBalance,
        Self::Grant,
        Self::Mixed,
        Self::ReserveCommit,
        Self::Login,
        Self::GetAccount,
        Self::RecordLogin,
        Self::GetStats,
        Self::RecordUsage,
        Self::RecordUsageBatch,
        Self::RecordUsageStream,
        Self::CheckQuota,
        Self::CheckRateLimit,
        Self::ShouldRateLimit,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::DeductHot => "deduct-hot",
            Self::DeductHotMany => "deduct-hot-many",
            Self::DeductSpread => "deduct-spread",
            Self::GetBalance => "get-balance",
            Self::Grant => "grant",
            Self::Mixed => "mixed",
            Self::ReserveCommit => "reserve-commit",
            Self::Login => "login",
            Self::GetAccount => "get-account",
            Self::RecordLogin => "record-login",
            Self::GetStats => "get-stats",
            Self::RecordUsage => "record-usage",
            Self::RecordUsageBatch => "record-usage-batch",
            Self::RecordUsageStream => "record-usage-stream",
            Self::CheckQuota => "check-quota",
            Self::CheckRateLimit => "check-rate-limit",
            Self::ShouldRateLimit => "should-rate-limit",
        }
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario {name:?}; expected one of {}, or standard",
                    names.join(", ")
                )
            })
    }

    /// The shape this scenario always runs in; `None` for the run's own
    /// (`--connections`, `--concurrency`).
    pub fn shape(self) -> Option<Shape> {
        match self {
            Self::DeductHotMany => Some(Shape {
                connections: 50,
                in_flight: 50,
            }),
            // 8 streams, each with up to 4 batches of 100 events in flight
            // in meterd: 32 scripts queued at Redis, as 32 callers of
            // RecordUsage would have.
            Self::RecordUsageStream => Some(Shape {
                connections: 2,
                in_flight: 8,
            }),
            _ => None,
        }
    }

    /// The ceiling: Redis commands with their share of requests (weights sum to 1).
    pub fn ceiling(self) -> Vec<(f64, CeilingCommand)> {
        match self {
            Self::DeductHot | Self::DeductHotMany => vec![(1.0, CeilingCommand::DeductHot)],
            Self::DeductSpread => vec![(1.0, CeilingCommand::DeductSpread)],
            Self::GetBalance => vec![(1.0, CeilingCommand::ReadScript)],
            Self::Grant => vec![(1.0, CeilingCommand::Grant)],
            Self::Mixed => vec![
                (0.70, CeilingCommand::ReadScript),
                (0.25, CeilingCommand::DeductSpread),
                (0.05, CeilingCommand::Grant),
            ],
            Self::ReserveCommit => vec![(1.0, CeilingCommand::ReserveCycle)],
            Self::Login => vec![(1.0, CeilingCommand::Login)],
            Self::GetAccount => vec![(1.0, CeilingCommand::AccountRead)],
            Self::RecordLogin => vec![(1.0, CeilingCommand::StatsLogin)],
            Self::GetStats => vec![(1.0, CeilingCommand::StatsRead)],
            Self::RecordUsage => vec![(1.0, CeilingCommand::UsageRecord)],
            Self::RecordUsageBatch => vec![(1.0, CeilingCommand::UsageRecordBatch)],
            // A stream carries the events of 10 batches.
            Self::RecordUsageStream => {
                vec![(STREAM_MESSAGES as f64, CeilingCommand::UsageRecordBatch)]
            }
            Self::CheckQuota => vec![(1.0, CeilingCommand::UsageQuota)],
            Self::CheckRateLimit => vec![(1.0, CeilingCommand::RateLimitCheck)],
            Self::ShouldRateLimit => vec![(1.0, CeilingCommand::RateLimitEnvoy)],
        }
    }

    /// Sets up the accounts the scenario uses, all named under `run`.
    pub async fn prepare(
        self,
        client: &mut Client,
        run: &str,
        _workers: usize,
    ) -> Result<(), Status> {
        let accounts: Vec<(String, i64)> = match self {
            Self::DeductHot | Self::DeductHotMany | Self::ReserveCommit => {
                vec![(hot(run, self), MAX_CREDITS)]
            }
            Self::DeductSpread => (0..SPREAD_ACCOUNTS)
                .map(|i| (spread(run, "spread", i), MAX_CREDITS))
                .collect(),
            Self::GetBalance => vec![(read(run), READ_TOTAL)],
            Self::Grant => Vec::new(),
            Self::Mixed => (0..SPREAD_ACCOUNTS)
                .map(|i| (spread(run, "mixed", i), MIXED_TOTAL))
                .collect(),
            Self::Login => {
                for i in 0..SPREAD_ACCOUNTS {
                    register(client, spread(run, "login", i)).await?;
                }
                Vec::new()
            }
            Self::GetAccount => {
                register(client, profiled(run)).await?;
                Vec::new()
            }
            Self::RecordLogin
            | Self::RecordUsage
            | Self::RecordUsageBatch
            | Self::RecordUsageStream
            | Self::CheckQuota
            | Self::CheckRateLimit
            | Self::ShouldRateLimit => Vec::new(),
            Self::GetStats => {
                record_login(client, profiled(run)).await?;
                Vec::new()
            }
        };
        for (account_id, total) in accounts {
            client
                .credits
                .reset(ResetRequest {
                    account_id,
                    total: Some(total),
                    idempotency_key: String::new(),
                })
                .await?;
        }
        Ok(())
    }

    /// Sends request number `seq` of worker `worker`.
    pub async fn call(
        self,
        client: &mut Client,
        run: &str,
        worker: usize,
        seq: u64,
    ) -> Result<Effect, Status> {
        // Spread accounts are visited in a scrambled but even order.
        let pick = (seq
            .wrapping_mul(7_919)
            .wrapping_add(worker as u64 * 104_729))
            % SPREAD_ACCOUNTS;
        match self {
            Self::DeductHot | Self::DeductHotMany => deduct(client, hot(run, self)).await,
            Self::DeductSpread => deduct(client, spread(run, "spread", pick)).await,
            Self::GetBalance => {
                let total = balance_total(client, read(run)).await?;
                if total == READ_TOTAL {
                    Ok(Effect::Nothing)
                } else {
                    Err(Status::data_loss(format!(
                        "read total {total}, expected {READ_TOTAL}"
                    )))
                }
            }
            Self::Grant => grant(client, granted(run, self, worker, seq / 10)).await,
            Self::Mixed => match seq % 20 {
                0..14 => balance_total(client, spread(run, "mixed", pick))
                    .await
                    .map(|_| Effect::Nothing),
                14..19 => deduct(client, spread(run, "mixed", pick)).await,
                _ => grant(client, granted(run, self, worker, seq / 200)).await,
            },
            Self::ReserveCommit => reserve_commit(client, hot(run, self)).await,
            Self::Login => {
                if register(client, spread(run, "login", pick)).await? {
                    Err(Status::data_loss("a login created the account again"))
                } else {
                    Ok(Effect::Nothing)
                }
            }
            Self::RecordUsageStream => {
                let messages: Vec<StreamUsageRequest> = (0..STREAM_MESSAGES as u64)
                    .map(|m| {
                        let pick = (pick + m * 101) % SPREAD_ACCOUNTS;
                        StreamUsageRequest {
                            events: new_events(&spread(run, self.name(), pick), run, USAGE_BATCH),
                        }
                    })
                    .collect();
                let summary = client
                    .usage
                    .stream_usage(tokio_stream::iter(messages))
                    .await?
                    .into_inner();
                let sent = i64::try_from(STREAM_MESSAGES * USAGE_BATCH).unwrap_or(i64::MAX);
                if summary.recorded == sent {
                    Ok(Effect::Granted)
                } else {
                    Err(Status::data_loss(format!(
                        "{} of {sent} new streamed events recorded",
                        summary.recorded
                    )))
                }
            }
            Self::CheckQuota => {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reply = client
                    .usage
                    .check_quota(CheckQuotaRequest {
                        account_id: spread(run, self.name(), pick),
                        metric: "api_request".into(),
                        amount: 1,
                        consume: true,
                        idempotency_key: format!("{run}-{n}"),
                    })
                    .await?
                    .into_inner();
                Ok(if reply.allowed {
                    Effect::Granted
                } else {
                    Effect::Nothing
                })
            }
            Self::CheckRateLimit => {
                let reply = client
                    .rate_limits
                    .check_rate_limit(rate_limit_check(&spread(run, "rl", pick)))
                    .await?
                    .into_inner();
                if reply.allowed {
                    Ok(Effect::Granted)
                } else {
                    Err(Status::data_loss(format!("a check was refused: {reply:?}")))
                }
            }
            Self::ShouldRateLimit => {
                let reply = client
                    .envoy
                    .should_rate_limit(envoy_request(&[
                        ("remote_address", spread(run, "ip", pick)),
                        ("tenant", spread(run, "tenant", pick % TENANTS)),
                    ]))
                    .await?
                    .into_inner();
                if reply.overall_code == i32::from(EnvoyCode::Ok) {
                    Ok(Effect::Granted)
                } else {
                    Err(Status::data_loss(format!(
                        "a request was refused: {reply:?}"
                    )))
                }
            }
            Self::RecordUsage | Self::RecordUsageBatch => {
                let size = if self == Self::RecordUsage {
                    1
                } else {
                    USAGE_BATCH
                };
                let events = new_events(&spread(run, self.name(), pick), run, size);
                let reply = client
                    .usage
                    .record_usage(RecordUsageRequest { events })
                    .await?
                    .into_inner();
                if reply.recorded == i64::try_from(size).unwrap_or(i64::MAX) {
                    Ok(Effect::Granted)
                } else {
                    Err(Status::data_loss(format!(
                        "{} of {size} new events recorded",
                        reply.recorded
                    )))
                }
            }
            Self::RecordLogin => {
                let first = record_login(client, spread(run, "stats", pick)).await?;
                Ok(if first {
                    Effect::Granted
                } else {
                    Effect::Nothing
                })
            }
            Self::GetStats => {
                let stats = client
                    .stats
                    .get_stats(GetStatsRequest {
                        account_id: profiled(run),
                    })
                    .await?
                    .into_inner()
                    .stats
                    .ok_or_else(|| Status::data_loss("no stats in the reply"))?;
                if stats.days_active == 1 && stats.plan == "free" {
                    Ok(Effect::Nothing)
                } else {
                    Err(Status::data_loss(format!(
                        "stats read days_active {} on plan {:?}",
                        stats.days_active, stats.plan
                    )))
                }
            }
            Self::GetAccount => {
                let account = client
                    .accounts
                    .get_account(GetAccountRequest {
                        account_id: profiled(run),
                    })
                    .await?
                    .into_inner()
                    .account
                    .and_then(|a| a.balance)
                    .ok_or_else(|| Status::data_loss("no balance in the account"))?;
                if account.total == FREE_CREDITS {
                    Ok(Effect::Nothing)
                } else {
                    Err(Status::data_loss(format!(
                        "account total {}, expected {FREE_CREDITS}",
                        account.total
                    )))
                }
            }
        }
    }

    /// Checks the stored end state against what the requests reported:
    /// no update lost, none applied twice. Returns a line for the report.
    pub async fn verify(
        self,
        client: &mut Client,
        run: &str,
        workers: usize,
        deducted: u64,
        granted_count: u64,
    ) -> Result<String, String> {
        let sum = |values: Vec<(i64, i64)>| {
            values
                .iter()
                .fold((0i64, 0i64), |(t, u), (a, b)| (t + a, u + b))
        };
        let (expected_total, accounts) = match self {
            Self::DeductHot | Self::DeductHotMany | Self::ReserveCommit => {
                (MAX_CREDITS, vec![hot(run, self)])
            }
            Self::DeductSpread => (
                MAX_CREDITS * SPREAD_ACCOUNTS as i64,
                spread_names(run, "spread"),
            ),
            Self::GetBalance | Self::GetAccount | Self::GetStats => {
                return Ok("every read saw the stored total".into());
            }
            Self::RecordUsage
            | Self::RecordUsageBatch
            | Self::RecordUsageStream
            | Self::CheckQuota => {
                let per_call = match self {
                    Self::RecordUsageBatch => USAGE_BATCH,
                    Self::RecordUsageStream => STREAM_MESSAGES * USAGE_BATCH,
                    _ => 1,
                };
                let expected = granted_count * per_call as u64;
                let stored = usage_total(client, run, self).await?;
                return if stored == expected {
                    Ok(format!(
                        "stored usage = {stored} events = the events answered recorded"
                    ))
                } else {
                    Err(format!(
                        "stored usage {stored}, events answered recorded {expected}"
                    ))
                };
            }
            Self::CheckRateLimit | Self::ShouldRateLimit => {
                return verify_rate_limits(client, run, self, granted_count).await;
            }
            Self::RecordLogin => {
                let mut days = 0;
                for account in spread_names(run, "stats") {
                    let stats = client
                        .stats
                        .get_stats(GetStatsRequest {
                            account_id: account,
                        })
                        .await
                        .map_err(|s| format!("reading the end state: {s}"))?
                        .into_inner()
                        .stats
                        .ok_or("no stats in the reply")?;
                    days += stats.days_active;
                }
                let counted = i64::try_from(granted_count).unwrap_or(i64::MAX);
                return if days == counted {
                    Ok(format!(
                        "{days} days active over the accounts = the logins that were a day's first"
                    ))
                } else {
                    Err(format!(
                        "stored days active {days}, first logins reported {counted}"
                    ))
                };
            }
            Self::Login => (
                FREE_CREDITS * SPREAD_ACCOUNTS as i64,
                spread_names(run, "login"),
            ),
            Self::Grant => (0, Vec::new()),
            Self::Mixed => (
                MIXED_TOTAL * SPREAD_ACCOUNTS as i64,
                spread_names(run, "mixed"),
            ),
        };
        let mut balances = Vec::with_capacity(accounts.len());
        if matches!(self, Self::Grant | Self::Mixed) {
            // Each caller's grant accounts, in order, up to the first it never reached.
            for worker in 0..workers {
                for bucket in 0.. {
                    let account = granted(run, self, worker, bucket);
                    let read = balance(client, account)
                        .await
                        .map_err(|s| format!("reading the end state: {s}"))?;
                    if read.0 == 0 {
                        break;
                    }
                    balances.push(read);
                }
            }
        }
        for account in accounts {
            balances.push(
                balance(client, account)
                    .await
                    .map_err(|s| format!("reading the end state: {s}"))?,
            );
        }
        if balances.iter().any(|(total, used)| used > total) {
            return Err("an account went below zero".into());
        }
        let (total, used) = sum(balances);
        let want = (expected_total + granted_count as i64, deducted as i64);
        if (total, used) == want {
            Ok(format!(
                "stored used = {used} deducts, total = start + {granted_count} grants"
            ))
        } else {
            Err(format!(
                "stored (total, used) = ({total}, {used}), requests reported {want:?}"
            ))
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn hot(run: &str, scenario: Scenario) -> String {
    format!("{run}-{scenario}")
}

fn profiled(run: &str) -> String {
    format!("{run}-account")
}

fn read(run: &str) -> String {
    format!("{run}-read")
}

fn granted(run: &str, scenario: Scenario, worker: usize, bucket: u64) -> String {
    format!("{run}-{scenario}-granted-{worker}-{bucket}")
}

fn spread(run: &str, kind: &str, i: u64) -> String {
    format!("{run}-{kind}-{i}")
}

fn spread_names(run: &str, kind: &str) -> Vec<String> {
    (0..SPREAD_ACCOUNTS).map(|i| spread(run, kind, i)).collect()
}

async fn deduct(client: &mut Client, account_id: String) -> Result<Effect, Status> {
    let request = DeductRequest {
        account_id,
        amount: 1,
        ..DeductRequest::default()
    };
    let applied = client.credits.deduct(request).await?.into_inner().applied;
    Ok(if applied {
        Effect::Deducted
    } else {
        Effect::Nothing
    })
}

async fn grant(client: &mut Client, account_id: String) -> Result<Effect, Status> {
    let request = GrantRequest {
        account_id,
        amount: 1,
        ..GrantRequest::default()
    };
    client.credits.grant(request).await?;
    Ok(Effect::Granted)
}

async fn reserve_commit(client: &mut Client, account_id: String) -> Result<Effect, Status> {
    let held = client
        .credits
        .reserve(ReserveRequest {
            account_id: account_id.clone(),
            amount: 2,
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..ReserveRequest::default()
        })
        .await?
        .into_inner();
    if !held.applied {
        return Ok(Effect::Nothing);
    }
    client
        .credits
        .commit(CommitRequest {
            account_id,
            hold_id: held.hold_id,
            amount: 1,
            reason: String::new(),
        })
        .await?;
    Ok(Effect::Deducted)
}

/// The `api_request` usage of this month over the accounts of `scenario`.
/// `size` API-request events of `account_id` with ids no call used before
/// (across the warm-up and the measured run, which both count `seq` from 0).
fn new_events(account_id: &str, run: &str, size: usize) -> Vec<UsageEvent> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let first = NEXT.fetch_add(size as u64, std::sync::atomic::Ordering::Relaxed);
    (0..size as u64)
        .map(|i| UsageEvent {
            account_id: account_id.to_owned(),
            metric: "api_request".into(),
            value: 1,
            event_id: format!("{run}-{}", first + i),
            time: None,
            metadata: Default::default(),
        })
        .collect()
}

async fn usage_total(client: &mut Client, run: &str, scenario: Scenario) -> Result<u64, String> {
    let month = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        meter_core::UsagePeriod::month_of(
            meter_core::Timestamp::from_millis(now).unwrap_or(meter_core::Timestamp::EPOCH),
        )
        .to_string()
    };
    let mut total = 0u64;
    for account in spread_names(run, scenario.name()) {
        let reply = client
            .usage
            .get_usage(GetUsageRequest {
                account_id: account,
                period: month.clone(),
                metrics: vec!["api_request".into()],
            })
            .await
            .map_err(|s| format!("reading the end state: {s}"))?
            .into_inner();
        total += u64::try_from(reply.values.get("api_request").copied().unwrap_or(0)).unwrap_or(0);
    }
    Ok(total)
}

/// Records a login of `account_id` in New York time; whether it was the day's first.
async fn record_login(client: &mut Client, account_id: String) -> Result<bool, Status> {
    let request = RecordLoginRequest {
        account_id,
        time_zone: "America/New_York".into(),
        ..RecordLoginRequest::default()
    };
    Ok(client
        .stats
        .record_login(request)
        .await?
        .into_inner()
        .first_login_today)
}

/// Registers `account_id`; whether this call created it.
async fn register(client: &mut Client, account_id: String) -> Result<bool, Status> {
    let request = RegisterAccountRequest {
        account_id,
        profile: Some(Profile {
            email: "bench@example.com".into(),
            ..Profile::default()
        }),
        idempotency_key: String::new(),
    };
    Ok(client
        .accounts
        .register_account(request)
        .await?
        .into_inner()
        .created)
}

async fn balance(client: &mut Client, account_id: String) -> Result<(i64, i64), Status> {
    let reply = client
        .credits
        .get_balance(GetBalanceRequest { account_id })
        .await?
        .into_inner();
    let balance = reply
        .balance
        .ok_or_else(|| Status::data_loss("no balance in reply"))?;
    Ok((balance.total, balance.used))
}

async fn balance_total(client: &mut Client, account_id: String) -> Result<i64, Status> {
    balance(client, account_id).await.map(|(total, _)| total)
}

/// The CheckRateLimit of `check-rate-limit` on `key`.
fn rate_limit_check(key: &str) -> CheckRateLimitRequest {
    CheckRateLimitRequest {
        key: key.to_owned(),
        limit: u64::from(RATE_LIMIT),
        window: Some(prost_types::Duration {
            seconds: 3_600,
            nanos: 0,
        }),
        algorithm: RateLimitAlgorithm::SlidingWindow.into(),
        ..CheckRateLimitRequest::default()
    }
}

/// A ShouldRateLimit of domain `edge` with one descriptor per `(key, value)`,
/// each overriding its limit with [`RATE_LIMIT`] an hour.
pub fn envoy_request(descriptors: &[(&str, String)]) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors: descriptors
            .iter()
            .map(|(key, value)| RateLimitDescriptor {
                entries: vec![Entry {
                    key: (*key).to_owned(),
                    value: value.clone(),
                }],
                limit: Some(RateLimitOverride {
                    requests_per_unit: RATE_LIMIT,
                    unit: RateLimitUnit::Hour.into(),
                }),
                hits_addend: None,
            })
            .collect(),
        hits_addend: 0,
    }
}

/// Checks that the counts stored under every key of `scenario` add up to
/// the checks answered allowed: one more check per key reads what is left.
async fn verify_rate_limits(
    client: &mut Client,
    run: &str,
    scenario: Scenario,
    granted: u64,
) -> Result<String, String> {
    let limit = u64::from(RATE_LIMIT);
    let read = |what: &str, s: Status| format!("reading the end state ({what}): {s}");
    let mut sums = Vec::new();
    let kinds: &[(&str, u64)] = match scenario {
        Scenario::CheckRateLimit => &[("rl", SPREAD_ACCOUNTS)],
        _ => &[("ip", SPREAD_ACCOUNTS), ("tenant", TENANTS)],
    };
    for &(kind, keys) in kinds {
        let mut counted = 0u64;
        for i in 0..keys {
            let key = spread(run, kind, i);
            let remaining = if scenario == Scenario::CheckRateLimit {
                client
                    .rate_limits
                    .check_rate_limit(rate_limit_check(&key))
                    .await
                    .map_err(|s| read(kind, s))?
                    .into_inner()
                    .remaining
            } else {
                let key_name = if kind == "ip" {
                    "remote_address"
                } else {
                    "tenant"
                };
                let reply = client
                    .envoy
                    .should_rate_limit(envoy_request(&[(key_name, key)]))
                    .await
                    .map_err(|s| read(kind, s))?
                    .into_inner();
                u64::from(reply.statuses.first().map_or(0, |s| s.limit_remaining))
            };
            counted += limit - remaining - 1;
        }
        sums.push(counted);
    }
    if sums.iter().all(|&counted| counted == granted) {
        Ok(format!(
            "counted under the keys = {granted} checks answered allowed"
        ))
    } else {
        Err(format!(
            "counted under the keys {sums:?}, checks answered allowed {granted}"
        ))
    }
}
