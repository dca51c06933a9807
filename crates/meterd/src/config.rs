//! Command-line flags (with environment fallbacks), parsed into a typed [`Config`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, ValueEnum};
use meter_core::{
    HistoryRetention, IdempotencyWindow, PlanCatalog, Secret, idempotency::WindowOutOfRange,
};
use meter_grpc::{Tokens, TokensError};
use meter_ratelimit::{LimitsConfig, LimitsError};
use meter_redis::{RedisConfig, RedisTls};

/// The plan catalog used when `--plans` is not given: `deploy/plans.toml`.
pub const EXAMPLE_PLANS: &str = include_str!("../../../deploy/plans.toml");

/// The limits file used when `--limits` is not given: `deploy/limits.toml`.
pub const EXAMPLE_LIMITS: &str = include_str!("../../../deploy/limits.toml");

/// Defaults, shared by the flags and [`Config::new`].
mod defaults {
    pub const SHUTDOWN_GRACE: &str = "30s";
    pub const SHUTDOWN_DELAY: &str = "5s";
    pub const MAX_IN_FLIGHT: usize = 2048;
    pub const REDIS_CONNECTIONS: u32 = 4;
    pub const REDIS_CONNECT_TIMEOUT: &str = "2s";
    pub const REDIS_TIMEOUT: &str = "1s";
    pub const REDIS_MAX_PENDING: usize = 2048;
    pub const REDIS_WAIT_TIMEOUT: &str = "50ms";
    pub const IDEMPOTENCY_WINDOW: &str = "24h";
    pub const HISTORY_MAX_AGE: &str = "90d";
    pub const MAX_HOLD_TTL: &str = "24h";
    pub const MAX_EVENT_SKEW: &str = "5m";
    pub const HEALTH_INTERVAL: &str = "1s";
}

/// meterd keeps every account's credits exactly, over gRPC: deducts that
/// never go below zero, grants and resets that apply once however often
/// they are retried, on Redis or, without one, in memory.
#[derive(Debug, Parser)]
#[command(name = "meterd", version)]
pub struct Cli {
    /// How meterd serves gRPC.
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// Who may call meterd.
    #[command(flatten)]
    pub access: AccessArgs,
    /// Where meterd keeps its data.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// What meterd offers and how it behaves.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// How meterd logs.
    #[command(flatten)]
    pub log: LogArgs,
}

/// gRPC server settings.
#[derive(Debug, Args)]
pub struct GrpcArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "METERD_LISTEN", default_value = "[::]:50051")]
    pub listen: SocketAddr,
    /// On SIGTERM: how long meterd keeps serving after reporting NOT_SERVING,
    /// so probes and load balancers stop sending before the listener closes.
    /// Ctrl-C (SIGINT) skips it.
    #[arg(long, env = "METERD_SHUTDOWN_DELAY", default_value = defaults::SHUTDOWN_DELAY, value_parser = parse_duration_or_zero)]
    pub shutdown_delay: Duration,
    /// Once the listener closes, how long in-flight calls may take to finish.
    #[arg(long, env = "METERD_SHUTDOWN_GRACE", default_value = defaults::SHUTDOWN_GRACE, value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Most calls meterd works on at once; past it, calls are refused at once
    /// with UNAVAILABLE (nothing applied) instead of queueing.
    #[arg(long, env = "METERD_MAX_IN_FLIGHT", default_value_t = defaults::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g.
    /// `[::]:9090`. Without it, no metrics port is opened.
    #[arg(long, env = "METERD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS on the gRPC port (with --tls-key).
    #[arg(long, env = "METERD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "METERD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates of the CAs whose client certificates are accepted:
    /// mutual TLS, every caller must present one.
    #[arg(long, env = "METERD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Access control: bearer tokens with a scope. Without any, every call is allowed.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// A file of bearer tokens, one per line: `NAME SCOPE TOKEN`, scope
    /// `read` (Get*, List*, Top*, Check* without consume) or `write`
    /// (everything); read again every 10 s. With no token here or in
    /// METERD_TOKENS, every call is allowed.
    #[arg(long, env = "METERD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Bearer tokens as `NAME:SCOPE:TOKEN[,…]`, besides --tokens-file.
    #[arg(long, env = "METERD_TOKENS", hide_env_values = true)]
    pub tokens: Option<Secret>,
    /// Require a token (either scope) for server reflection too. Health
    /// stays open for probes.
    #[arg(long, env = "METERD_AUTH_REFLECTION")]
    pub auth_reflection: bool,
}

