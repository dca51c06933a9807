//! The server around the services: health, reflection, start-up and shutdown.

mod support;

use std::time::{Duration, Instant};

use meter_api::v1::GetBalanceRequest;
use meter_testkit::RedisServer;
use meterd::{Stop, StoreConfig};
use redis::AsyncCommands;
use support::{Meterd, MeterdProcess, config, eventually, status};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

const NAMES: [&str; 2] = ["", "meter.v1.CreditsService"];

/// A `Watch` of the overall health (`""`).
async fn watch_overall(meterd: &Meterd) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    HealthClient::new(meterd.channel())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn serving(meterd: &Meterd) {
    for service in NAMES {
        eventually(Duration::from_secs(5), "SERVING", || async {
            status(meterd, service).await == Some(ServingStatus::Serving)
        })
        .await;
    }
}

#[tokio::test]
async fn health_follows_redis_down_and_back() {
    let mut redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    serving(&meterd).await;
    redis.stop();
    for service in NAMES {
        eventually(
            Duration::from_secs(5),
            "NOT_SERVING once Redis is stopped",
            || async { status(&meterd, service).await == Some(ServingStatus::NotServing) },
        )
        .await;
    }
    assert_eq!(
        status(&meterd, "liveness").await,
        Some(ServingStatus::Serving),
        "alive all the same: Kubernetes must not restart it"
    );
    redis.restart();
    serving(&meterd).await;
}

#[tokio::test]
async fn every_name_is_not_serving_until_the_first_store_check_succeeds() {
    let redis = RedisServer::start();
    // Redis accepts connections but answers nothing: no check can succeed.
    redis.freeze();
    let meterd = Meterd::redis(redis.url()).await;
    for service in NAMES {
        assert_eq!(
            status(&meterd, service).await,
            Some(ServingStatus::NotServing),
            "{service:?} before any store check succeeded"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for service in NAMES {
        assert_eq!(
            status(&meterd, service).await,
            Some(ServingStatus::NotServing),
            "{service:?} while Redis does not answer"
        );
    }
    redis.thaw();
    serving(&meterd).await;
}

#[tokio::test]
async fn shutdown_reports_not_serving_to_watchers_then_returns() {
    let meterd = Meterd::memory().await;
    serving(&meterd).await;
    let mut watch = watch_overall(&meterd).await;
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(meterd.stop());
    let next = watch.next().await.expect("a status").expect("ok");
    assert_eq!(
        next.status,
        ServingStatus::NotServing as i32,
        "watchers hear NOT_SERVING before the server goes"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stops within the grace")
        .expect("task")
        .expect("clean stop");
}

#[tokio::test]
async fn an_open_health_watch_does_not_hold_shutdown() {
    let meterd = Meterd::start(meterd::Config {
        shutdown_grace: Duration::from_secs(30),
        ..config(StoreConfig::Memory)
    })
    .await;
    serving(&meterd).await;
    let mut watch = watch_overall(&meterd).await;
    assert!(watch.next().await.is_some());
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), meterd.stop())
        .await
        .expect("a watcher does not hold shutdown for the 30 s grace")
        .expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The stream ends rather than hanging: the last status, then its end.
    let mut rest = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
        rest.push(item.map(|r| r.status));
    }
    assert!(
        rest.iter().all(|r| r
            .as_ref()
            .map_or(true, |s| *s == ServingStatus::NotServing as i32)),
        "{rest:?}"
    );
}

