//! Starts the real `meterd` server in-process on a free port.

#![allow(dead_code, missing_docs)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use meter_api::v1::credits_service_client::CreditsServiceClient;
use meter_core::PlanCatalog;
use meter_redis::RedisConfig;
use meterd::{Config, StoreConfig, config::EXAMPLE_PLANS};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// A running meterd; stopped (gracefully) when dropped or by [`Meterd::stop`].
pub struct Meterd {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), meterd::RunError>>>,
}

impl Meterd {
    /// meterd on the embedded store.
    pub async fn memory() -> Self {
        Self::start(StoreConfig::Memory).await
    }

    /// meterd on the Redis at `url`.
    pub async fn redis(url: String) -> Self {
        Self::start(StoreConfig::Redis(RedisConfig {
            url,
            connections: 4,
            connect_timeout: Duration::from_millis(500),
        }))
        .await
    }

    async fn start(store: StoreConfig) -> Self {
        let config = Config {
            store,
            catalog: Arc::new(
                PlanCatalog::from_toml("example", EXAMPLE_PLANS).expect("example catalog"),
            ),
            idempotency_window: Duration::from_secs(3600),
            health_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(5),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(meterd::run(config, listener, async {
            let _ = stopped.await;
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

    /// Asks it to shut down and waits until it has.
    pub async fn stop(mut self) -> Result<(), meterd::RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("meterd task")
    }
}

impl Drop for Meterd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
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
