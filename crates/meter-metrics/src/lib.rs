//! meterd's Prometheus metrics: one process-wide registry, defined here
//! once, that the gRPC transport, the stores and the server record into,
//! and its text exposition for `GET /metrics`. Names follow Prometheus'
//! conventions: `meter_` prefix, base units (seconds), `_total` counters.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A call's service, method and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The gRPC service, e.g. `meter.v1.CreditsService`.
    pub service: &'static str,
    /// The method, e.g. `Deduct`.
    pub method: &'static str,
    /// The status code's name, e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: &'static str,
}

/// A call's service and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The gRPC service.
    pub service: &'static str,
    /// The method.
    pub method: &'static str,
}

/// One label naming an outcome or a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The outcome (`allowed`, `denied`, `recorded`, …).
    pub outcome: &'static str,
}

/// Latency buckets from 0.25 ms to about 4 s, doubling.
#[derive(Clone, Copy, Debug)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
    }
}

/// Every metric meterd keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Calls finished, by service, method and status code.
    pub calls: Family<CallLabels, Counter>,
    /// How long calls took until their answer, by service and method.
    pub call_seconds: Family<MethodLabels, Histogram, LatencyBuckets>,
    /// Calls being worked on now.
    pub in_flight: Gauge,
    /// Calls refused at once because meterd was at its bound of calls in flight.
    pub load_shed: Counter,
    /// Redis round trips (scripts and commands), from send to reply.
    pub redis_seconds: Histogram,
    /// Redis round trips that failed, by kind (`unavailable`, `outcome_unknown`,
    /// `overloaded`, `error_reply`, `error`).
    pub redis_errors: Family<Outcome, Counter>,
    /// Redis commands sent (or queued to be) and not answered yet.
    pub redis_pending: Gauge,
    /// Connections to Redis open now, every node's pool counted.
    pub redis_connections: Gauge,
    /// Connections to Redis opened (a rising count means connections break).
    pub redis_connections_opened: Counter,
    /// Holds by what happened to them (`reserved`, `committed`, `released`,
    /// `expired`; first applications only).
    pub holds: Family<Outcome, Counter>,
    /// Whether the store answers its health check: 1 SERVING, 0 NOT_SERVING.
    pub serving: Gauge,
    /// Calls answered from an idempotency record (a retry), by service and method.
    pub replays: Family<MethodLabels, Counter>,
    /// Credits taken by Deduct and Commit (first applications only).
    pub credits_deducted: Counter,
    /// Credits added by Grant (first applications only).
    pub credits_granted: Counter,
    /// Credits of grants that expired unused.
    pub credits_expired: Counter,
    /// Credits given back to allowances by period resets (what the ended
    /// period had used).
    pub credits_renewed: Counter,
    /// Rate limit checks, by outcome (`allowed`, `denied`, `shadow_denied`, `failed_open`).
    pub rate_limit_checks: Family<Outcome, Counter>,
    /// CheckQuota calls that answered not allowed.
    pub quota_denials: Counter,
    /// Usage events by outcome (`recorded`, `duplicate`, `rejected`).
    pub usage_events: Family<Outcome, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("meter");
        let metrics = Self {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(LatencyBuckets),
            in_flight: Gauge::default(),
            load_shed: Counter::default(),
            redis_seconds: LatencyBuckets.new_metric(),
            redis_errors: Family::default(),
            redis_pending: Gauge::default(),
            redis_connections: Gauge::default(),
            redis_connections_opened: Counter::default(),
            holds: Family::default(),
            serving: Gauge::default(),
            replays: Family::default(),
            credits_deducted: Counter::default(),
            credits_granted: Counter::default(),
            credits_expired: Counter::default(),
            credits_renewed: Counter::default(),
            rate_limit_checks: Family::default(),
            quota_denials: Counter::default(),
            usage_events: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "grpc_requests",
            "gRPC calls finished, by service, method and status code",
            metrics.calls.clone(),
        );
        registry.register_with_unit(
            "grpc_request_duration",
            "How long gRPC calls took until their answer",
            prometheus_client::registry::Unit::Seconds,
            metrics.call_seconds.clone(),
        );
        registry.register(
            "grpc_in_flight",
            "gRPC calls being worked on now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "grpc_load_shed",
            "Calls refused at once because meterd was at its bound of calls in flight",
            metrics.load_shed.clone(),
        );
        registry.register_with_unit(
            "redis_round_trip",
            "Redis round trips (scripts and commands), from send to reply",
            prometheus_client::registry::Unit::Seconds,
            metrics.redis_seconds.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis round trips that failed, by kind",
            metrics.redis_errors.clone(),
        );
        registry.register(
            "redis_pending",
            "Redis commands sent (or queued to be) and not answered yet",
            metrics.redis_pending.clone(),
        );
        registry.register(
            "redis_connections",
            "Connections to Redis open now",
            metrics.redis_connections.clone(),
        );
        registry.register(
            "redis_connections_opened",
            "Connections to Redis opened since start",
            metrics.redis_connections_opened.clone(),
        );
        registry.register(
            "holds",
            "Holds by what happened to them (reserved, committed, released, expired)",
            metrics.holds.clone(),
        );
        registry.register(
            "store_serving",
            "Whether the store answers its health check (1) or not (0)",
            metrics.serving.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Calls answered from an idempotency record, by service and method",
            metrics.replays.clone(),
        );
        registry.register(
            "credits_deducted",
            "Credits taken by Deduct and Commit (first applications only)",
            metrics.credits_deducted.clone(),
        );
        registry.register(
            "credits_granted",
            "Credits added by Grant (first applications only)",
            metrics.credits_granted.clone(),
        );
        registry.register(
            "credits_expired",
            "Credits of grants that expired unused",
            metrics.credits_expired.clone(),
        );
        registry.register(
            "credits_renewed",
            "Credits given back to allowances by period resets",
            metrics.credits_renewed.clone(),
        );
        registry.register(
            "rate_limit_checks",
            "Rate limit checks by outcome (allowed, denied, shadow_denied, failed_open)",
            metrics.rate_limit_checks.clone(),
        );
        registry.register(
            "quota_denials",
            "CheckQuota calls that answered not allowed",
            metrics.quota_denials.clone(),
        );
        registry.register(
            "usage_events",
            "Usage events by outcome (recorded, duplicate, rejected)",
            metrics.usage_events.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts what a store settled while applying a call: credits of grants
    /// that expired, holds that expired, credits renewed by period resets.
    pub fn settled(&self, credits_expired: u64, holds_expired: u64, credits_renewed: u64) {
        self.credits_expired.inc_by(credits_expired);
        self.credits_renewed.inc_by(credits_renewed);
        if holds_expired > 0 {
            self.holds
                .get_or_create(&Outcome { outcome: "expired" })
                .inc_by(holds_expired);
        }
    }

    /// Every metric in OpenMetrics 1.0 text.
    pub fn encode_openmetrics(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Every metric in Prometheus' text format 0.0.4 ([`CONTENT_TYPE`]),
    /// which every scraper and `promtool check metrics` read: OpenMetrics
    /// with a counter's family named like its `_total` sample, and no
    /// `# UNIT` or `# EOF` lines.
    pub fn encode(&self) -> String {
        let openmetrics = self.encode_openmetrics();
        let counters: Vec<&str> = openmetrics
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.strip_suffix(" counter"))
            .collect();
        let mut text = String::with_capacity(openmetrics.len());
        for line in openmetrics.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(&name)
                    .then(|| format!("{prefix}{name}_total {tail}"))
            });
            match renamed {
                Some(line) => text.push_str(&line),
                None => text.push_str(line),
            }
            text.push('\n');
        }
        text
    }
}

/// The process' metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_help_and_counts() {
        let metrics = metrics();
        metrics
            .calls
            .get_or_create(&CallLabels {
                service: "meter.v1.CreditsService",
                method: "Deduct",
                code: "OK",
            })
            .inc_by(3);
        metrics.credits_deducted.inc_by(7);
        let text = metrics.encode();
        assert!(
            text.contains(
                "meter_grpc_requests_total{service=\"meter.v1.CreditsService\",method=\"Deduct\",code=\"OK\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("meter_credits_deducted_total 7"), "{text}");
        assert!(
            text.contains("# HELP meter_redis_round_trip_seconds"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE meter_credits_deducted_total counter"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(metrics.encode_openmetrics().ends_with("# EOF\n"));
    }
}
