//! The results: a table for people, JSON for scripts, Markdown for BENCHMARKS.md.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::ceiling::Ceiling;

/// One scenario on one store.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `redis`, `cluster` or `memory`.
    pub store: String,
    /// The scenario's name.
    pub scenario: String,
    /// Connections × requests in flight on each, e.g. `2×32`.
    pub shape: String,
    /// Requests answered while measuring.
    pub requests: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rate: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Failed requests by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// redis-benchmark on the same Redis, same concurrency, no pipelining.
    pub ceiling: Option<Ceiling>,
    /// The same with 16 commands per round trip.
    pub ceiling_pipelined: Option<Ceiling>,
    /// rate / ceiling.rate.
    pub ratio: Option<f64>,
    /// meterd's CPU time per request while measuring, µs (when the bench started it).
    pub meterd_cpu_us: Option<f64>,
    /// redis-server's CPU time per request while measuring, µs (when the bench started it).
    pub redis_cpu_us: Option<f64>,
    /// Whether the end-state check passed.
    pub check_ok: bool,
    /// What the end-state check found.
    pub check: String,
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// UTC time of the run.
    pub date: String,
    /// CPU model and core count.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// Concurrency, connections, durations.
    pub settings: String,
    /// Results.
    pub rows: Vec<Row>,
    /// meterd's peak RSS per store, bytes (when the bench started meterd).
    pub peak_rss: BTreeMap<String, u64>,
}

fn ceiling_cell(ceiling: Option<&Ceiling>) -> String {
    ceiling.map_or_else(
        || "–".to_owned(),
        |c| format!("{} (p99 {:.2} ms)", thousands(c.rate), c.p99_ms),
    )
}

fn cpu_cell(us: Option<f64>) -> String {
    us.map_or_else(|| "–".to_owned(), |us| format!("{us:.1}"))
}

fn errors_cell(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".to_owned();
    }
    errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `48123.4` as `48,123`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table's columns: header, and width in the plain-text table.
const COLUMNS: [(&str, usize); 15] = [
    ("store", 7),
    ("scenario", 15),
    ("connections × in flight", 23),
    ("req/s", 9),
    ("p50 ms", 7),
    ("p90 ms", 7),
    ("p99 ms", 7),
    ("p99.9 ms", 8),
    ("errors", 7),
    ("ceiling req/s (redis-benchmark -P 1)", 36),
    ("ratio", 6),
    ("ceiling -P 16", 13),
    ("meterd CPU µs/req", 17),
    ("Redis CPU µs/req", 16),
    ("end state", 0),
];

/// One row's cells, in [`COLUMNS`] order.
fn cells(row: &Row) -> [String; 15] {
    [
        row.store.clone(),
        row.scenario.clone(),
        row.shape.clone(),
        thousands(row.rate),
        format!("{:.2}", row.p50_ms),
        format!("{:.2}", row.p90_ms),
        format!("{:.2}", row.p99_ms),
        format!("{:.2}", row.p999_ms),
        errors_cell(&row.errors),
        ceiling_cell(row.ceiling.as_ref()),
        row.ratio
            .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}")),
        row.ceiling_pipelined
            .as_ref()
            .map_or_else(|| "–".to_owned(), |c| thousands(c.rate)),
        cpu_cell(row.meterd_cpu_us),
        cpu_cell(row.redis_cpu_us),
        format!(
            "{}{}",
            if row.check_ok { "ok: " } else { "FAILED: " },
            row.check
        ),
    ]
}

impl Report {
    /// Per store, the throughput and meterd CPU per request of the many-connections
    /// shape (deduct-hot-many) against the few-connections one (deduct-hot).
    pub fn shape_comparison(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for few in self.rows.iter().filter(|r| r.scenario == "deduct-hot") {
            let Some(many) = self
                .rows
                .iter()
                .find(|r| r.scenario == "deduct-hot-many" && r.store == few.store)
            else {
                continue;
            };
            let cpu = match (many.meterd_cpu_us, few.meterd_cpu_us) {
                (Some(m), Some(f)) => format!("; meterd CPU {m:.1} vs {f:.1} µs/req"),
                _ => String::new(),
            };
            lines.push(format!(
                "{}: deduct {} connections at {} req/s = {:.2} of {} connections at {} req/s{cpu}",
                few.store,
                many.shape,
                thousands(many.rate),
                many.rate / few.rate.max(1e-9),
                few.shape,
                thousands(few.rate),
            ));
        }
        lines
    }

