//! The benchmark against a real meterd: every scenario runs, and its
//! end-state check passes; on Redis, the ceiling comes from redis-benchmark.

use clap::Parser;
use meter_bench::{Args, bench, report::Report};
use meter_redis::RedisConfig;
use meter_testkit::{RedisCluster, RedisServer};
use meterd::{Config, Stop, StoreConfig};
use tokio::{net::TcpListener, sync::oneshot};

/// Starts meterd in-process; returns its endpoint and the handle that stops it.
async fn meterd(store: StoreConfig) -> (String, oneshot::Sender<()>) {
    let config = Config::new(store).expect("defaults");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(meterd::run(config, listener, async {
        let _ = stopped.await;
        Stop::Interrupt
    }));
    (endpoint, stop)
}

/// A short run (2,000 requests per scenario, 16 in flight) against the
/// meterd at `endpoint`, with `flags` on top.
async fn quick_bench(endpoint: &str, flags: &[&str]) -> Report {
    let mut args = vec![
        "meter-bench",
        "--target",
        endpoint,
        "--requests",
        "2000",
        "--warmup",
        "0.2s",
        "--concurrency",
        "16",
    ];
    args.extend(flags);
    let args = Args::try_parse_from(args).expect("flags");
    bench(&args).await.expect("bench runs")
}

fn assert_clean(report: &Report, scenarios: usize) {
    assert_eq!(report.rows.len(), scenarios);
    for row in &report.rows {
        assert!(row.check_ok, "{}: {}", row.scenario, row.check);
        assert!(row.errors.is_empty(), "{}: {:?}", row.scenario, row.errors);
        assert!(
            row.requests >= 2_000 && row.rate > 0.0,
            "{}: {} requests",
            row.scenario,
            row.requests
        );
        assert!(
            row.p50_ms > 0.0 && row.p50_ms <= row.p99_ms,
            "{}: percentiles",
            row.scenario
        );
    }
    let markdown = report.markdown();
    assert!(
        report
            .rows
            .iter()
            .all(|row| markdown.contains(&format!("| {} | {} |", row.store, row.scenario))),
        "every row is in the Markdown table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_checks_its_end_state_on_the_embedded_store() {
    let (endpoint, _stop) = meterd(StoreConfig::Memory).await;
    let report = quick_bench(
        &endpoint,
        &[
            "--stores",
            "memory",
            "--scenarios",
            "deduct-hot,deduct-hot-many,deduct-spread,get-balance,grant,mixed",
        ],
    )
    .await;
    assert_clean(&report, 6);
    let many = report
        .rows
        .iter()
        .find(|r| r.scenario == "deduct-hot-many")
        .expect("the many-connections scenario");
    assert_eq!(
        many.shape, "50×1",
        "its own shape, whatever --connections says"
    );
    assert_eq!(
        report.shape_comparison().len(),
        1,
        "{:?}",
        report.shape_comparison()
    );
    assert!(
        report.rows.iter().all(|r| r.ceiling.is_none()),
        "no ceiling without Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_each_scenario_gets_a_redis_benchmark_ceiling() {
    let redis = RedisServer::start();
    let (endpoint, _stop) = meterd(StoreConfig::Redis(RedisConfig {
        connections: 2,
        ..RedisConfig::new(redis.url())
    }))
    .await;
    let report = quick_bench(
        &endpoint,
        &[
            "--stores",
            "redis",
            "--redis-url",
            &redis.url(),
            "--scenarios",
            "deduct-hot,deduct-hot-many,mixed",
            "--ceiling-requests",
            "2000",
        ],
    )
    .await;
    assert_clean(&report, 3);
    for row in &report.rows {
        let ceiling = row.ceiling.expect("a ceiling on Redis");
        assert!(
            ceiling.rate > 0.0 && ceiling.p99_ms > 0.0,
            "{}: {ceiling:?}",
            row.scenario
        );
        assert!(row.ratio.is_some_and(|r| r > 0.0));
    }
    assert!(
        report.rows[0].ceiling_pipelined.is_some(),
        "deduct-hot also measures -P 16"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_standard_scenarios_run_and_check_their_end_state() {
    let cluster = RedisCluster::start();
    let (endpoint, _stop) = meterd(StoreConfig::Redis(RedisConfig::new(cluster.url()))).await;
    let report = quick_bench(&endpoint, &["--stores", "cluster"]).await;
    assert_clean(&report, 4);
    assert!(report.rows.iter().all(|r| r.store == "cluster"));
}