#[tokio::test]
async fn on_sigterm_meterd_keeps_serving_through_the_delay_then_drains() {
    let meterd = Meterd::start(meterd::Config {
        shutdown_delay: Duration::from_millis(1_500),
        ..config(StoreConfig::Memory)
    })
    .await;
    serving(&meterd).await;
    let addr = meterd.addr;
    let channel = meterd.channel();
    let started = Instant::now();
    let stopping = tokio::spawn(meterd.stop_as(Stop::Terminate));
    let mut health = HealthClient::new(channel);
    eventually(Duration::from_secs(1), "NOT_SERVING first", || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::NotServing as i32)
        }
    })
    .await;
    // Still within the delay: a new connection is accepted and served.
    let late = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("the listener is still open during the delay");
    let read = meter_api::v1::credits_service_client::CreditsServiceClient::new(late)
        .get_balance(GetBalanceRequest {
            account_id: "late-caller".into(),
        })
        .await;
    assert!(read.is_ok(), "served during the delay: {read:?}");
    let _ = health.check(HealthCheckRequest::default()).await;
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean stop");
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "the listener closed after {:?}, before the delay",
        started.elapsed()
    );
    let refused = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn the_store_is_closed_when_meterd_stops() {
    let redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    serving(&meterd).await;
    meterd
        .credits()
        .get_balance(GetBalanceRequest {
            account_id: "u1".into(),
        })
        .await
        .expect("a call through the pipeline");
    meterd.stop().await.expect("clean stop");
    let mut conn = redis.connection().await;
    eventually(
        Duration::from_secs(3),
        "meterd's Redis connections are closed once it has stopped",
        || {
            let mut conn = conn.clone();
            async move {
                let clients: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut conn)
                    .await
                    .expect("client list");
                clients.lines().count() == 1
            }
        },
    )
    .await;
    let _: () = conn.set("still-up", "1").await.expect("redis is fine");
}

fn list_request_v1() -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    let meterd = Meterd::memory().await;
    let expected = [
        "envoy.service.ratelimit.v3.RateLimitService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "meter.v1.CreditsService",
        "meter.v1.RateLimitService",
        "meter.v1.StatsService",
        "meter.v1.SubscriptionService",
        "meter.v1.UsageService",
    ];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(meterd.channel());
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([list_request_v1()]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let reply = replies.next().await.expect("reply").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a list: {reply:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, expected);

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(meterd.channel());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "meter.v1.CreditsService".into(),
            ),
        ),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let reply = replies.next().await.expect("reply").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        reply.message_response
    else {
        panic!("no descriptor: {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[test]
fn sigterm_stops_the_binary_after_the_delay_with_exit_code_zero() {
    let mut meterd = MeterdProcess::start(
        &["--listen", "127.0.0.1:0", "--shutdown-delay", "200ms"],
        &[],
    );
    meterd.wait_for_log("store answers");
    let log = meterd.log();
    assert!(
        log.lines().all(|line| line.starts_with('{')),
        "JSON lines: {log}"
    );
    meterd.signal("-TERM");
    let (status, log) = meterd.wait();
    assert_eq!(status.code(), Some(0), "{log}");
    let order = [
        "reporting NOT_SERVING",
        "still serving while probes",
        "closing the listener",
        "meterd stopped",
    ];
    let positions: Vec<Option<usize>> = order.iter().map(|line| log.find(line)).collect();
    assert!(
        positions.windows(2).all(|w| w[0].is_some() && w[0] < w[1]),
        "shutdown steps in order {order:?}: {log}"
    );
}

#[test]
fn the_help_starts_with_a_sentence_for_users() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("--help")
        .output()
        .expect("meterd --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.starts_with("meterd keeps every account's credits exactly"),
        "{help}"
    );
    for flag in [
        "--redis-timeout",
        "--redis-max-pending",
        "--max-in-flight",
        "--shutdown-delay",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
}

#[test]
fn an_empty_redis_url_runs_the_embedded_store() {
    let mut meterd = MeterdProcess::start(&["--listen", "127.0.0.1:0"], &[("REDIS_URL", "")]);
    meterd.wait_for_log("store answers");
    assert!(
        meterd.log().contains("embedded in-memory store"),
        "{}",
        meterd.log()
    );
}

#[test]
fn an_idempotency_window_past_thirty_days_stops_the_binary_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["--listen", "127.0.0.1:0", "--idempotency-window", "31d"])
        .env_remove("REDIS_URL")
        .output()
        .expect("meterd runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--idempotency-window") && stderr.contains("30 days"),
        "{stderr}"
    );
}

/// The ERROR log lines about Redis's eviction policy, with the policy they name.
fn eviction_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("maxmemory-policy"))
        .collect()
}

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_reported_at_start_and_on_reconnect() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let mut meterd = MeterdProcess::start(
        &["--listen", "127.0.0.1:0", "--health-interval", "100ms"],
        &[("REDIS_URL", &redis.url())],
    );
    meterd.wait_for_log("allkeys-lru");
    let log = meterd.log();
    assert!(
        eviction_errors(&log)
            .iter()
            .any(|l| l.contains("allkeys-lru") && l.contains("apply twice")),
        "an ERROR naming the policy and the risk: {}",
        meterd.log()
    );
    // An operator changes the policy; Redis then drops meterd's connections.
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-ttl")
        .query_async(&mut conn)
        .await
        .expect("config set");
    redis.drop_clients(&mut conn).await;
    // The health check meets the dead connection, and its replacement reports again.
    meterd.wait_for_log("volatile-ttl");
    let log = meterd.log();
    assert!(
        eviction_errors(&log)
            .iter()
            .any(|l| l.contains("volatile-ttl")),
        "{log}"
    );
}