/// Redis settings; without a URL, meterd runs on the embedded in-memory store.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS); a Redis
    /// Cluster as `redis+cluster://[user:password@]host:port[,host:port…]`
    /// (`rediss+cluster://` for TLS). Absent or empty: the embedded in-memory
    /// store, which loses everything on exit.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// Multiplexed connections to Redis (to each master of a cluster); each
    /// carries many concurrent calls.
    #[arg(long, env = "METERD_REDIS_CONNECTIONS", default_value_t = defaults::REDIS_CONNECTIONS)]
    pub redis_connections: u32,
    /// How long a call waits for a Redis connection before failing UNAVAILABLE
    /// (nothing applied).
    #[arg(long, env = "METERD_REDIS_CONNECT_TIMEOUT", default_value = defaults::REDIS_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,
    /// How long meterd waits for Redis to answer a call before failing it
    /// UNAVAILABLE (it may have been applied). A caller's shorter gRPC
    /// deadline ends the wait sooner.
    #[arg(long, env = "METERD_REDIS_TIMEOUT", default_value = defaults::REDIS_TIMEOUT, value_parser = parse_duration)]
    pub redis_timeout: Duration,
    /// Most Redis commands queued or awaiting a reply; past it, calls are
    /// refused at once with UNAVAILABLE (nothing applied).
    #[arg(long, env = "METERD_REDIS_MAX_PENDING", default_value_t = defaults::REDIS_MAX_PENDING)]
    pub redis_max_pending: usize,
    /// Replicas every change must reach before meterd answers (Redis WAIT);
    /// one they do not confirm in time answers UNAVAILABLE ("may have been
    /// applied"). 0: answer once the master has the change.
    #[arg(long, env = "METERD_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// How long changes wait for --redis-wait-replicas replicas; keep it
    /// short, later commands on the same connection wait behind it.
    #[arg(long, env = "METERD_REDIS_WAIT_TIMEOUT", default_value = defaults::REDIS_WAIT_TIMEOUT, value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,
    /// PEM certificates of the CA that signed Redis's, trusted instead of
    /// the system's CAs (a `rediss://` URL).
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca: Option<PathBuf>,
    /// PEM client certificate for Redis with `tls-auth-clients yes` (with
    /// --redis-client-key).
    #[arg(long, env = "REDIS_CLIENT_CERT_FILE", requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,
    /// PEM private key of --redis-client-cert.
    #[arg(long, env = "REDIS_CLIENT_KEY_FILE", requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
}

/// Service behaviour.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Plan catalog (TOML). Default: the example catalog built in (deploy/plans.toml).
    #[arg(long, env = "METERD_PLANS")]
    pub plans: Option<PathBuf>,
    /// Rate limits file (TOML): CheckRateLimit's policies and Envoy's
    /// domains. Default: the example built in (deploy/limits.toml).
    #[arg(long, env = "METERD_LIMITS")]
    pub limits: Option<PathBuf>,
    /// How long an idempotency key is remembered per account, at most 30d.
    #[arg(long, env = "METERD_IDEMPOTENCY_WINDOW", default_value = defaults::IDEMPOTENCY_WINDOW, value_parser = parse_duration)]
    pub idempotency_window: Duration,
    /// Newest history entries kept per account (1..=100000); each costs
    /// about 100 bytes in Redis.
    #[arg(long, env = "METERD_HISTORY_MAX_ENTRIES", default_value_t = HistoryRetention::DEFAULT.max_entries)]
    pub history_max_entries: u32,
    /// History entries older than this are dropped (at most 3650d).
    #[arg(long, env = "METERD_HISTORY_MAX_AGE", default_value = defaults::HISTORY_MAX_AGE, value_parser = parse_duration)]
    pub history_max_age: Duration,
    /// The longest ttl Reserve accepts.
    #[arg(long, env = "METERD_MAX_HOLD_TTL", default_value = defaults::MAX_HOLD_TTL, value_parser = parse_duration)]
    pub max_hold_ttl: Duration,
    /// How long a usage event id is remembered: the same id within it counts once (at most 30d).
    #[arg(long, env = "METERD_USAGE_DEDUPE_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub usage_dedupe_window: Duration,
    /// How long a month's usage is kept after the month ends.
    #[arg(long, env = "METERD_USAGE_MONTH_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub usage_month_retention: Duration,
    /// How long a day's usage is kept after the day ends.
    #[arg(long, env = "METERD_USAGE_DAY_RETENTION", default_value = "35d", value_parser = parse_duration)]
    pub usage_day_retention: Duration,
    /// How long after a month ends its usage events are still accepted.
    #[arg(long, env = "METERD_USAGE_GRACE", default_value = "3d", value_parser = parse_duration)]
    pub usage_grace: Duration,
    /// How long a usage event with metadata stays in the account's event log (1ms..=3650d).
    #[arg(long, env = "METERD_USAGE_LOG_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub usage_log_retention: Duration,
    /// Most events of an account's usage event log shown (older ones are trimmed; 1..=10000).
    #[arg(long, env = "METERD_USAGE_LOG_MAX_ENTRIES", default_value_t = 1_000)]
    pub usage_log_max_entries: usize,
    /// Most usage events in one RecordUsage call (1..=100000).
    #[arg(long, env = "METERD_USAGE_MAX_EVENTS", default_value_t = 1_000)]
    pub usage_max_events: usize,
    /// Accept only the usage metrics the plan catalog declares ([metrics.NAME]).
    #[arg(long, env = "METERD_STRICT_METRICS")]
    pub strict_metrics: bool,
    /// Recent conversations kept per account by StatsService (1..=100).
    #[arg(long, env = "METERD_RECENT_CONVERSATIONS", default_value_t = 3)]
    pub recent_conversations: usize,
    /// How far ahead of meterd's clock a billing event's time may be (at most 1d).
    #[arg(long, env = "METERD_MAX_EVENT_SKEW", default_value = defaults::MAX_EVENT_SKEW, value_parser = parse_duration)]
    pub max_event_skew: Duration,
    /// How often the store is checked for the health service.
    #[arg(long, env = "METERD_HEALTH_INTERVAL", default_value = defaults::HEALTH_INTERVAL, value_parser = parse_duration)]
    pub health_interval: Duration,
}

