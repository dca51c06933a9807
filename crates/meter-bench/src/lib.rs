//! `meter-bench`: the load benchmark of meter. Drives a running `meterd`
//! over real gRPC, prints throughput and latency percentiles, checks the end
//! state (no lost or doubled updates), and measures the ceiling in the same
//! run: `redis-benchmark` on the same Redis at the same concurrency.
//!
//! By default it starts its own redis-server, Redis Cluster (three masters,
//! a replica each) and release meterd on free ports.

pub mod ceiling;
pub mod h2load;
pub mod load;
pub mod report;
pub mod scenario;
pub mod servers;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, ValueEnum};
use meter_testkit::{RedisCluster, RedisServer};
use tonic::transport::{Channel, Endpoint};

use crate::{
    ceiling::CeilingProbe,
    load::{Length, LoadShape},
    report::{Report, Row},
    scenario::{CeilingCommand, Scenario, Shape},
    servers::MeterdProcess,
};

/// Load benchmark of meterd, with the Redis ceiling measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "meter-bench", version)]
pub struct Args {
    /// Scenarios, comma-separated: deduct-hot, deduct-hot-many, deduct-spread, get-balance,
    /// grant, mixed, reserve-commit, login, get-account, record-login, get-stats, record-usage,
    /// record-usage-batch, record-usage-stream, check-quota, check-rate-limit,
    /// should-rate-limit; or `standard` (all of them on Redis; deduct-hot, deduct-spread,
    /// get-balance and mixed on a cluster; deduct-hot, deduct-hot-many, get-balance, mixed,
    /// reserve-commit, check-rate-limit and should-rate-limit on the embedded store).
    #[arg(long, value_delimiter = ',', default_value = "standard")]
    pub scenarios: Vec<String>,
    /// Stores to run on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "redis,cluster,memory")]
    pub stores: Vec<Store>,
    /// Requests in flight at once (and redis-benchmark's -c), for scenarios
    /// without a shape of their own.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections the requests are spread over, for scenarios without
    /// a shape of their own.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Measured time per scenario, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Unmeasured warm-up before each scenario.
    #[arg(long, default_value = "2s", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// A running meterd (`http://host:port`) to drive instead of starting one;
    /// then --stores names the one store it runs on.
    #[arg(long)]
    pub target: Option<String>,
    /// A running Redis for meterd and the ceiling, instead of starting one.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// The meterd binary to start.
    #[arg(long, default_value = "target/release/meterd")]
    pub meterd: PathBuf,
    /// The redis-benchmark binary.
    #[arg(long, default_value = "redis-benchmark")]
    pub redis_benchmark: String,
    /// Commands per redis-benchmark ceiling measurement (without pipelining).
    #[arg(long, default_value_t = 300_000)]
    pub ceiling_requests: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as Markdown tables to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also measure Envoy's ShouldRateLimit with h2load (nghttp2-client):
    /// 50 connections, 1 request in flight each, this many requests.
    #[arg(long)]
    pub h2load: Option<u64>,
    /// The h2load binary.
    #[arg(long, default_value = "h2load")]
    pub h2load_binary: String,
}

/// Where meterd keeps its data during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Store {
    /// Redis, with the ceiling measured.
    Redis,
    /// A local Redis Cluster of three masters with a replica each, compared
    /// with the single Redis.
    Cluster,
    /// The embedded in-memory store.
    Memory,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Cluster => "cluster",
            Self::Memory => "memory",
        }
    }

    fn standard(self) -> Vec<Scenario> {
        match self {
            Self::Redis => Scenario::ALL.to_vec(),
            Self::Cluster => vec![
                Scenario::DeductHot,
                Scenario::DeductSpread,
                Scenario::GetBalance,
                Scenario::Mixed,
            ],
            Self::Memory => vec![
                Scenario::DeductHot,
                Scenario::DeductHotMany,
                Scenario::GetBalance,
                Scenario::Mixed,
                Scenario::ReserveCommit,
                Scenario::CheckRateLimit,
                Scenario::ShouldRateLimit,
            ],
        }
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    number
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a number of seconds such as 10s"))
}