    /// Per scenario run on both, the cluster's throughput and CPU per
    /// request (meterd; Redis summed over every node) against one Redis's.
    pub fn cluster_comparison(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for on_cluster in self.rows.iter().filter(|r| r.store == "cluster") {
            let Some(single) = self
                .rows
                .iter()
                .find(|r| r.store == "redis" && r.scenario == on_cluster.scenario)
            else {
                continue;
            };
            let cpu =
                |what: &str, cluster: Option<f64>, single: Option<f64>| match (cluster, single) {
                    (Some(c), Some(s)) => format!("; {what} {c:.1} vs {s:.1} µs/req"),
                    _ => String::new(),
                };
            lines.push(format!(
                "cluster: {} at {} req/s = {:.2} of one Redis at {} req/s{}{}",
                on_cluster.scenario,
                thousands(on_cluster.rate),
                on_cluster.rate / single.rate.max(1e-9),
                thousands(single.rate),
                cpu("meterd CPU", on_cluster.meterd_cpu_us, single.meterd_cpu_us),
                cpu(
                    "Redis CPU (every node)",
                    on_cluster.redis_cpu_us,
                    single.redis_cpu_us
                ),
            ));
        }
        lines
    }

    /// The comparison lines under the table: shapes, then cluster against one Redis.
    pub fn comparisons(&self) -> Vec<String> {
        let mut lines = self.shape_comparison();
        lines.extend(self.cluster_comparison());
        lines
    }

    /// Markdown tables, ready for BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run {} on {}.\n\nCommand: `{}` ({})\n",
            self.date, self.machine, self.command, self.settings
        );
        let headers: Vec<&str> = COLUMNS.iter().map(|(header, _)| *header).collect();
        let _ = writeln!(out, "| {} |", headers.join(" | "));
        let rules: Vec<&str> = COLUMNS
            .iter()
            .enumerate()
            .map(|(i, _)| {
                if i < 3 || i == COLUMNS.len() - 1 {
                    "---"
                } else {
                    "--:"
                }
            })
            .collect();
        let _ = writeln!(out, "|{}|", rules.join("|"));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", cells(row).join(" | "));
        }
        if !self.peak_rss.is_empty() {
            let rss: Vec<String> = self
                .peak_rss
                .iter()
                .map(|(store, bytes)| format!("{store} {:.1} MiB", *bytes as f64 / 1_048_576.0))
                .collect();
            let _ = writeln!(out, "\nmeterd peak RSS: {}.", rss.join(", "));
        }
        for line in self.comparisons() {
            let _ = writeln!(out, "\n{line}.");
        }
        out
    }

    /// A plain-text table for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "meter-bench  {}  {}\n{}\n",
            self.date, self.machine, self.settings
        );
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(COLUMNS)
                .enumerate()
                .map(|(i, (cell, (_, width)))| {
                    if i < 3 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            padded.join("  ")
        };
        let headers: Vec<String> = COLUMNS
            .iter()
            .map(|(header, _)| (*header).to_owned())
            .collect();
        let _ = writeln!(out, "{}", line(&headers));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(&cells(row)));
        }
        for (store, bytes) in &self.peak_rss {
            let _ = writeln!(
                out,
                "meterd peak RSS ({store}): {:.1} MiB",
                *bytes as f64 / 1_048_576.0
            );
        }
        for line in self.comparisons() {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(store: &str, scenario: &str, rate: f64, cpu: (f64, f64)) -> Row {
        Row {
            store: store.into(),
            scenario: scenario.into(),
            shape: "2×32".into(),
            requests: 1_000,
            seconds: 1.0,
            rate,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            p999_ms: 1.0,
            errors: BTreeMap::new(),
            ceiling: None,
            ceiling_pipelined: None,
            ratio: None,
            meterd_cpu_us: Some(cpu.0),
            redis_cpu_us: Some(cpu.1),
            check_ok: true,
            check: String::new(),
        }
    }

    #[test]
    fn a_cluster_row_is_compared_with_the_same_scenario_on_one_redis() {
        let report = Report {
            date: String::new(),
            machine: String::new(),
            command: String::new(),
            settings: String::new(),
            rows: vec![
                row("redis", "deduct-spread", 20_000.0, (30.0, 15.0)),
                row("redis", "grant", 30_000.0, (30.0, 15.0)),
                row("cluster", "deduct-spread", 15_000.0, (40.0, 45.0)),
                row("cluster", "mixed", 15_000.0, (40.0, 45.0)),
            ],
            peak_rss: BTreeMap::new(),
        };
        assert_eq!(
            report.cluster_comparison(),
            [
                "cluster: deduct-spread at 15,000 req/s = 0.75 of one Redis at 20,000 req/s; \
              meterd CPU 40.0 vs 30.0 µs/req; Redis CPU (every node) 45.0 vs 15.0 µs/req"
            ],
            "only scenarios run on both"
        );
        assert!(
            report
                .markdown()
                .contains("\ncluster: deduct-spread at 15,000 req/s")
        );
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(48_123.6), "48,124");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