/// Logging settings.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "METERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// What to log, as RUST_LOG filters: `info`, `meterd=debug,info`, ….
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where the data lives.
#[derive(Debug)]
pub enum StoreConfig {
    /// The embedded in-memory store.
    Memory,
    /// Redis, the system of record.
    Redis(RedisConfig),
}

/// Everything [`crate::run`] needs, parsed and checked.
#[derive(Debug)]
pub struct Config {
    /// Where the data lives.
    pub store: StoreConfig,
    /// The plan catalog.
    pub catalog: Arc<PlanCatalog>,
    /// Rate limit policies and Envoy domains.
    pub limits: Arc<LimitsConfig>,
    /// How long idempotency keys are remembered.
    pub idempotency_window: IdempotencyWindow,
    /// How much credit history is kept per account.
    pub history: HistoryRetention,
    /// The longest hold Reserve accepts.
    pub max_hold_ttl: Duration,
    /// How far ahead of the clock a billing event's time may be.
    pub max_event_skew: Duration,
    /// Recent conversations kept per account.
    pub recent_conversations: usize,
    /// How usage events are counted and kept.
    pub usage: meter_core::UsageSettings,
    /// How often store health is checked.
    pub health_interval: Duration,
    /// How long meterd keeps serving after reporting NOT_SERVING on SIGTERM.
    pub shutdown_delay: Duration,
    /// How long in-flight calls may take once the listener has closed.
    pub shutdown_grace: Duration,
    /// Most calls at once.
    pub max_in_flight: usize,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS (and mutual TLS) on the gRPC port, if configured.
    pub tls: Option<TlsFiles>,
    /// The bearer tokens; none: every call is allowed.
    pub tokens: Arc<Tokens>,
    /// Where the tokens came from, read again every
    /// `tokens_reload_interval` (only with a tokens file): a changed file
    /// is put in force without a restart.
    pub token_sources: Option<TokenSources>,
    /// How often the tokens file is read again.
    pub tokens_reload_interval: Duration,
    /// Whether reflection needs a token too.
    pub auth_reflection: bool,
}