/// Starts the binary with `flag` naming a file holding `text`; what it
/// printed on stderr and the file's path, after checking it exited 1.
fn refused_at_start(flag: &str, text: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("file.toml");
    std::fs::write(&path, text).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["--listen", "127.0.0.1:0", flag])
        .arg(&path)
        .env_remove("REDIS_URL")
        .output()
        .expect("meterd runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (stderr, path.display().to_string())
}

#[test]
fn a_malformed_plan_catalog_stops_the_binary_naming_file_line_and_problem() {
    let (stderr, path) = refused_at_start(
        "--plans",
        "[plans.free]\ncredits = 100\nbilling_interval = \"month\"\nprice_micros = \"free\"\n",
    );
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(
        stderr.contains("price_micros") || stderr.contains("integer"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_limits_file_stops_the_binary_naming_file_line_and_problem() {
    let (stderr, path) = refused_at_start(
        "--limits",
        "[[domains]]\ndomain = \"edge\"\n\n[[domains.descriptors]]\nkey = \"ip\"\nrate_limit = { requests_per_unit = 0, unit = \"second\" }\n",
    );
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("requests_per_unit is 0"), "{stderr}");
}

#[test]
fn a_malformed_tokens_file_stops_the_binary_naming_file_entry_and_problem() {
    let secret = "s-0123456789abcdef0123456789abcdef";
    let (stderr, path) = refused_at_start(
        "--tokens-file",
        &format!("# name scope token\nbilling write {secret}\ndashboard admin {secret}x\n"),
    );
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("entry 3"), "{stderr}");
    assert!(stderr.contains("neither read nor write"), "{stderr}");
    assert!(!stderr.contains(secret), "no token in the output: {stderr}");
}

#[tokio::test]
async fn every_call_answers_its_request_id() {
    let meterd = Meterd::memory().await;
    let mut credits = meterd.credits();
    let mut request = tonic::Request::new(meter_api::v1::GetBalanceRequest {
        account_id: "org_rid".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-from-caller-1".parse().expect("ascii"));
    let answered = credits.get_balance(request).await.expect("balance");
    assert_eq!(
        answered
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-from-caller-1"),
        "the caller's id comes back"
    );
    let refused = credits
        .get_balance(meter_api::v1::GetBalanceRequest {
            account_id: "bad id with spaces".into(),
        })
        .await
        .expect_err("invalid");
    let made = refused
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(made.len(), 24, "a new id, on errors too: {made:?}");
    assert!(made.chars().all(|c| c.is_ascii_hexdigit()), "{made}");
}

#[test]
fn json_logs_carry_the_request_id_and_method_of_each_call() {
    let mut meterd = MeterdProcess::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-filter",
            "meter_grpc=debug,info",
        ],
        &[],
    );
    meterd.wait_for_log("store answers");
    let addr = meterd.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut request = tonic::Request::new(meter_api::v1::GetBalanceRequest {
            account_id: "org_log".into(),
        });
        request
            .metadata_mut()
            .insert("x-request-id", "req-json-1".parse().expect("ascii"));
        meter_api::v1::credits_service_client::CreditsServiceClient::new(channel)
            .get_balance(request)
            .await
            .expect("balance");
    });
    meterd.wait_for_log("req-json-1");
    let log = meterd.log();
    let line = log
        .lines()
        .find(|line| line.contains("call finished"))
        .unwrap_or_else(|| panic!("a line per call: {log}"));
    assert!(line.starts_with('{'), "{line}");
    assert!(line.contains("\"request_id\":\"req-json-1\""), "{line}");
    assert!(line.contains("\"method\":\"GetBalance\""), "{line}");
}

#[test]
fn a_tokens_file_without_a_token_stops_the_binary_rather_than_allow_every_call() {
    let (stderr, _) = refused_at_start("--tokens-file", "# nobody yet\n\n");
    assert!(stderr.contains("hold no token"), "{stderr}");
}
