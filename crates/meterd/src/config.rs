//! Command-line flags (with environment fallbacks), parsed into a typed [`Config`].

use std::{fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, ValueEnum};
use meter_core::PlanCatalog;
use meter_redis::RedisConfig;

/// The plan catalog used when `--plans` is not given: `deploy/plans.toml`.
pub const EXAMPLE_PLANS: &str = include_str!("../../../deploy/plans.toml");

/// `meterd`: metering of credits, subscriptions, stats and usage over gRPC.
#[derive(Debug, Parser)]
#[command(name = "meterd", version, about)]
pub struct Cli {
    /// How meterd serves gRPC.
    #[command(flatten)]
    pub grpc: GrpcArgs,
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
    /// How long in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "METERD_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Redis settings; without a URL, meterd runs on the embedded in-memory store.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS). Absent: the
    /// embedded in-memory store, which loses everything on exit.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<Secret>,
    /// Multiplexed connections to Redis; each carries many concurrent calls.
    #[arg(long, env = "METERD_REDIS_CONNECTIONS", default_value_t = 4)]
    pub redis_connections: u32,
    /// How long a call waits for a Redis connection before failing UNAVAILABLE.
    #[arg(long, env = "METERD_REDIS_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,
}

/// Service behaviour.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Plan catalog (TOML). Default: the example catalog built in (deploy/plans.toml).
    #[arg(long, env = "METERD_PLANS")]
    pub plans: Option<PathBuf>,
    /// How long an idempotency key is remembered per account.
    #[arg(long, env = "METERD_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_window: Duration,
    /// How often the store is checked for the health service.
    #[arg(long, env = "METERD_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
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

/// A value that must not reach logs: `Debug` prints `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
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
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// How often store health is checked.
    pub health_interval: Duration,
    /// How long in-flight calls may take after shutdown begins.
    pub shutdown_grace: Duration,
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
            None => PlanCatalog::from_toml("(built-in deploy/plans.toml)", EXAMPLE_PLANS)?,
        };
        let store = match self.redis.redis_url {
            None => StoreConfig::Memory,
            Some(url) => StoreConfig::Redis(RedisConfig {
                url: url.expose().to_owned(),
                connections: self.redis.redis_connections,
                connect_timeout: self.redis.redis_connect_timeout,
            }),
        };
        Ok(Config {
            store,
            catalog: Arc::new(catalog),
            idempotency_window: self.service.idempotency_window,
            health_interval: self.service.health_interval,
            shutdown_grace: self.grpc.shutdown_grace,
        })
    }
}

/// Parses `500ms`, `30s`, `15m`, `24h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 30s, 15m, 24h, 7d"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => return Err(format!("{text:?} has no known unit; use ms, s, m, h or d")),
    };
    millis
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} must be positive and at most a few million years"))
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
        assert_eq!(format!("{:?}", Secret::from("hunter2".to_owned())), "***");
    }

    #[test]
    fn defaults_give_the_embedded_store_and_the_example_catalog() {
        let cli = Cli::try_parse_from(["meterd"]).expect("defaults parse");
        assert_eq!(cli.grpc.listen, "[::]:50051".parse().expect("addr"));
        let config = cli.into_config().expect("valid");
        assert!(matches!(config.store, StoreConfig::Memory));
        assert_eq!(config.idempotency_window, Duration::from_secs(86_400));
        assert_eq!(config.catalog.get("pro").map(|p| p.credits), Some(1_000));
    }

    #[test]
    fn a_missing_plan_file_is_named() {
        let cli =
            Cli::try_parse_from(["meterd", "--plans", "/nonexistent/plans.toml"]).expect("parses");
        let err = cli.into_config().expect_err("missing file").to_string();
        assert!(err.contains("/nonexistent/plans.toml"), "{err}");
    }
}
