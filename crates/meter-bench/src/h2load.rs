//! Envoy's ShouldRateLimit measured from outside the process: `h2load`
//! (Debian's `nghttp2-client`) sends one fixed gRPC request body over 50
//! connections with one request in flight each, as a fleet of proxies
//! would; the ceiling is redis-benchmark's EVALSHA of the same script at
//! the same concurrency, in the same run.

use std::{path::PathBuf, process::Stdio};

use hdrhistogram::Histogram;
use prost::Message;
use tokio::process::Command;

use crate::scenario;

/// Connections (one request in flight on each), as Limitador was measured.
pub const CONNECTIONS: usize = 50;

/// What h2load measured.
#[derive(Debug)]
pub struct H2loadRun {
    /// Requests answered HTTP 200.
    pub succeeded: u64,
    /// Requests that failed, errored or timed out.
    pub failed: u64,
    /// Seconds h2load took.
    pub seconds: f64,
    /// Per-request latency, µs.
    pub latency_us: Histogram<u64>,
}

/// The framed gRPC body of the ShouldRateLimit h2load sends, the client
/// address and tenant named after `run`: 0 (not compressed), the length
/// (4 bytes, big-endian), the message.
pub fn body(run: &str) -> Vec<u8> {
    let request = scenario::envoy_request(&[
        ("remote_address", format!("{run}-h2load-ip")),
        ("tenant", format!("{run}-h2load-tenant")),
    ]);
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    framed
}

/// Runs `h2load` with `requests` requests against meterd at `endpoint`.
pub async fn run(
    binary: &str,
    endpoint: &str,
    body: &std::path::Path,
    requests: u64,
) -> Result<H2loadRun, String> {
    let log = temp_path("h2load.log");
    let url = format!("{endpoint}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
    let output = Command::new(binary)
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            &CONNECTIONS.to_string(),
            "-m",
            "1",
            "-t",
            "1",
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(body)
        .arg(format!("--log-file={}", log.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {binary}: {e} (apt-get install nghttp2-client)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let seconds = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(',').next())
        .and_then(|t| parse_elapsed(t.trim()))
        .ok_or_else(|| format!("unexpected h2load output: {text}"))?;
    let counts = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .ok_or_else(|| format!("unexpected h2load output: {text}"))?;
    let count = |what: &str| -> u64 {
        counts
            .split(',')
            .find(|part| part.trim().ends_with(what))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let ok = text
        .lines()
        .find_map(|l| l.strip_prefix("status codes: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let mut latency_us = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let lines = std::fs::read_to_string(&log).map_err(|e| format!("h2load log: {e}"))?;
    let _ = std::fs::remove_file(&log);
    for line in lines.lines() {
        // start time (µs since the epoch), HTTP status, µs to the end of the response.
        if let Some(us) = line
            .split('\t')
            .nth(2)
            .and_then(|f| f.trim().parse::<u64>().ok())
        {
            latency_us.record(us.max(1)).map_err(|e| e.to_string())?;
        }
    }
    Ok(H2loadRun {
        succeeded: ok,
        failed: count("failed") + count("errored") + count("timeout"),
        seconds,
        latency_us,
    })
}

/// `1.23s`, `456.7ms` or `89us` as seconds.
fn parse_elapsed(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// A file of this process under the temp dir.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("meter-bench-{}-{name}", std::process::id()))
}

/// The rate of a run.
pub fn rate(run: &H2loadRun) -> f64 {
    if run.seconds > 0.0 {
        run.succeeded as f64 / run.seconds
    } else {
        0.0
    }
}

/// Requests h2load sends before it measures.
pub const WARMUP_REQUESTS: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_parse_in_every_unit_h2load_prints() {
        assert_eq!(parse_elapsed("1.5s"), Some(1.5));
        assert_eq!(parse_elapsed("250ms"), Some(0.25));
        assert!(parse_elapsed("12 s").is_none());
    }

    #[test]
    fn the_body_is_one_uncompressed_grpc_frame() {
        let body = body("r");
        assert_eq!(body[0], 0);
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert_eq!(length, body.len() - 5);
    }
}
