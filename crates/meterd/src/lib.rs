//! `meterd`, the composition root: it picks a store, plugs its ports into
//! the domain services, and serves them over gRPC with health and reflection.
//!
//! [`run`] takes its listener and shutdown signal from the caller, so tests
//! start the real server on port 0 and stop it when they like;
//! [`run_with_clock`] also takes the clock, so they can move time.

pub mod config;
mod health;
pub mod logging;
pub mod stores;
mod tokens;

use std::{future::Future, sync::Arc};

use meter_api::envoy::service::ratelimit::v3::rate_limit_service_server::{
    self as envoy_rate_limit_server, RateLimitServiceServer as EnvoyRateLimitServiceServer,
};
use meter_api::v1::{
    credits_service_server::{self, CreditsServiceServer},
    rate_limit_service_server::{self, RateLimitServiceServer},
    stats_service_server::{self, StatsServiceServer},
    subscription_service_server::{self, SubscriptionServiceServer},
    usage_service_server::{self, UsageServiceServer},
};
use meter_core::{ActivityStats, Clock, Credits, Subscriptions, SystemClock, Usage};
use meter_grpc::{
    CreditsGrpc, EnvoyRateLimitGrpc, Guarded, InFlight, KnownMethods, Observed, RateLimitGrpc,
    Scope, StatsGrpc, SubscriptionGrpc, TokenStore, UsageGrpc,
};
use meter_ratelimit::RateLimiter;
use meter_redis::RedisStore;
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};

pub use config::{Cli, Config, StoreConfig};
use health::Phase;
pub use stores::{MemoryStores, RedisStores, Stores};

/// Every service meterd serves (`meter.v1`'s and Envoy's rate limit
/// service), by its full name (health reports each).
pub const SERVICE_NAMES: &[&str] = &[
    credits_service_server::SERVICE_NAME,
    subscription_service_server::SERVICE_NAME,
    stats_service_server::SERVICE_NAME,
    usage_service_server::SERVICE_NAME,
    rate_limit_service_server::SERVICE_NAME,
    envoy_rate_limit_server::SERVICE_NAME,
];

/// How meterd was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, from an orchestrator: report NOT_SERVING, keep serving for
    /// the shutdown delay so probes and load balancers stop sending, then
    /// close the listener and drain.
    Terminate,
    /// SIGINT (Ctrl-C at a terminal): report NOT_SERVING, close and drain at once.
    Interrupt,
}

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
    /// The TLS certificate, key or client CA is unusable.
    #[error("TLS: the certificate, key or client CA is unusable: {0:?}")]
    Tls(tonic::transport::Error),
    /// The metrics address cannot be listened on.
    #[error("cannot listen on --metrics-listen {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Serves until `shutdown` resolves, then stops as [`Stop`] says: in-flight
/// calls get the configured grace to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> Result<(), RunError> {
    run_with_clock(config, SystemClock, listener, shutdown).await
}