/// Runs the benchmark `args` describe and returns its report.
pub async fn bench(args: &Args) -> Result<Report, String> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let run_id = format!("bench-{}", started.as_secs());
    let default_shape = Shape {
        connections: args.connections.max(1),
        in_flight: args.concurrency.max(1),
    };
    let length = args
        .requests
        .map_or(Length::Duration(args.duration), Length::Requests);
    let wants_redis = args.stores.contains(&Store::Redis);
    let own_redis = (wants_redis && args.redis_url.is_none()).then(RedisServer::start);
    let redis_url = args
        .redis_url
        .clone()
        .or_else(|| own_redis.as_ref().map(RedisServer::url));
    let probe = match (&redis_url, wants_redis) {
        (Some(url), true) => Some(
            CeilingProbe::prepare(
                args.redis_benchmark.clone(),
                url,
                default_shape.in_flight,
                args.ceiling_requests,
            )
            .await?,
        ),
        _ => None,
    };

    let mut rows = Vec::new();
    let mut peak_rss = BTreeMap::new();
    for &store in &args.stores {
        let scenarios = scenarios_for(&args.scenarios, store)?;
        // Started only for its own scenarios, so that it does not share the
        // machine with the others.
        let cluster = (store == Store::Cluster && args.target.is_none()).then(RedisCluster::start);
        let process = match &args.target {
            Some(_) => None,
            None => {
                let url = match store {
                    Store::Redis => redis_url.clone(),
                    Store::Cluster => cluster.as_ref().map(RedisCluster::url),
                    Store::Memory => None,
                };
                Some(MeterdProcess::start(&args.meterd, url.as_deref()).await?)
            }
        };
        // Every node's CPU counts: on a cluster, replicas replay each write.
        let redis_pids: Vec<u32> = match store {
            Store::Redis => own_redis.iter().filter_map(RedisServer::pid).collect(),
            Store::Cluster => cluster
                .iter()
                .flat_map(|c| c.nodes().iter().filter_map(RedisServer::pid))
                .collect(),
            Store::Memory => Vec::new(),
        };
        let endpoint = args
            .target
            .clone()
            .or_else(|| process.as_ref().map(|p| p.endpoint.clone()));
        let endpoint = endpoint.ok_or("no meterd to drive")?;
        for scenario in scenarios {
            let shape = scenario.shape().unwrap_or(default_shape);
            eprintln!("running {scenario} ({shape}) on {} ...", store.name());
            let channels = connect(&endpoint, shape.connections).await?;
            let load_shape = LoadShape {
                concurrency: shape.in_flight,
                warmup: args.warmup,
                length,
            };
            let mut client = scenario::Client::new(channels[0].clone());
            scenario
                .prepare(&mut client, &run_id, shape.in_flight)
                .await
                .map_err(|s| format!("preparing {scenario}: {s}"))?;
            // CPU time of meterd and Redis across the measured part: the
            // cost per request, steadier than rates on a shared machine.
            let meterd_pid = process.as_ref().and_then(MeterdProcess::pid);
            let mut samples: Vec<[Option<Duration>; 2]> = Vec::new();
            let result = load::run(scenario, &channels, &run_id, load_shape, || {
                let redis = (!redis_pids.is_empty())
                    .then(|| redis_pids.iter().map(|&pid| servers::cpu_time(pid)).sum())
                    .flatten();
                samples.push([meterd_pid.and_then(servers::cpu_time), redis]);
            })
            .await;
            let cpu_us_per_request = |i: usize| match (samples.first(), samples.last()) {
                (Some(start), Some(end)) if result.requests > 0 => {
                    let spent = end[i]?.checked_sub(start[i]?)?;
                    Some(spent.as_secs_f64() * 1e6 / result.requests as f64)
                }
                _ => None,
            };
            let (meterd_cpu_us, redis_cpu_us) = (cpu_us_per_request(0), cpu_us_per_request(1));
            let check = scenario
                .verify(
                    &mut client,
                    &run_id,
                    shape.in_flight,
                    result.deducted,
                    result.granted,
                )
                .await;
            let (ceiling, ceiling_pipelined) = match (&probe, store) {
                (Some(probe), Store::Redis) => measure_ceiling(probe, scenario, shape).await?,
                _ => (None, None),
            };
            let ms = |q: f64| result.latency_us.value_at_quantile(q) as f64 / 1_000.0;
            rows.push(Row {
                store: store.name().to_owned(),
                scenario: scenario.name().to_owned(),
                shape: shape.to_string(),
                requests: result.requests,
                seconds: result.elapsed.as_secs_f64(),
                rate: result.rate(),
                p50_ms: ms(0.50),
                p90_ms: ms(0.90),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
                errors: result.errors.clone(),
                ratio: ceiling.map(|c| result.rate() / c.rate),
                ceiling,
                ceiling_pipelined,
                meterd_cpu_us,
                redis_cpu_us,
                check_ok: check.is_ok(),
                check: check.unwrap_or_else(|e| e),
            });
        }
        if let Some(requests) = args.h2load
            && store != Store::Cluster
        {
            eprintln!(
                "running should-rate-limit under h2load on {} ...",
                store.name()
            );
            let meterd_pid = process.as_ref().and_then(MeterdProcess::pid);
            rows.push(
                h2load_row(
                    args,
                    store,
                    &endpoint,
                    &run_id,
                    requests,
                    probe.as_ref(),
                    meterd_pid,
                    &redis_pids,
                )
                .await?,
            );
        }
        if let Some(process) = process {
            if let Some(rss) = process.peak_rss() {
                peak_rss.insert(store.name().to_owned(), rss);
            }
            process.stop().await;
        }
    }
    Ok(Report {
        date: utc_now(started),
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        settings: format!(
            "concurrency {}, {} connections unless the scenario has its own shape, {} per scenario after {:?} warm-up; meterd, Redis and this load generator share the machine",
            default_shape.in_flight,
            default_shape.connections,
            args.requests.map_or_else(
                || format!("{:?}", args.duration),
                |n| format!("{n} requests")
            ),
            args.warmup
        ),
        rows,
        peak_rss,
    })
}

