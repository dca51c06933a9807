//! Starts the real `meterd` server in-process on a free port.

#![allow(dead_code, missing_docs)]

use std::{
    io::Read,
    net::SocketAddr,
    process::{Child, ChildStderr, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use meter_api::v1::{Balance, GetBalanceRequest, credits_service_client::CreditsServiceClient};
use meter_core::{Clock, IdempotencyWindow, SystemClock};
use meter_redis::RedisConfig;
use meterd::{Config, Stop, StoreConfig};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A running meterd; stopped (gracefully) when dropped or by [`Meterd::stop`].
pub struct Meterd {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<Stop>>,
    task: Option<JoinHandle<Result<(), meterd::RunError>>>,
}

/// The protobuf timestamp of a test time (`2026-03-10T12:00:00.000Z`).
pub fn ts(text: &str) -> prost_types::Timestamp {
    let millis = meter_testkit::timestamp(text).as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).expect("in range"),
    }
}

/// The settings of most tests: short health interval, 1 h idempotency window.
pub fn config(store: StoreConfig) -> Config {
    Config {
        idempotency_window: IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid"),
        health_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Config::new(store).expect("defaults")
    }
}

/// Redis settings of most tests.
pub fn redis(url: String) -> StoreConfig {
    StoreConfig::Redis(RedisConfig {
        connect_timeout: Duration::from_millis(500),
        ..RedisConfig::new(url)
    })
}

impl Meterd {
    /// meterd on the embedded store.
    pub async fn memory() -> Self {
        Self::start(config(StoreConfig::Memory)).await
    }

    /// meterd on the Redis at `url`.
    pub async fn redis(url: String) -> Self {
        Self::start(config(redis(url))).await
    }

    /// meterd with `config` and the system clock.
    pub async fn start(config: Config) -> Self {
        Self::start_with_clock(config, SystemClock).await
    }

    /// meterd with `config`, telling time by `clock`.
    pub async fn start_with_clock<C: Clock + Clone>(config: Config, clock: C) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(meterd::run_with_clock(config, clock, listener, async {
            stopped.await.unwrap_or(Stop::Interrupt)
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A channel to it (connects lazily; the listener is already bound).
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect_lazy()
    }

    /// A CreditsService client.
    pub fn credits(&self) -> CreditsServiceClient<Channel> {
        CreditsServiceClient::new(self.channel())
    }

    /// Asks it to stop as `how` says and waits until it has.
    pub async fn stop_as(mut self, how: Stop) -> Result<(), meterd::RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("meterd task")
    }

    /// Asks it to stop as Ctrl-C does and waits until it has.
    pub async fn stop(self) -> Result<(), meterd::RunError> {
        self.stop_as(Stop::Interrupt).await
    }
}

impl Drop for Meterd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Interrupt);
        }
    }
}

/// What `grpc.health.v1.Health/Check` answers for `service`; `None` when it fails.
pub async fn status(meterd: &Meterd, service: &str) -> Option<ServingStatus> {
    let mut health = HealthClient::new(meterd.channel());
    let reply = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

/// The balance of `account`, read over gRPC.
pub async fn balance(client: &mut CreditsServiceClient<Channel>, account: &str) -> Balance {
    client
        .get_balance(GetBalanceRequest {
            account_id: account.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("GetBalance of {account}: {s:?}"))
        .into_inner()
        .balance
        .unwrap_or_else(|| panic!("GetBalance of {account} answered no balance"))
}

/// Polls `check` every 10 ms until it returns true, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The meterd binary as a child process, its JSON log read as it comes.
///
/// A thread drains stderr all the time, so meterd never blocks on its log.
pub struct MeterdProcess {
    pub child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl MeterdProcess {
    /// Starts the binary with `args` and `env` (REDIS_URL unset unless given),
    /// logging JSON lines on stderr. `METERD_BIN` picks another build of it
    /// (`target/release/meterd`).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let binary =
            std::env::var("METERD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_meterd").to_owned());
        let mut command = Command::new(binary);
        command
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("meterd starts");
        let mut stderr: ChildStderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buffer[..n]);
                sink.lock().expect("log lock").push_str(&text);
            }
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (up to 30 s) until the log contains `text`; panics if meterd exits first.
    pub fn wait_for_log(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.log.lock().expect("log lock").contains(text) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                assert!(
                    self.log().contains(text),
                    "meterd exited ({status}) before logging {text:?}: {}",
                    self.log()
                );
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "meterd did not log {text:?} within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` (`-TERM`, `-INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The address it listens on, from its start-up log line.
    pub fn addr(&mut self) -> SocketAddr {
        self.wait_for_log("meterd serving gRPC");
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("meterd serving gRPC"))
            .expect("the line");
        let start = line.find("\"listen\":\"").expect("a listen field") + 10;
        let end = line[start..].find('"').expect("end of the address") + start;
        line[start..end].parse().expect("an address")
    }

    /// meterd's peak resident set size (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM")
    }

    /// Waits for it to exit; returns how, and its whole log.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("exit");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }
}

