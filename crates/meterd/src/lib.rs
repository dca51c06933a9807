//! `meterd`, the composition root: it picks a store, plugs it into the
//! domain services, and serves them over gRPC with health and reflection.
//!
//! [`run`] takes its listener and shutdown signal from the caller, so tests
//! start the real server on port 0 and stop it when they like.

pub mod config;
mod health;
pub mod logging;

use std::{future::Future, sync::Arc};

use meter_api::v1::credits_service_server::CreditsServiceServer;
use meter_core::{CreditLedger, Credits, SystemClock};
use meter_grpc::CreditsGrpc;
use meter_memory::MemoryCreditLedger;
use meter_redis::{RedisCreditLedger, RedisStore};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{Server, server::TcpIncoming};

pub use config::{Cli, Config, StoreConfig};

/// Every gRPC service meterd serves with health reporting, by its full name.
pub const SERVICE_NAMES: &[&str] = &[<CreditsServiceServer<
    CreditsGrpc<MemoryCreditLedger, SystemClock>,
> as tonic::server::NamedService>::NAME];

/// Why meterd stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Redis URL is unusable.
    #[error(transparent)]
    RedisUrl(#[from] meter_redis::InvalidRedisUrl),
    /// Reflection could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then reports NOT_SERVING, lets in-flight
/// calls finish (up to the configured grace) and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    match &config.store {
        StoreConfig::Memory => {
            tracing::warn!(
                "no REDIS_URL: running on the embedded in-memory store; data is lost when meterd stops"
            );
            serve(
                MemoryCreditLedger::new(config.idempotency_window),
                &config,
                listener,
                shutdown,
            )
            .await
        }
        StoreConfig::Redis(redis) => {
            tracing::info!(url = %config::redact_url(&redis.url), "using Redis");
            let ledger =
                RedisCreditLedger::new(RedisStore::open(redis)?, config.idempotency_window);
            serve(ledger, &config, listener, shutdown).await
        }
    }
}

async fn serve<L: CreditLedger>(
    ledger: L,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let credits = Arc::new(Credits::new(
        ledger,
        Arc::clone(&config.catalog),
        SystemClock,
    ));
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let (stopping, stop) = watch::channel(false);
    let checker = tokio::spawn(health::watch_store(
        Arc::clone(&credits),
        reporter,
        config.health_interval,
        stop.clone(),
    ));
    // v1 for current clients, v1alpha for older ones (grpcurl before 1.9);
    // each lists both, so every client sees the same services.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(meter_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // Shutdown order: the health checker reports NOT_SERVING and exits, then
    // the server stops accepting and drains in-flight calls.
    let drain = async move {
        shutdown.await;
        tracing::info!("shutdown requested: reporting NOT_SERVING and finishing in-flight calls");
        let _ = stopping.send(true);
        match checker.await {
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "health checker failed"),
        }
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CreditsServiceServer::from_arc(Arc::new(CreditsGrpc::new(
            credits,
        ))))
        .serve_with_incoming_shutdown(incoming, drain);

    let grace = config.shutdown_grace;
    let mut stop = stop;
    let deadline = async move {
        // Starts counting only once shutdown has begun.
        let _ = stop.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!(?grace, "in-flight calls did not finish within the shutdown grace; stopping anyway"),
    }
    tracing::info!("meterd stopped");
    Ok(())
}
