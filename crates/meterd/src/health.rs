//! `grpc.health.v1.Health`: SERVING while the store answers.
//!
//! Every name (`""` and each service) starts NOT_SERVING and turns SERVING
//! only once a store check has succeeded, so Kubernetes sends no traffic to
//! a replica that cannot reach Redis. [`LIVENESS`] is SERVING as long as the
//! process answers: the liveness probe's name, so that a Redis outage takes
//! replicas out of the load balancer without restarting them. On shutdown every name goes
//! NOT_SERVING first; once draining begins, open `Watch` streams end, so a
//! watcher (a load balancer) never holds shutdown up.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::watch;
use tonic::{Request, Response, Status, codegen::tokio_stream::Stream};
use tonic_health::{
    ServingStatus,
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

use crate::{SERVICE_NAMES, stores::Stores};

/// Where meterd is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving; health follows the store.
    Serving,
    /// Shutdown began: NOT_SERVING, still serving calls (the shutdown delay).
    Stopping,
    /// The listener is closed; in-flight calls finish; Watch streams end.
    Draining,
}

/// The health name a liveness probe asks for: SERVING while the process runs.
pub(crate) const LIVENESS: &str = "liveness";

/// The health service and its reporter, every name NOT_SERVING but [`LIVENESS`].
pub(crate) async fn service(
    phase: watch::Receiver<Phase>,
) -> (HealthReporter, HealthServer<DrainingHealth>) {
    let reporter = HealthReporter::new();
    report(&reporter, ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let inner = HealthService::from_health_reporter(reporter.clone());
    (reporter, HealthServer::new(DrainingHealth { inner, phase }))
}

/// Checks the store every `interval` and reports every name SERVING or
/// NOT_SERVING; once the phase leaves [`Phase::Serving`], reports
/// NOT_SERVING and returns.
pub(crate) async fn watch_store<S: Stores>(
    stores: Arc<S>,
    reporter: HealthReporter,
    interval: Duration,
    mut phase: watch::Receiver<Phase>,
) {
    // Every name starts NOT_SERVING (see `service`); `checked` is what the
    // last check found, for logging each change once.
    let mut reported = ServingStatus::NotServing;
    let mut checked = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Serving) => break,
            _ = ticker.tick() => {}
        }
        // A store that hangs rather than refusing counts as down after one interval.
        let check =
            tokio::time::timeout(interval.max(Duration::from_millis(100)), stores.ping()).await;
        // Shutdown may have begun during the check: never report SERVING after it.
        if *phase.borrow() != Phase::Serving {
            break;
        }
        let status = match check {
            Ok(Ok(())) => ServingStatus::Serving,
            Ok(Err(error)) => {
                if checked != Some(ServingStatus::NotServing) {
                    tracing::warn!(%error, "store check failed: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
            Err(_) => {
                if checked != Some(ServingStatus::NotServing) {
                    tracing::warn!(?interval, "store check timed out: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        checked = Some(status);
        if reported != status {
            if status == ServingStatus::Serving {
                tracing::info!("store answers: SERVING");
            }
            report(&reporter, status).await;
            reported = status;
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    meter_metrics::metrics()
        .serving
        .set(i64::from(status == ServingStatus::Serving));
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}

/// tonic-health's service, with `Watch` streams that end when draining begins.
#[derive(Debug)]
pub(crate) struct DrainingHealth {
    inner: HealthService,
    phase: watch::Receiver<Phase>,
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = EndsOnDrain;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        let mut phase = self.phase.clone();
        let draining = Box::pin(async move {
            let _ = phase.wait_for(|p| *p == Phase::Draining).await;
        });
        Ok(Response::new(EndsOnDrain { statuses, draining }))
    }
}

/// A health `Watch` stream that ends once meterd starts draining.
pub(crate) struct EndsOnDrain {
    statuses: tonic_health::server::WatchStream,
    draining: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Stream for EndsOnDrain {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // A pending status first: NOT_SERVING is reported before draining
        // begins, and every watcher must hear it before its stream ends.
        if let Poll::Ready(status) = Pin::new(&mut self.statuses).poll_next(cx) {
            return Poll::Ready(status);
        }
        match self.draining.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