impl Drop for MeterdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gives `account` a key of every kind meterd keeps for an account: an
/// allowance, a grant, a deduct and a committed hold (credits, grants,
/// holds, history), a profile, a subscription with its billing customer
/// linked, stats with a recent conversation, and idempotency records.
pub async fn fill_account(meterd: &Meterd, account: &str) {
    use meter_api::v1::{
        CommitRequest, DeductRequest, GrantRequest, LinkBillingCustomerRequest, Profile,
        RecordConversationRequest, RecordLoginRequest, RegisterAccountRequest, ReserveRequest,
        ResetRequest, SubscriptionStatus, UpdateProfileRequest, UpdateSubscriptionRequest,
        stats_service_client::StatsServiceClient,
        subscription_service_client::SubscriptionServiceClient,
    };
    let mut credits = meterd.credits();
    credits
        .reset(ResetRequest {
            account_id: account.into(),
            total: Some(100),
            idempotency_key: "plan-start".into(),
        })
        .await
        .expect("reset");
    credits
        .grant(GrantRequest {
            account_id: account.into(),
            amount: 50,
            idempotency_key: "pack-1".into(),
            ..GrantRequest::default()
        })
        .await
        .expect("grant");
    credits
        .deduct(DeductRequest {
            account_id: account.into(),
            amount: 120,
            idempotency_key: "msg-1".into(),
            ..DeductRequest::default()
        })
        .await
        .expect("deduct");
    let held = credits
        .reserve(ReserveRequest {
            account_id: account.into(),
            amount: 10,
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            idempotency_key: "call-1".into(),
            ..ReserveRequest::default()
        })
        .await
        .expect("reserve")
        .into_inner();
    credits
        .commit(CommitRequest {
            account_id: account.into(),
            hold_id: held.hold_id,
            amount: 4,
            reason: String::new(),
        })
        .await
        .expect("commit");
    let mut accounts = SubscriptionServiceClient::new(meterd.channel());
    accounts
        .register_account(RegisterAccountRequest {
            account_id: account.into(),
            profile: Some(Profile {
                email: "owner@example.com".into(),
                name: "Ada".into(),
                ..Profile::default()
            }),
            idempotency_key: "signup".into(),
        })
        .await
        .expect("register");
    accounts
        .update_subscription(UpdateSubscriptionRequest {
            account_id: account.into(),
            plan: "pro-yearly".into(),
            status: SubscriptionStatus::Active.into(),
            current_period_start: Some(ts("2026-01-01T00:00:00.000Z")),
            current_period_end: Some(ts("2027-01-01T00:00:00.000Z")),
            billing_customer_id: "cus_NffrFeUfNV2Hib".into(),
            billing_subscription_id: "sub_1MowQVLkdIwHu7ixeRlqHVzs".into(),
            event_time: Some(ts("2026-01-01T00:00:00.000Z")),
            idempotency_key: "evt_1".into(),
            ..UpdateSubscriptionRequest::default()
        })
        .await
        .expect("subscribe");
    accounts
        .update_profile(UpdateProfileRequest {
            account_id: account.into(),
            role: Some("admin".into()),
            idempotency_key: "role-1".into(),
            ..UpdateProfileRequest::default()
        })
        .await
        .expect("profile");
    accounts
        .link_billing_customer(LinkBillingCustomerRequest {
            account_id: account.into(),
            billing_customer_id: format!("cus_{account}"),
            event_time: None,
        })
        .await
        .expect("link");
    let mut stats = StatsServiceClient::new(meterd.channel());
    stats
        .record_login(RecordLoginRequest {
            account_id: account.into(),
            idempotency_key: "login-1".into(),
            ..RecordLoginRequest::default()
        })
        .await
        .expect("login");
    stats
        .record_conversation(RecordConversationRequest {
            account_id: account.into(),
            conversation_id: "conv-1".into(),
            title: "Hello".into(),
            ..RecordConversationRequest::default()
        })
        .await
        .expect("conversation");
}

/// Every key of the account on the real Redis (`SCAN` by its hash tag).
pub async fn keys_of(redis: &meter_testkit::RedisServer, account: &str) -> Vec<String> {
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{{{account}}}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            keys.sort();
            return keys;
        }
        cursor = next;
    }
}

/// Every sample of a Prometheus text: `name{labels}` → value.
pub fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `GET /metrics` on `addr` once it listens: the text and its samples.
pub async fn scrape(addr: SocketAddr) -> (String, std::collections::HashMap<String, f64>) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, text) = meter_testkit::http::http_get(addr, "/metrics").await;
            assert_eq!(status, 200, "{text}");
            let samples = samples(&text);
            return (text, samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/metrics does not answer on {addr}");
}