impl Config {
    /// The defaults of the flags on `store`, with the example plan catalog.
    pub fn new(store: StoreConfig) -> Result<Self, ConfigError> {
        let duration = |text: &str| parse_duration(text).map_err(ConfigError::Default);
        Ok(Self {
            store,
            catalog: Arc::new(example_catalog()?),
            limits: Arc::new(example_limits()?),
            idempotency_window: IdempotencyWindow::new(duration(defaults::IDEMPOTENCY_WINDOW)?)?,
            history: HistoryRetention::DEFAULT,
            max_hold_ttl: duration(defaults::MAX_HOLD_TTL)?,
            max_event_skew: duration(defaults::MAX_EVENT_SKEW)?,
            recent_conversations: 3,
            usage: meter_core::UsageSettings::default(),
            health_interval: duration(defaults::HEALTH_INTERVAL)?,
            shutdown_delay: duration(defaults::SHUTDOWN_DELAY)?,
            shutdown_grace: duration(defaults::SHUTDOWN_GRACE)?,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            metrics_listen: None,
            tls: None,
            tokens: Arc::default(),
            token_sources: None,
            tokens_reload_interval: TOKENS_RELOAD_INTERVAL,
            auth_reflection: false,
        })
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The plan catalog file cannot be read.
    #[error("cannot read plan catalog {path}: {source}")]
    ReadPlans {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plan catalog does not parse.
    #[error(transparent)]
    Plans(#[from] meter_core::CatalogError),
    /// The limits file cannot be read.
    #[error("cannot read limits file {path}: {source}")]
    ReadLimits {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The limits file is refused.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The idempotency window is outside 1ms..=30d.
    #[error("--idempotency-window / METERD_IDEMPOTENCY_WINDOW: {0}")]
    IdempotencyWindow(#[from] WindowOutOfRange),
    /// The history retention is out of range.
    #[error("--history-max-entries / --history-max-age: {0}")]
    History(String),
    /// The longest hold is out of range.
    #[error("--max-hold-ttl ({0:?}) must be from 1s to 30d")]
    MaxHoldTtl(Duration),
    /// A usage setting is out of range.
    #[error("{0}")]
    Usage(String),
    /// The recent conversations kept are out of range.
    #[error("--recent-conversations ({0}) must be from 1 to 100")]
    RecentConversations(usize),
    /// The event skew is out of range.
    #[error("--max-event-skew ({0:?}) must be at most 1d")]
    MaxEventSkew(Duration),
    /// Waiting for replicas would outlast the wait for Redis's answer.
    #[error(
        "--redis-wait-timeout ({wait:?}) must be shorter than --redis-timeout ({response:?}): \
         a batch that waits for its replicas would otherwise be given up on, reads included"
    )]
    WaitTimeout {
        /// `--redis-wait-timeout`.
        wait: Duration,
        /// `--redis-timeout`.
        response: Duration,
    },
    /// A TLS file holds no PEM block of the kind it must.
    #[error("{flag} {path} holds no PEM {kind} block (-----BEGIN {kind}-----)")]
    NotPem {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The block it needs.
        kind: &'static str,
    },
    /// A certificate or key for Redis that the Redis client cannot use.
    #[error("{flags}: the Redis client cannot use it: {detail}")]
    RedisTls {
        /// The flags naming the files.
        flags: &'static str,
        /// Why.
        detail: String,
    },
    /// TLS files for Redis with a URL that is not `rediss://`.
    #[error(
        "--redis-ca / --redis-client-cert need a TLS --redis-url (rediss:// or \
         rediss+cluster://)"
    )]
    RedisTlsWithoutRediss,
    /// A TLS file cannot be read.
    #[error("cannot read {flag} {path}: {source}")]
    ReadTls {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tokens file cannot be read.
    #[error("cannot read tokens file {path}: {source}")]
    ReadTokens {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token list is refused.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// Tokens were asked for and none was found.
    #[error(
        "--tokens-file / METERD_TOKENS hold no token: meterd would allow every call; add a \
         `NAME SCOPE TOKEN` line, or remove the setting to run without access control"
    )]
    NoTokens,
    /// A built-in default does not parse (a bug).
    #[error("a built-in default does not parse: {0}")]
    Default(String),
}

fn check_hold_ttl(ttl: Duration) -> Result<Duration, ConfigError> {
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err(ConfigError::MaxHoldTtl(ttl));
    }
    Ok(ttl)
}

fn example_catalog() -> Result<PlanCatalog, meter_core::CatalogError> {
    PlanCatalog::from_toml("(built-in deploy/plans.toml)", EXAMPLE_PLANS)
}

fn example_limits() -> Result<LimitsConfig, LimitsError> {
    LimitsConfig::from_toml("(built-in deploy/limits.toml)", EXAMPLE_LIMITS)
}

/// The limits file at `path`, or the built-in example.
fn load_limits(path: Option<&PathBuf>) -> Result<LimitsConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(example_limits()?);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadLimits {
        path: path.clone(),
        source,
    })?;
    Ok(LimitsConfig::from_toml(&path.display().to_string(), &text)?)
}