/// ShouldRateLimit under h2load on `store`: rate, latency, CPU per
/// request, the ceiling at the same concurrency, and the end state (the
/// hot keys counted exactly the requests answered).
#[allow(clippy::too_many_arguments)]
async fn h2load_row(
    args: &Args,
    store: Store,
    endpoint: &str,
    run_id: &str,
    requests: u64,
    probe: Option<&CeilingProbe>,
    meterd_pid: Option<u32>,
    redis_pids: &[u32],
) -> Result<Row, String> {
    let body = h2load::temp_path("envoy-body.bin");
    std::fs::write(&body, h2load::body(run_id))
        .map_err(|e| format!("writing {}: {e}", body.display()))?;
    let warm = h2load::run(
        &args.h2load_binary,
        endpoint,
        &body,
        h2load::WARMUP_REQUESTS,
    )
    .await?;
    let cpu = || {
        let redis = (!redis_pids.is_empty())
            .then(|| {
                redis_pids
                    .iter()
                    .map(|&pid| servers::cpu_time(pid))
                    .sum::<Option<Duration>>()
            })
            .flatten();
        [meterd_pid.and_then(servers::cpu_time), redis]
    };
    let before = cpu();
    let measured = h2load::run(&args.h2load_binary, endpoint, &body, requests).await?;
    let after = cpu();
    let _ = std::fs::remove_file(&body);
    let per_request = |i: usize| {
        let spent = after[i]?.checked_sub(before[i]?)?;
        (measured.succeeded > 0).then(|| spent.as_secs_f64() * 1e6 / measured.succeeded as f64)
    };
    let channel = connect(endpoint, 1).await?.remove(0);
    let mut client = scenario::Client::new(channel);
    let reply = client
        .envoy
        .should_rate_limit(scenario::envoy_request(&[(
            "remote_address",
            format!("{run_id}-h2load-ip"),
        )]))
        .await
        .map_err(|s| format!("reading the end state: {s}"))?
        .into_inner();
    let remaining = u64::from(reply.statuses.first().map_or(0, |s| s.limit_remaining));
    let counted = u64::from(scenario::RATE_LIMIT) - remaining - 1;
    let answered = warm.succeeded + measured.succeeded;
    let check_ok = counted == answered && measured.failed == 0 && warm.failed == 0;
    let check = if check_ok {
        format!("counted = {counted} = the requests answered")
    } else {
        format!(
            "counted {counted}, requests answered {answered}, failed {}",
            measured.failed + warm.failed
        )
    };
    let ceiling = match (probe, store) {
        (Some(probe), Store::Redis) => Some(
            probe
                .measure(
                    &CeilingCommand::RateLimitEnvoy,
                    1,
                    Some(h2load::CONNECTIONS),
                )
                .await?,
        ),
        _ => None,
    };
    let rate = h2load::rate(&measured);
    let ms = |q: f64| measured.latency_us.value_at_quantile(q) as f64 / 1_000.0;
    let mut errors = BTreeMap::new();
    if measured.failed > 0 {
        errors.insert("h2load failed".to_owned(), measured.failed);
    }
    Ok(Row {
        store: store.name().to_owned(),
        scenario: "should-rate-limit (h2load)".to_owned(),
        shape: format!("{}×1", h2load::CONNECTIONS),
        requests: measured.succeeded,
        seconds: measured.seconds,
        rate,
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        errors,
        ratio: ceiling.map(|c| rate / c.rate),
        ceiling,
        ceiling_pipelined: None,
        meterd_cpu_us: per_request(0),
        redis_cpu_us: per_request(1),
        check_ok,
        check,
    })
}