/// [`run`] with time from `clock` instead of the system's.
pub async fn run_with_clock<C: Clock + Clone>(
    config: Config,
    clock: C,
    listener: TcpListener,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> Result<(), RunError> {
    match &config.store {
        StoreConfig::Memory => {
            tracing::warn!(
                "no REDIS_URL: running on the embedded in-memory store; data is lost when meterd stops"
            );
            let stores = MemoryStores::new(config.idempotency_window, config.history);
            serve(stores, clock, &config, listener, shutdown).await
        }
        StoreConfig::Redis(redis) => {
            tracing::info!(url = %config::redact_url(redis.url.expose()), "using Redis");
            let stores = RedisStores::new(
                RedisStore::open(redis)?,
                config.idempotency_window,
                config.history,
            );
            serve(stores, clock, &config, listener, shutdown).await
        }
    }
}

async fn serve<S: Stores, C: Clock + Clone>(
    stores: S,
    clock: C,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> Result<(), RunError> {
    let credits = Arc::new(
        Credits::new(stores.credits(), Arc::clone(&config.catalog), clock.clone())
            .with_max_hold_ttl(config.max_hold_ttl),
    );
    let subscriptions = Arc::new(
        Subscriptions::new(
            stores.accounts(),
            Arc::clone(&config.catalog),
            clock.clone(),
        )
        .with_max_event_skew(config.max_event_skew),
    );
    let usage = Arc::new(Usage::new(
        stores.usage(),
        Arc::clone(&config.catalog),
        clock.clone(),
        config.usage,
    ));
    let rate_limiter = Arc::new(RateLimiter::new(
        stores.rate_limits(Arc::new(clock.clone())),
        Arc::clone(&config.limits),
    ));
    let stats = Arc::new(
        ActivityStats::new(stores.stats(), Arc::clone(&config.catalog), clock)
            .with_recent(config.recent_conversations)
            .with_max_skew(config.max_event_skew),
    );
    let stores = Arc::new(stores);
    let _metrics_server = match config.metrics_listen {
        None => None,
        Some(addr) => Some(AbortOnDrop(serve_metrics(addr).await?)),
    };
    let (phase_tx, phase) = watch::channel(Phase::Serving);
    let (reporter, health_service) = health::service(phase.clone()).await;
    let checker = tokio::spawn(health::watch_store(
        Arc::clone(&stores),
        reporter,
        config.health_interval,
        phase.clone(),
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

    // Shutdown order: every name NOT_SERVING; on SIGTERM, the delay, still
    // serving; then the listener closes and in-flight calls drain (health
    // Watch streams end here), within the grace.
    let delay = config.shutdown_delay;
    let drain = async move {
        let stop = shutdown.await;
        tracing::info!(?stop, "shutdown requested: reporting NOT_SERVING");
        let _ = phase_tx.send(Phase::Stopping);
        if let Err(error) = checker.await {
            tracing::error!(%error, "health checker failed");
        }
        if stop == Stop::Terminate && !delay.is_zero() {
            tracing::info!(
                ?delay,
                "still serving while probes and load balancers notice NOT_SERVING"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("closing the listener and finishing in-flight calls");
        let _ = phase_tx.send(Phase::Draining);
    };
    // Health and reflection stay outside the bound: probes must answer
    // even while meterd refuses calls. Inside the bound, each admitted call
    // is observed (request id, span, metrics) and its token checked; a call
    // refused at the bound costs nothing more (load_shed counts it).
    // Health is always open (probes send none).
    let in_flight = InFlight::new(config.max_in_flight);
    if config.tokens.is_empty() {
        tracing::warn!(
            "no bearer tokens configured (--tokens-file, METERD_TOKENS): every call is allowed"
        );
    } else {
        tracing::info!(tokens = ?config.tokens, "bearer tokens required");
    }
    let tokens = &TokenStore::new(Arc::clone(&config.tokens));
    let _reloader = config.token_sources.clone().map(|sources| {
        AbortOnDrop(tokio::spawn(tokens::reload(
            sources,
            tokens.clone(),
            config.tokens_reload_interval,
        )))
    });
    let known = Arc::new(KnownMethods::from_descriptor_sets(&[
        meter_api::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]));
    macro_rules! guard {
        ($service:expr) => {
            in_flight.bound(Observed::new(
                Guarded::new($service, tokens.clone()),
                Arc::clone(&known),
            ))
        };
    }
    let reflection_tokens = if config.auth_reflection {
        tokens.clone()
    } else {
        TokenStore::default()
    };
    macro_rules! reflect {
        ($service:expr) => {
            Observed::new(
                Guarded::with_scope($service, reflection_tokens.clone(), Scope::Read),
                Arc::clone(&known),
            )
        };
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        // A connection that does not finish its handshake in time is
        // closed: no socket is held by a caller that never authenticates.
        let mut settings = ServerTlsConfig::new()
            .identity(Identity::from_pem(&tls.cert, &tls.key))
            .timeout(std::time::Duration::from_secs(10));
        if let Some(ca) = &tls.client_ca {
            settings = settings.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(settings).map_err(RunError::Tls)?;
        tracing::info!(
            mutual = tls.client_ca.is_some(),
            "serving gRPC over TLS{}",
            if tls.client_ca.is_some() {
                ": every caller presents a certificate of --tls-client-ca"
            } else {
                ""
            }
        );
    }
    let server = builder
        .add_service(health_service)
        .add_service(reflect!(reflection_v1))
        .add_service(reflect!(reflection_v1alpha))
        .add_service(guard!(CreditsServiceServer::from_arc(Arc::new(
            CreditsGrpc::new(credits),
        ))))
        .add_service(guard!(SubscriptionServiceServer::new(
            SubscriptionGrpc::new(subscriptions,)
        )))
        .add_service(guard!(StatsServiceServer::new(StatsGrpc::new(stats))))
        .add_service(guard!(UsageServiceServer::new(UsageGrpc::new(usage))))
        .add_service(guard!(RateLimitServiceServer::new(RateLimitGrpc::new(
            Arc::clone(&rate_limiter),
        ))))
        .add_service(guard!(EnvoyRateLimitServiceServer::new(
            EnvoyRateLimitGrpc::new(rate_limiter),
        )))
        .serve_with_incoming_shutdown(incoming, drain);

    let grace = config.shutdown_grace;
    let mut phase = phase;
    let deadline = async move {
        // Starts counting only once draining has begun.
        let _ = phase.wait_for(|p| *p == Phase::Draining).await;
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!(?grace, "in-flight calls did not finish within the shutdown grace; stopping anyway");
            Ok(())
        }
    };
    stores.close().await;
    tracing::info!("meterd stopped");
    Ok(served?)
}

/// A background task of one `serve`, ended however `serve` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `GET /metrics` (the Prometheus text of every metric) on `addr`
/// until the task is aborted.
async fn serve_metrics(
    addr: std::net::SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::MetricsListen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving Prometheus metrics on /metrics");
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    meter_metrics::CONTENT_TYPE,
                )],
                meter_metrics::metrics().encode(),
            )
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    }))
}
