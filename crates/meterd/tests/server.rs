//! The server around the services: health, reflection, start-up and shutdown.

mod support;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use meter_testkit::RedisServer;
use support::{Meterd, eventually};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

async fn status(meterd: &Meterd, service: &str) -> Option<ServingStatus> {
    let mut health = HealthClient::new(meterd.channel());
    let reply = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

#[tokio::test]
async fn health_follows_redis_down_and_back() {
    let mut redis = RedisServer::start();
    let meterd = Meterd::redis(redis.url()).await;
    for service in ["", "meter.v1.CreditsService"] {
        eventually(Duration::from_secs(5), "SERVING at start", || async {
            status(&meterd, service).await == Some(ServingStatus::Serving)
        })
        .await;
    }
    redis.stop();
    for service in ["", "meter.v1.CreditsService"] {
        eventually(
            Duration::from_secs(5),
            "NOT_SERVING once Redis is stopped",
            || async { status(&meterd, service).await == Some(ServingStatus::NotServing) },
        )
        .await;
    }
    redis.restart();
    eventually(
        Duration::from_secs(5),
        "SERVING again once Redis is back",
        || async { status(&meterd, "").await == Some(ServingStatus::Serving) },
    )
    .await;
}

#[tokio::test]
async fn shutdown_reports_not_serving_then_returns() {
    let meterd = Meterd::memory().await;
    eventually(Duration::from_secs(5), "SERVING at start", || async {
        status(&meterd, "").await == Some(ServingStatus::Serving)
    })
    .await;
    let mut health = HealthClient::new(meterd.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(meterd.stop());
    let next = watch.next().await.expect("a status").expect("ok");
    assert_eq!(
        next.status,
        ServingStatus::NotServing as i32,
        "watchers hear NOT_SERVING before the server goes"
    );
    drop(watch);
    drop(health);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stops within the grace")
        .expect("task")
        .expect("clean stop");
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
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "meter.v1.CreditsService",
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
fn sigterm_stops_the_binary_with_exit_code_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("REDIS_URL")
        .stderr(Stdio::piped())
        .spawn()
        .expect("meterd starts");
    let mut stderr = child.stderr.take().expect("stderr");
    // Wait until it logs that it serves, reading its JSON log lines.
    let mut log = String::new();
    let mut buffer = [0u8; 4096];
    while !log.contains("store answers") {
        let n = stderr.read(&mut buffer).expect("read log");
        assert!(n > 0, "meterd exited early: {log}");
        log.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert!(
        log.lines().all(|line| line.starts_with('{')),
        "JSON lines: {log}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
    stderr.read_to_string(&mut log).expect("rest of the log");
    assert!(log.contains("meterd stopped"), "{log}");
}

#[test]
fn a_malformed_plan_catalog_stops_the_binary_naming_file_line_and_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plans.toml");
    std::fs::write(
        &path,
        "[plans.free]\ncredits = 100\nbilling_interval = \"month\"\nprice_micros = \"free\"\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["--listen", "127.0.0.1:0", "--plans"])
        .arg(&path)
        .env_remove("REDIS_URL")
        .output()
        .expect("meterd runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(
        stderr.contains("price_micros") || stderr.contains("integer"),
        "{stderr}"
    );
}