fn scenarios_for(names: &[String], store: Store) -> Result<Vec<Scenario>, String> {
    let mut scenarios = Vec::new();
    for name in names {
        if name == "standard" {
            scenarios.extend(store.standard());
        } else {
            scenarios.push(Scenario::parse(name)?);
        }
    }
    Ok(scenarios)
}

/// The ceiling of a scenario: its commands' redis-benchmark rates at the
/// scenario's concurrency, weighted by their share of requests (a harmonic
/// mean), and deduct-hot's pipelined one.
async fn measure_ceiling(
    probe: &CeilingProbe,
    scenario: Scenario,
    shape: Shape,
) -> Result<(Option<ceiling::Ceiling>, Option<ceiling::Ceiling>), String> {
    let mut seconds_per_request = 0.0;
    let (mut p50, mut p99) = (0.0f64, 0.0f64);
    for (weight, command) in scenario.ceiling() {
        let measured = probe.measure(&command, 1, Some(shape.in_flight)).await?;
        seconds_per_request += weight / measured.rate;
        p50 += weight * measured.p50_ms;
        p99 = p99.max(measured.p99_ms);
    }
    let ceiling = ceiling::Ceiling {
        rate: 1.0 / seconds_per_request,
        p50_ms: p50,
        p99_ms: p99,
    };
    let pipelined = match scenario {
        Scenario::DeductHot => Some(
            probe
                .measure(&CeilingCommand::DeductHot, 16, Some(shape.in_flight))
                .await?,
        ),
        _ => None,
    };
    Ok((Some(ceiling), pipelined))
}

async fn connect(endpoint: &str, connections: usize) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        // One Endpoint::connect per channel: each is its own HTTP/2 connection.
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| format!("bad target {endpoint}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

fn utc_now(since_epoch: Duration) -> String {
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", since_epoch.as_secs()),
            "+%Y-%m-%d %H:%M UTC",
        ])
        .output();
    output
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{} s after the epoch", since_epoch.as_secs()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
