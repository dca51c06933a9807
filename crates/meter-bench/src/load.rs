//! The closed-loop load generator: `concurrency` callers, each sending its
//! next request as soon as the previous one answered, over `connections`
//! HTTP/2 connections, with latencies in an HDR histogram.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::scenario::{Client, Effect, Scenario};

/// How long the measured part of a run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    /// Measure for this long.
    Duration(Duration),
    /// Measure until this many requests have answered.
    Requests(u64),
}

/// The shape of a load run.
#[derive(Clone, Copy, Debug)]
pub struct LoadShape {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Unmeasured time before measuring.
    pub warmup: Duration,
    /// The measured part.
    pub length: Length,
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Requests answered while measuring (errors included).
    pub requests: u64,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Latencies of answered requests, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Failed requests by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Deducts applied, warm-up included (for the end-state check).
    pub deducted: u64,
    /// Grants applied, warm-up included.
    pub granted: u64,
}

impl LoadResult {
    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Requests left to measure, with [`Length::Requests`].
    budget: AtomicU64,
    deducted: AtomicU64,
    granted: AtomicU64,
}

struct WorkerResult {
    requests: u64,
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `scenario` against the channels and measures it; `on_measure` is
/// called as measuring starts and as it stops (to sample CPU time).
pub async fn run(
    scenario: Scenario,
    channels: &[Channel],
    run_id: &str,
    shape: LoadShape,
    mut on_measure: impl FnMut(),
) -> LoadResult {
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        budget: AtomicU64::new(match shape.length {
            Length::Requests(n) => n,
            Length::Duration(_) => u64::MAX,
        }),
        deducted: AtomicU64::new(0),
        granted: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..shape.concurrency)
        .map(|worker| {
            let client = Client::new(channels[worker % channels.len()].clone());
            let (shared, run_id) = (Arc::clone(&shared), run_id.to_owned());
            tokio::spawn(work(scenario, client, run_id, worker, shared))
        })
        .collect();
    tokio::time::sleep(shape.warmup).await;
    on_measure();
    shared.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    match shape.length {
        Length::Duration(d) => {
            tokio::time::sleep(d).await;
            shared.stop.store(true, Ordering::SeqCst);
            on_measure();
        }
        Length::Requests(_) => {}
    }
    let mut result = LoadResult {
        requests: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
        errors: BTreeMap::new(),
        deducted: 0,
        granted: 0,
    };
    let mut finished_at = None;
    for worker in workers {
        let Ok(done) = worker.await else { continue };
        // The measured part ends when the first worker sees the stop.
        finished_at.get_or_insert_with(Instant::now);
        result.requests += done.requests;
        let _ = result.latency_us.add(&done.latency_us);
        for (code, n) in done.errors {
            *result.errors.entry(code).or_default() += n;
        }
    }
    if let Length::Requests(_) = shape.length {
        on_measure();
    }
    result.elapsed = match shape.length {
        Length::Duration(d) => d,
        Length::Requests(_) => finished_at.unwrap_or_else(Instant::now) - started,
    };
    result.deducted = shared.deducted.load(Ordering::SeqCst);
    result.granted = shared.granted.load(Ordering::SeqCst);
    result
}

async fn work(
    scenario: Scenario,
    mut client: Client,
    run_id: String,
    worker: usize,
    shared: Arc<Shared>,
) -> WorkerResult {
    let mut result = WorkerResult {
        requests: 0,
        latency_us: histogram(),
        errors: BTreeMap::new(),
    };
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let measuring = shared.measuring.load(Ordering::Relaxed);
        if measuring && shared.budget.fetch_sub(1, Ordering::Relaxed) == 0 {
            shared.budget.store(0, Ordering::Relaxed);
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let sent = Instant::now();
        let answer = scenario.call(&mut client, &run_id, worker, seq).await;
        let took = sent.elapsed();
        seq += 1;
        match answer {
            Ok(Effect::Deducted) => {
                shared.deducted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Effect::Granted) => {
                shared.granted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Effect::Nothing) => {}
            Err(ref status) if measuring => {
                *result
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
            Err(_) => {}
        }
        if measuring {
            result.requests += 1;
            let _ = result
                .latency_us
                .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
        }
    }
    result
}
