//! `meter-stripe-bridge`: receives Stripe webhooks over HTTP, verifies
//! their signatures, and turns each event into idempotent `meterd` gRPC
//! calls ([`bridge`]). It keeps no state: correctness comes from the
//! signature check, idempotency keys made of Stripe's ids, and the
//! event-time ordering meterd applies.
//!
//! It depends on the generated API (`meter-api`) only: meterd is a gRPC
//! server to it like to any other caller.

pub mod bridge;
pub mod config;
pub mod event;
pub mod signature;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    routing::{get, post},
};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub use bridge::{Bridge, Failure, Handled};
pub use config::{Cli, Config};
use signature::Secrets;

/// How long a call to meterd may take before the delivery answers 5xx
/// (Stripe waits longer, then retries).
const METERD_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
#[derive(Clone, Debug)]
struct App {
    bridge: Bridge,
    health: HealthClient<Channel>,
    secrets: Arc<Secrets>,
    tolerance: Duration,
}

/// Why the bridge stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `--meterd` is not a URL.
    #[error("--meterd {0:?} is not a URL such as http://127.0.0.1:50051")]
    MeterdUrl(String),
    /// The certificates for meterd cannot be used.
    #[error(
        "cannot use the TLS files for meterd (--meterd-ca, --meterd-cert, --meterd-key): {0:?}"
    )]
    Tls(tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// The HTTP routes: the webhook, liveness and readiness.
fn router(app: App) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(app)
}

/// Serves on `listener` until `shutdown` resolves, then finishes the
/// deliveries in flight.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let tls = config.meterd_tls.is_some();
    let mut endpoint = Endpoint::from_shared(config.meterd.clone())
        .map_err(|_| RunError::MeterdUrl(config.meterd.clone()))?;
    if let Some(tls) = config.meterd_tls.clone() {
        endpoint = endpoint.tls_config(tls).map_err(RunError::Tls)?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(METERD_CALL_TIMEOUT)
        .connect_lazy();
    let app = App {
        bridge: Bridge::new(
            channel.clone(),
            config.meterd_token.clone(),
            config.donation_metric.clone(),
        ),
        health: HealthClient::new(channel),
        secrets: Arc::new(config.secrets),
        tolerance: config.tolerance,
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        meterd = %config.meterd,
        tls,
        secrets = app.secrets.len(),
        "meter-stripe-bridge listening on /webhooks/stripe"
    );
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// A JSON answer.
type Answer = (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
);

fn answer(status: StatusCode, body: serde_json::Value) -> Answer {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Answer {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let header = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    // The raw bytes are verified before anything reads them.
    if let Err(error) = signature::verify(header, &body, &app.secrets, now, app.tolerance) {
        tracing::warn!(%error, "webhook refused: bad signature");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": error.to_string() }),
        );
    }
    let event: event::Event = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "webhook refused: a signed body that is not a Stripe event");
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("not a Stripe event: {error}") }),
            );
        }
    };
    let (id, kind) = (event.id.clone(), event.kind.clone());
    match app.bridge.handle(event).await {
        Ok(Handled::Applied(what)) => {
            tracing::info!(event = %id, %kind, %what, "applied");
            answer(StatusCode::OK, json!({ "received": true }))
        }
        Ok(Handled::Ignored(why)) => {
            tracing::debug!(event = %id, %kind, %why, "ignored");
            answer(StatusCode::OK, json!({ "received": true, "ignored": why }))
        }
        Err(Failure::Unmappable(reason)) => {
            tracing::warn!(event = %id, %kind, %reason, "cannot map the event: answering 400");
            answer(StatusCode::BAD_REQUEST, json!({ "error": reason }))
        }
        Err(Failure::Retry(reason)) => {
            tracing::error!(event = %id, %kind, %reason, "meterd failed: answering 503 so that Stripe retries");
            answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": reason }))
        }
    }
}

/// 200 while meterd answers its health check SERVING, else 503.
async fn ready(State(app): State<App>) -> (StatusCode, &'static str) {
    let mut health = app.health.clone();
    let serving = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|reply| reply.into_inner().status == i32::from(ServingStatus::Serving));
    if serving {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "meterd is not serving")
    }
}
