//! Store health for `grpc.health.v1.Health`: SERVING while the store answers.

use std::{sync::Arc, time::Duration};

use meter_core::{Clock, CreditLedger, Credits};
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::SERVICE_NAMES;

/// Pings the store every `interval` and reports every service (and `""`)
/// SERVING or NOT_SERVING; on `stop`, reports NOT_SERVING and returns.
pub(crate) async fn watch_store<L: CreditLedger, C: Clock>(
    credits: Arc<Credits<L, C>>,
    reporter: HealthReporter,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut current = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => break,
            _ = ticker.tick() => {}
        }
        // A store that hangs rather than refusing counts as down after one interval.
        let check = tokio::time::timeout(
            interval.max(Duration::from_millis(100)),
            credits.ledger().ping(),
        )
        .await;
        let status = match check {
            Ok(Ok(())) => ServingStatus::Serving,
            Ok(Err(error)) => {
                if current != Some(ServingStatus::NotServing) {
                    tracing::warn!(%error, "store check failed: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
            Err(_) => {
                if current != Some(ServingStatus::NotServing) {
                    tracing::warn!(?interval, "store check timed out: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if current != Some(status) {
            if status == ServingStatus::Serving {
                tracing::info!("store answers: SERVING");
            }
            report(&reporter, status).await;
            current = Some(status);
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}