impl Cli {
    /// Checks the flags and loads the plan catalog.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let catalog = match &self.service.plans {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadPlans {
                        path: path.clone(),
                        source,
                    })?;
                PlanCatalog::from_toml(&path.display().to_string(), &text)?
            }
            None => example_catalog()?,
        };
        if self.redis.redis_wait_replicas > 0
            && self.redis.redis_wait_timeout >= self.redis.redis_timeout
        {
            return Err(ConfigError::WaitTimeout {
                wait: self.redis.redis_wait_timeout,
                response: self.redis.redis_timeout,
            });
        }
        let usage = self.usage_settings()?;
        let limits = load_limits(self.service.limits.as_ref())?;
        let tokens = self.access.tokens()?;
        let redis_tls = self.redis.tls()?;
        // `REDIS_URL=` (set but empty, as templates often leave it) means not set.
        let store = match self.redis.redis_url.filter(|url| !url.is_empty()) {
            None if redis_tls.is_some() => return Err(ConfigError::RedisTlsWithoutRediss),
            None => StoreConfig::Memory,
            Some(url) => StoreConfig::Redis(RedisConfig {
                tls: redis_tls,
                url,
                connections: self.redis.redis_connections,
                connect_timeout: self.redis.redis_connect_timeout,
                response_timeout: self.redis.redis_timeout,
                max_pending: self.redis.redis_max_pending,
                wait_replicas: self.redis.redis_wait_replicas,
                wait_timeout: self.redis.redis_wait_timeout,
            }),
        };
        // A URL that does not parse is reported when the store opens.
        if let StoreConfig::Redis(redis) = &store
            && redis.tls.is_some()
            && redis.uses_tls().is_ok_and(|tls| !tls)
        {
            return Err(ConfigError::RedisTlsWithoutRediss);
        }
        Ok(Config {
            store,
            catalog: Arc::new(catalog),
            limits: Arc::new(limits),
            idempotency_window: IdempotencyWindow::new(self.service.idempotency_window)?,
            history: HistoryRetention::new(
                self.service.history_max_entries,
                self.service.history_max_age,
            )
            .map_err(ConfigError::History)?,
            max_hold_ttl: check_hold_ttl(self.service.max_hold_ttl)?,
            max_event_skew: check_event_skew(self.service.max_event_skew)?,
            recent_conversations: check_recent(self.service.recent_conversations)?,
            usage,
            health_interval: self.service.health_interval,
            shutdown_delay: self.grpc.shutdown_delay,
            shutdown_grace: self.grpc.shutdown_grace,
            max_in_flight: self.grpc.max_in_flight,
            metrics_listen: self.grpc.metrics_listen,
            tls: self.grpc.tls()?,
            tokens: Arc::new(tokens),
            token_sources: self.access.tokens_file.clone().map(|file| TokenSources {
                file,
                list: self.access.tokens.clone(),
            }),
            tokens_reload_interval: TOKENS_RELOAD_INTERVAL,
            auth_reflection: self.access.auth_reflection,
        })
    }
}

/// The PEM contents of the TLS files, read at start.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Vec<u8>,
    /// The CAs of accepted client certificates (mutual TLS), if any.
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("mutual", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// The PEM labels of a certificate.
const CERTIFICATE: &[&str] = &["CERTIFICATE"];
/// The PEM labels of an unencrypted private key (PKCS#8, PKCS#1, SEC1).
const PRIVATE_KEY: &[&str] = &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

/// The PEM file `path` that `flag` names, which must hold a block of one of
/// `labels` (the first names it in errors): without one, TLS would fail
/// only at the first handshake.
fn read_pem(
    flag: &'static str,
    path: &PathBuf,
    labels: &'static [&'static str],
) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadTls {
        flag,
        path: path.clone(),
        source,
    })?;
    let has_block = String::from_utf8_lossy(&bytes).lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.trim_end().strip_suffix("-----"))
            .is_some_and(|label| labels.contains(&label))
    });
    let kind = labels[0];
    if has_block {
        Ok(bytes)
    } else {
        Err(ConfigError::NotPem {
            flag,
            path: path.clone(),
            kind,
        })
    }
}

impl GrpcArgs {
    /// The TLS files, read.
    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(TlsFiles {
            cert: read_pem("--tls-cert", cert, CERTIFICATE)?,
            key: read_pem("--tls-key", key, PRIVATE_KEY)?,
            client_ca: self
                .tls_client_ca
                .as_ref()
                .map(|ca| read_pem("--tls-client-ca", ca, CERTIFICATE))
                .transpose()?,
        }))
    }
}

