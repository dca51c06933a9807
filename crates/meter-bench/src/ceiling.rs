//! The physical limit in the same run: `redis-benchmark` against the same
//! Redis, at the same concurrency, running the commands a scenario's
//! requests cost meterd (EVALSHA of the very scripts meterd runs).

use std::{
    process::Stdio,
    time::{SystemTime, UNIX_EPOCH},
};

use meter_redis::{credits::CreditsHash, script::Layout};
use tokio::process::Command;

use crate::scenario::{CeilingCommand, SPREAD_ACCOUNTS};

/// One redis-benchmark measurement.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Ceiling {
    /// Commands per second.
    pub rate: f64,
    /// 50th percentile latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Runs redis-benchmark on one Redis with fixed settings.
pub struct CeilingProbe {
    redis_benchmark: String,
    host: String,
    port: u16,
    concurrency: usize,
    requests: u64,
    deduct_sha: String,
    grant_sha: String,
}

const WINDOW_MS: &str = "86400000";

impl CeilingProbe {
    /// Loads meterd's scripts into the Redis at `url` and funds the ceiling's accounts.
    pub async fn prepare(
        redis_benchmark: String,
        url: &str,
        concurrency: usize,
        requests: u64,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
        let info = client.get_connection_info().addr().to_string();
        let (host, port) = info
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
            .ok_or_else(|| format!("cannot tell host and port of {url}"))?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        let (deduct, grant) = (
            meter_redis::credits::deduct_script(),
            meter_redis::credits::grant_script(),
        );
        for script in [deduct, grant] {
            let _: String = script
                .load_command()
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
        }
        let probe = Self {
            redis_benchmark,
            host,
            port,
            concurrency,
            requests,
            deduct_sha: deduct.hash().to_owned(),
            grant_sha: grant.hash().to_owned(),
        };
        // Fund the accounts the deduct commands hit, so every deduct applies
        // (and writes) just as meterd's do.
        let mut keys = vec![hot_key()];
        keys.extend((0..SPREAD_ACCOUNTS).map(|i| format!("user:{{ceiling-{i:012}}}:credits")));
        for key in keys {
            // ARGV as meterd sends it: the mutation head, then amount and trial.
            let granted: Result<Vec<Option<String>>, _> = redis::cmd("EVALSHA")
                .arg(grant.hash())
                .arg(1)
                .arg(key)
                .arg(now_ms())
                .arg(now_text())
                .arg("")
                .arg(WINDOW_MS)
                .arg((1i64 << 53) - 1)
                .arg("false")
                .query_async(&mut conn)
                .await;
            granted.map_err(|e| format!("funding the ceiling accounts: {e}"))?;
        }
        Ok(probe)
    }

    /// The ceiling of `command` with `pipeline` commands per round trip and
    /// `concurrency` clients (the probe's own when `None`), measured now: not
    /// cached, since the machine's speed drifts, so each scenario's ceiling
    /// is taken right after its own load.
    pub async fn measure(
        &self,
        command: &CeilingCommand,
        pipeline: u32,
        concurrency: Option<usize>,
    ) -> Result<Ceiling, String> {
        let (now, text) = (now_ms().to_string(), now_text());
        let args: Vec<String> = match command {
            // ARGV as meterd sends it: now_ms, now_text, fingerprint,
            // window_ms, then the script's own arguments.
            CeilingCommand::DeductHot => vec![
                "EVALSHA".into(),
                self.deduct_sha.clone(),
                "1".into(),
                hot_key(),
                now,
                text,
                String::new(),
                WINDOW_MS.into(),
                "1".into(),
            ],
            CeilingCommand::DeductSpread => vec![
                "EVALSHA".into(),
                self.deduct_sha.clone(),
                "1".into(),
                "user:{ceiling-__rand_int__}:credits".into(),
                now,
                text,
                String::new(),
                WINDOW_MS.into(),
                "1".into(),
            ],
            CeilingCommand::ReadBalance => {
                let mut args = vec!["HMGET".to_owned(), hot_key()];
                args.extend(CreditsHash::NAMES.iter().map(|f| (*f).to_owned()));
                args
            }
            CeilingCommand::Grant => vec![
                "EVALSHA".into(),
                self.grant_sha.clone(),
                "1".into(),
                hot_key(),
                now,
                text,
                String::new(),
                WINDOW_MS.into(),
                "1".into(),
                "false".into(),
            ],
        };
        let output = Command::new(&self.redis_benchmark)
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-c",
                &concurrency.unwrap_or(self.concurrency).to_string(),
            ])
            .args([
                "-n",
                &self.requests.to_string(),
                "-P",
                &pipeline.to_string(),
            ])
            .args([
                "-r",
                &SPREAD_ACCOUNTS.to_string(),
                "--csv",
                "--precision",
                "3",
            ])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                format!(
                    "cannot run {}: {e} (install redis-tools)",
                    self.redis_benchmark
                )
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let ceiling = parse_csv(&text).ok_or_else(|| {
            format!(
                "unexpected redis-benchmark output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        Ok(ceiling)
    }
}

fn hot_key() -> String {
    "user:{ceiling-hot}:credits".to_owned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// The current instant as the scripts' stored text, as meterd passes it.
fn now_text() -> String {
    meter_core::Timestamp::from_millis(now_ms())
        .unwrap_or(meter_core::Timestamp::EPOCH)
        .to_string()
}

/// Reads the data line of `redis-benchmark --csv`:
/// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms".
fn parse_csv(text: &str) -> Option<Ceiling> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("\"test\""))?;
    // The test name may contain commas; the last seven fields are numbers.
    let fields: Vec<f64> = line
        .rsplitn(8, ',')
        .take(7)
        .map(|f| f.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    // rsplitn yields from the end: max, p99, p95, p50, min, avg, rps.
    Some(Ceiling {
        rate: fields[6],
        p50_ms: fields[3],
        p99_ms: fields[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_line_gives_rate_and_percentiles_even_with_commas_in_the_name() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"EVALSHA abc,1 k\",\"48123.45\",\"1.2\",\"0.1\",\"1.1\",\"2.0\",\"2.3\",\"9.0\"\n";
        let ceiling = parse_csv(text).expect("parses");
        assert_eq!(
            (ceiling.rate, ceiling.p50_ms, ceiling.p99_ms),
            (48123.45, 1.1, 2.3)
        );
        assert!(parse_csv("garbage").is_none());
    }
}