impl RedisArgs {
    /// The certificates for TLS to Redis, read; `None` without any.
    fn tls(&self) -> Result<Option<RedisTls>, ConfigError> {
        let ca = self
            .redis_ca
            .as_ref()
            .map(|ca| read_pem("--redis-ca", ca, CERTIFICATE))
            .transpose()?;
        let client = match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(cert), Some(key)) => Some((
                read_pem("--redis-client-cert", cert, CERTIFICATE)?,
                read_pem("--redis-client-key", key, PRIVATE_KEY)?,
            )),
            _ => None,
        };
        if ca.is_none() && client.is_none() {
            return Ok(None);
        }
        let tls = RedisTls { ca, client };
        tls.check()
            .map_err(|(part, detail)| ConfigError::RedisTls {
                flags: if part == "ca" {
                    "--redis-ca"
                } else {
                    "--redis-client-cert / --redis-client-key"
                },
                detail,
            })?;
        Ok(Some(tls))
    }
}

/// How often meterd reads the tokens file again.
pub const TOKENS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Where meterd's tokens come from: the tokens file and the list beside it.
#[derive(Clone, Debug)]
pub struct TokenSources {
    /// `--tokens-file`.
    pub file: PathBuf,
    /// `--tokens` / `METERD_TOKENS`, merged with the file's.
    pub list: Option<Secret>,
}

impl TokenSources {
    /// The tokens of `text` (the file's contents) and of the list, checked:
    /// none at all is refused, rather than every call let in.
    pub fn tokens(&self, text: &str) -> Result<Tokens, ConfigError> {
        tokens_of(Some((&self.file, text)), self.list.as_ref())
    }
}

/// The tokens of a file's `text` and of a `list`, checked; none at all,
/// when either was given, is refused.
fn tokens_of(file: Option<(&PathBuf, &str)>, list: Option<&Secret>) -> Result<Tokens, ConfigError> {
    let from_file = match file {
        None => Tokens::default(),
        Some((path, text)) => Tokens::parse(text, &path.display().to_string(), false)?,
    };
    let from_list = match list {
        None => Tokens::default(),
        Some(list) => Tokens::parse(list.expose(), "--tokens / METERD_TOKENS", true)?,
    };
    // A file or list given and empty (a blank Secret, a truncated file):
    // refused, rather than let every call in or drop the file's tokens.
    if (file.is_some() && from_file.is_empty()) || (list.is_some() && from_list.is_empty()) {
        return Err(ConfigError::NoTokens);
    }
    Ok(from_file.merge(from_list)?)
}

impl AccessArgs {
    /// The tokens of the file and the list, checked.
    fn tokens(&self) -> Result<Tokens, ConfigError> {
        let text =
            match &self.tokens_file {
                None => None,
                Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                    ConfigError::ReadTokens {
                        path: path.clone(),
                        source,
                    }
                })?),
            };
        let file = self.tokens_file.as_ref().zip(text.as_deref());
        tokens_of(file, self.tokens.as_ref())
    }
}

impl Cli {
    /// The usage settings of the flags, checked.
    fn usage_settings(&self) -> Result<meter_core::UsageSettings, ConfigError> {
        let service = &self.service;
        let bad = |problem: String| Err(ConfigError::Usage(problem));
        if service.usage_dedupe_window.is_zero()
            || service.usage_dedupe_window > IdempotencyWindow::MAX
        {
            return bad(format!(
                "--usage-dedupe-window ({:?}) must be from 1ms to 30d",
                service.usage_dedupe_window
            ));
        }
        if !(1..=100_000).contains(&service.usage_max_events) {
            return bad(format!(
                "--usage-max-events ({}) must be from 1 to 100000",
                service.usage_max_events
            ));
        }
        if service.usage_month_retention <= service.usage_grace {
            return bad(format!(
                "--usage-month-retention ({:?}) must be longer than --usage-grace ({:?}): a month \
                 must be kept past the moment its bill is final",
                service.usage_month_retention, service.usage_grace
            ));
        }
        if service.usage_log_retention.is_zero()
            || service.usage_log_retention > Duration::from_secs(3650 * 86_400)
        {
            return bad(format!(
                "--usage-log-retention ({:?}) must be from 1ms to 3650d",
                service.usage_log_retention
            ));
        }
        if !(1..=10_000).contains(&service.usage_log_max_entries) {
            return bad(format!(
                "--usage-log-max-entries ({}) must be from 1 to 10000",
                service.usage_log_max_entries
            ));
        }
        Ok(meter_core::UsageSettings {
            retention: meter_core::UsageRetention {
                dedupe_window: service.usage_dedupe_window,
                month: service.usage_month_retention,
                day: service.usage_day_retention,
                log_age: service.usage_log_retention,
                log_entries: service.usage_log_max_entries,
            },
            grace: service.usage_grace,
            max_skew: service.max_event_skew,
            max_events: service.usage_max_events,
            strict_metrics: service.strict_metrics,
        })
    }
}

/// `recent` if it is from 1 to 100.
fn check_recent(recent: usize) -> Result<usize, ConfigError> {
    if (1..=meter_core::stats::MAX_RECENT).contains(&recent) {
        Ok(recent)
    } else {
        Err(ConfigError::RecentConversations(recent))
    }
}

/// `skew` if it is at most a day.
fn check_event_skew(skew: Duration) -> Result<Duration, ConfigError> {
    if skew <= Duration::from_secs(86_400) {
        Ok(skew)
    } else {
        Err(ConfigError::MaxEventSkew(skew))
    }
}

/// Parses `500ms`, `30s`, `15m`, `24h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    meter_core::time::parse_duration(text)
}

/// As [`parse_duration`], and `0` or `0s` for none.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// The URL with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            let shown = if credentials.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{shown}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_must_be_positive() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "0s", "1.5s", "s", "10y"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("2s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn an_empty_tokens_file_is_refused_even_beside_a_list() {
        let sources = TokenSources {
            file: PathBuf::from("tokens"),
            list: Some(Secret::from(format!(
                "ci:write:{}",
                "t".repeat(meter_grpc::access::MIN_TOKEN_CHARS)
            ))),
        };
        let empty = sources
            .tokens("# rotated, nothing yet\n")
            .expect_err("empty file");
        assert!(matches!(empty, ConfigError::NoTokens), "{empty}");
        let both = sources
            .tokens(&format!("app read {}\n", "r".repeat(32)))
            .expect("the file's and the list's");
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn redis_tls_files_need_rediss_and_their_pem_blocks() {
        let certs = meter_testkit::tls::certificates();
        let dir = certs.path();
        let ca = dir.join("server-ca.pem");
        let key = dir.join("server.key");
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let parse = |url: &str, ca: &std::path::Path| {
            Cli::try_parse_from(
                ["meterd", "--redis-url", url, "--redis-ca"]
                    .iter()
                    .copied()
                    .chain([ca.to_str().expect("utf-8")]),
            )
            .expect("parses")
            .into_config()
        };
        let plain = parse("redis://cache:6379", &ca).expect_err("TLS files need rediss");
        assert!(
            matches!(plain, ConfigError::RedisTlsWithoutRediss),
            "{plain}"
        );
        let not_a_ca = parse("rediss://cache:6380", &key).expect_err("a key as the CA");
        assert!(
            not_a_ca.to_string().contains("no PEM CERTIFICATE block"),
            "{not_a_ca}"
        );
        let unusable = parse("rediss://cache:6380", &broken).expect_err("not a certificate");
        assert!(
            matches!(
                unusable,
                ConfigError::RedisTls {
                    flags: "--redis-ca",
                    ..
                }
            ),
            "{unusable}"
        );
        let upper = parse("REDISS://cache:6380", &ca);
        assert!(upper.is_ok(), "any spelling of TLS: {upper:?}");
        let config = parse("rediss+cluster://a:6380,b:6380", &ca).expect("a CA for TLS");
        let StoreConfig::Redis(redis) = config.store else {
            panic!("a Redis store");
        };
        assert!(
            redis
                .tls
                .is_some_and(|tls| tls.ca.is_some() && tls.client.is_none())
        );
    }

    #[test]
    fn waiting_for_replicas_must_end_before_the_wait_for_redis() {
        let parse = |args: &[&str]| {
            let mut all = vec!["meterd", "--redis-url", "redis://cache:6379"];
            all.extend(args);
            Cli::try_parse_from(all).expect("parses").into_config()
        };
        let error = parse(&["--redis-wait-replicas", "1", "--redis-wait-timeout", "1s"])
            .expect_err("as long as --redis-timeout");
        assert!(
            error.to_string().contains("--redis-wait-timeout"),
            "{error}"
        );
        assert!(
            parse(&["--redis-wait-replicas", "1"]).is_ok(),
            "the defaults fit"
        );
        assert!(
            parse(&["--redis-wait-timeout", "5s"]).is_ok(),
            "no replicas waited for"
        );
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url("redis://default:hunter2@cache:6379/0"),
            "redis://default:***@cache:6379/0"
        );
        assert_eq!(
            redact_url("rediss://hunter2@cache:6380"),
            "rediss://***@cache:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("rediss+cluster://app:hunter2@a:7000,b:7001"),
            "rediss+cluster://app:***@a:7000,b:7001"
        );
        let cli = Cli::try_parse_from(["meterd", "--redis-url", "redis://u:hunter2@cache:6379"])
            .expect("parses");
        let config = cli.into_config().expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn defaults_give_the_embedded_store_and_the_example_catalog() {
        let cli = Cli::try_parse_from(["meterd"]).expect("defaults parse");
        assert_eq!(cli.grpc.listen, "[::]:50051".parse().expect("addr"));
        let config = cli.into_config().expect("valid");
        assert!(matches!(config.store, StoreConfig::Memory));
        assert_eq!(
            config.idempotency_window.length(),
            Duration::from_secs(86_400)
        );
        assert_eq!(config.catalog.get("pro").map(|p| p.credits), Some(1_000));
        let built = Config::new(StoreConfig::Memory).expect("defaults");
        assert_eq!(built.idempotency_window, config.idempotency_window);
        assert_eq!(built.shutdown_delay, config.shutdown_delay);
        assert_eq!(built.max_in_flight, config.max_in_flight);
    }

    #[test]
    fn an_empty_redis_url_means_the_embedded_store() {
        let cli = Cli::try_parse_from(["meterd", "--redis-url", ""]).expect("parses");
        assert!(matches!(
            cli.into_config().expect("valid").store,
            StoreConfig::Memory
        ));
    }

    #[test]
    fn an_idempotency_window_past_thirty_days_is_refused_at_start() {
        let cli = Cli::try_parse_from(["meterd", "--idempotency-window", "31d"]).expect("parses");
        let err = cli.into_config().expect_err("too long").to_string();
        assert!(
            err.contains("--idempotency-window") && err.contains("30 days"),
            "{err}"
        );
        let cli = Cli::try_parse_from(["meterd", "--idempotency-window", "30d"]).expect("parses");
        assert!(cli.into_config().is_ok());
    }

    #[test]
    fn history_retention_and_hold_ttl_out_of_range_are_refused_at_start() {
        for (flag, value, named) in [
            ("--history-max-entries", "0", "--history-max-entries"),
            ("--history-max-entries", "100001", "--history-max-entries"),
            ("--history-max-age", "3651d", "--history-max-age"),
            ("--max-hold-ttl", "500ms", "--max-hold-ttl"),
            ("--max-hold-ttl", "31d", "--max-hold-ttl"),
        ] {
            let cli = Cli::try_parse_from(["meterd", flag, value]).expect("parses");
            let err = cli.into_config().expect_err("out of range").to_string();
            assert!(err.contains(named), "{flag} {value}: {err}");
        }
        let cli = Cli::try_parse_from([
            "meterd",
            "--history-max-entries",
            "50",
            "--history-max-age",
            "7d",
            "--max-hold-ttl",
            "1h",
        ])
        .expect("parses");
        let config = cli.into_config().expect("in range");
        assert_eq!(config.history.max_entries, 50);
        assert_eq!(config.max_hold_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn usage_settings_out_of_range_are_refused_at_start() {
        for (args, named) in [
            (
                &["--usage-month-retention", "3d"][..],
                "--usage-month-retention",
            ),
            (
                &["--usage-log-retention", "3651d"][..],
                "--usage-log-retention",
            ),
            (
                &["--usage-log-max-entries", "0"][..],
                "--usage-log-max-entries",
            ),
            (&["--usage-max-events", "100001"][..], "--usage-max-events"),
            (
                &["--usage-dedupe-window", "31d"][..],
                "--usage-dedupe-window",
            ),
        ] {
            let cli = Cli::try_parse_from(std::iter::once("meterd").chain(args.iter().copied()))
                .expect("parses");
            let err = cli.into_config().expect_err("out of range").to_string();
            assert!(err.contains(named), "{args:?}: {err}");
        }
        let cli = Cli::try_parse_from([
            "meterd",
            "--usage-month-retention",
            "4d",
            "--usage-log-retention",
            "7d",
            "--usage-log-max-entries",
            "20",
        ])
        .expect("parses");
        let retention = cli.into_config().expect("in range").usage.retention;
        assert_eq!(retention.log_entries, 20);
        assert_eq!(retention.log_age, Duration::from_secs(7 * 86_400));
        assert_eq!(retention.month, Duration::from_secs(4 * 86_400));
    }

    #[test]
    fn a_missing_plan_file_is_named() {
        let cli =
            Cli::try_parse_from(["meterd", "--plans", "/nonexistent/plans.toml"]).expect("parses");
        let err = cli.into_config().expect_err("missing file").to_string();
        assert!(err.contains("/nonexistent/plans.toml"), "{err}");
    }
}
