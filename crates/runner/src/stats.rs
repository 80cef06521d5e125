//! One record per journey, aggregated into HDR histograms: a ring of per-second histograms per
//! journey (merged on demand for the trailing SLI window) and whole-run totals (for the CLI
//! summary). Latencies are microseconds from each step's planned send time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use hdrhistogram::Histogram;
use scenario::sli::{Journey, JourneySlis, SliSnapshot};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::MAX_WINDOW_SECS;
use crate::metrics::RunnerMetrics;
use crate::record::{Failure, Outcome, Record};

/// Highest latency a histogram tells apart; longer ones are recorded as this (a request
/// timeout is at most 120 s, a journey has a handful of steps).
const MAX_LATENCY_US: u64 = 1_000_000_000;

/// Counts fit in 32 bits (4·10⁹ journeys per second and journey); half the memory of `u64`
/// matters for a ring of up to 301 seconds × 6 journeys.
type Hist = Histogram<u32>;

fn index(journey: Journey) -> usize {
    Journey::ALL.iter().position(|j| *j == journey).unwrap_or(0)
}

const JOURNEYS: usize = Journey::ALL.len();

fn histogram(sigfig: u8) -> Hist {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig).expect("static histogram bounds")
}

#[derive(Clone, Default)]
struct Acc {
    /// Allocated on first use: most journeys are absent from most seconds.
    hist: Option<Hist>,
    completed: u64,
    failed: u64,
    orders: u64,
}

impl Acc {
    fn add(&mut self, r: &Record, sigfig: u8) {
        self.completed += 1;
        if matches!(r.outcome, Outcome::Failed(_)) {
            self.failed += 1;
        }
        self.orders += u64::from(r.orders);
        self.hist.get_or_insert_with(|| histogram(sigfig)).saturating_record(r.latency_us.max(1));
    }

    fn merge(&mut self, other: &Acc, sigfig: u8) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.orders += other.orders;
        if let Some(h) = &other.hist {
            let _ = self.hist.get_or_insert_with(|| histogram(sigfig)).add(h);
        }
    }

    fn clear(&mut self) {
        self.completed = 0;
        self.failed = 0;
        self.orders = 0;
        if let Some(h) = &mut self.hist {
            h.reset();
        }
    }

    fn slis(&self, span_secs: f64) -> JourneySlis {
        let q = |q: f64| self.hist.as_ref().map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0);
        JourneySlis {
            completed: self.completed,
            failed: self.failed,
            success_ratio: if self.completed == 0 {
                1.0
            } else {
                (self.completed - self.failed) as f64 / self.completed as f64
            },
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            rps: self.completed as f64 / span_secs,
            orders_per_minute: self.orders as f64 * 60.0 / span_secs,
        }
    }
}

/// SLI percentiles need two significant digits (1 %); the window ring stays small with them.
const WINDOW_SIGFIG: u8 = 2;
/// Whole-run figures are compared with other load generators: three digits (0.1 %).
const TOTAL_SIGFIG: u8 = 3;

struct Slot {
    second: u64,
    journeys: [Acc; JOURNEYS],
}

/// Whole-run figures of one journey.
#[derive(Clone, Default)]
struct Total {
    acc: Acc,
    requests: u64,
    dropped: u64,
    failures: BTreeMap<Failure, u64>,
}

struct Inner {
    ring: Vec<Slot>,
    totals: [Total; JOURNEYS],
    totals_since: Instant,
}

/// The aggregated view of every record so far, shared by the aggregator (writer), `/slis`,
/// `/metrics` and the CLI (readers).
pub struct Stats {
    origin: Instant,
    inner: Mutex<Inner>,
    metrics: Option<RunnerMetrics>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl Stats {
    pub fn new(metrics: Option<RunnerMetrics>) -> Arc<Self> {
        let now = Instant::now();
        let ring = (0..=MAX_WINDOW_SECS)
            .map(|_| Slot { second: u64::MAX, journeys: std::array::from_fn(|_| Acc::default()) })
            .collect();
        Arc::new(Self {
            origin: now,
            inner: Mutex::new(Inner { ring, totals: std::array::from_fn(|_| Total::default()), totals_since: now }),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn second_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    /// Folds a batch of records in.
    pub fn record(&self, batch: &[Record]) {
        let mut inner = self.lock();
        let ring_len = inner.ring.len() as u64;
        for r in batch {
            let j = index(r.journey);
            if let Some(m) = &self.metrics {
                m.observe(r);
            }
            let total = &mut inner.totals[j];
            if r.outcome == Outcome::Dropped {
                total.dropped += 1;
                continue;
            }
            total.acc.add(r, TOTAL_SIGFIG);
            total.requests += u64::from(r.requests);
            if let Outcome::Failed(f) = r.outcome {
                *total.failures.entry(f).or_default() += 1;
            }
            let second = self.second_of(r.finished);
            let slot = &mut inner.ring[(second % ring_len) as usize];
            if slot.second != second {
                if slot.second != u64::MAX && slot.second > second {
                    // Older than anything the ring still holds: outside every window.
                    continue;
                }
                slot.second = second;
                slot.journeys.iter_mut().for_each(Acc::clear);
            }
            slot.journeys[j].add(r, WINDOW_SIGFIG);
        }
    }

    /// SLIs over the trailing `window_secs` (the current second counts as far as it went).
    pub fn snapshot(&self, window_secs: u32, offered_rps: f64, running: bool) -> SliSnapshot {
        let window = window_secs.clamp(1, MAX_WINDOW_SECS);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.origin);
        let now_second = elapsed.as_secs();
        let first = now_second.saturating_sub(u64::from(window) - 1);
        let span = (elapsed.as_secs_f64() - first as f64).clamp(1e-3, f64::from(window));
        let mut per: [Acc; JOURNEYS] = std::array::from_fn(|_| Acc::default());
        {
            let inner = self.lock();
            for slot in
                inner.ring.iter().filter(|s| s.second != u64::MAX && s.second >= first && s.second <= now_second)
            {
                for (acc, from) in per.iter_mut().zip(&slot.journeys) {
                    acc.merge(from, WINDOW_SIGFIG);
                }
            }
        }
        let mut all = Acc::default();
        let mut journeys = BTreeMap::new();
        for (journey, acc) in Journey::ALL.into_iter().zip(&per) {
            if acc.completed > 0 {
                all.merge(acc, WINDOW_SIGFIG);
                journeys.insert(journey, acc.slis(span));
            }
        }
        SliSnapshot {
            at: Utc::now(),
            window_secs: f64::from(window),
            offered_rps,
            running,
            all: all.slis(span),
            journeys,
        }
    }

    /// Forgets the whole-run totals (not the SLI window): a new run starts counting.
    pub fn reset_totals(&self) {
        let mut inner = self.lock();
        inner.totals = std::array::from_fn(|_| Total::default());
        inner.totals_since = Instant::now();
    }

    /// Whole-run figures since the last [`Stats::reset_totals`], rates over `duration`.
    pub fn summary(&self, duration: Duration) -> Summary {
        let inner = self.lock();
        let secs = duration.as_secs_f64().max(1e-3);
        let mut all = Total::default();
        let mut journeys = BTreeMap::new();
        for (journey, total) in Journey::ALL.into_iter().zip(&inner.totals) {
            if total.acc.completed == 0 && total.dropped == 0 {
                continue;
            }
            all.acc.merge(&total.acc, TOTAL_SIGFIG);
            all.requests += total.requests;
            all.dropped += total.dropped;
            for (f, n) in &total.failures {
                *all.failures.entry(*f).or_default() += n;
            }
            journeys.insert(journey, JourneySummary::of(total, secs));
        }
        Summary { duration_s: secs, all: JourneySummary::of(&all, secs), journeys }
    }
}

/// Whole-run figures of one journey (or all), for the CLI's table and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneySummary {
    pub completed: u64,
    pub failed: u64,
    pub dropped: u64,
    pub requests: u64,
    pub success_ratio: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub rps: f64,
    pub orders_per_minute: f64,
    /// Failures by cause, e.g. `status 503`, `timeout`.
    pub failures: BTreeMap<String, u64>,
}

impl JourneySummary {
    fn of(total: &Total, secs: f64) -> Self {
        let acc = &total.acc;
        let h = acc.hist.as_ref();
        let q = |q: f64| h.map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0);
        Self {
            completed: acc.completed,
            failed: acc.failed,
            dropped: total.dropped,
            requests: total.requests,
            success_ratio: if acc.completed == 0 {
                1.0
            } else {
                (acc.completed - acc.failed) as f64 / acc.completed as f64
            },
            mean_ms: h.map_or(0.0, |h| h.mean() / 1000.0),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.map_or(0.0, |h| h.max() as f64 / 1000.0),
            rps: acc.completed as f64 / secs,
            orders_per_minute: acc.orders as f64 * 60.0 / secs,
            failures: total.failures.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub all: JourneySummary,
    pub journeys: BTreeMap<Journey, JourneySummary>,
}

/// Drains worker batches into `stats` until every sender is gone.
pub async fn aggregate(stats: Arc<Stats>, mut rx: mpsc::UnboundedReceiver<Vec<Record>>) {
    while let Some(batch) = rx.recv().await {
        stats.record(&batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(journey: Journey, outcome: Outcome, latency_ms: u64, orders: u32) -> Record {
        Record { journey, outcome, finished: Instant::now(), latency_us: latency_ms * 1000, requests: 1, orders }
    }

    #[test]
    fn snapshots_count_success_percentiles_and_orders() {
        let stats = Stats::new(None);
        let mut batch: Vec<Record> = (1..=100).map(|ms| rec(Journey::Browse, Outcome::Ok, ms, 0)).collect();
        batch.push(rec(Journey::Checkout, Outcome::Ok, 50, 1));
        batch.push(rec(Journey::Checkout, Outcome::Failed(Failure::Status(500)), 50, 0));
        batch.push(rec(Journey::Ping, Outcome::Dropped, 0, 0));
        stats.record(&batch);
        let snap = stats.snapshot(10, 5.0, true);
        let browse = &snap.journeys[&Journey::Browse];
        assert_eq!((browse.completed, browse.failed, browse.success_ratio), (100, 0, 1.0));
        assert!((browse.p50_ms - 50.0).abs() <= 1.0, "{}", browse.p50_ms);
        assert!((browse.p99_ms - 99.0).abs() <= 1.0, "{}", browse.p99_ms);
        let checkout = &snap.journeys[&Journey::Checkout];
        assert_eq!((checkout.completed, checkout.failed, checkout.success_ratio), (2, 1, 0.5));
        assert!(checkout.orders_per_minute > 0.0);
        assert!(!snap.journeys.contains_key(&Journey::Ping), "a dropped journey never completed");
        assert_eq!(snap.all.completed, 102);
        assert_eq!((snap.offered_rps, snap.running), (5.0, true));

        let summary = stats.summary(Duration::from_secs(1));
        assert_eq!(summary.journeys[&Journey::Ping].dropped, 1);
        assert_eq!(summary.all.failures["status 500"], 1);
        assert_eq!(summary.all.completed, 102);
        assert!((summary.journeys[&Journey::Browse].max_ms - 100.0).abs() < 0.1);
    }

    #[test]
    fn an_empty_window_reads_as_fully_successful_with_no_traffic() {
        let snap = Stats::new(None).snapshot(10, 0.0, false);
        assert_eq!(snap.all.completed, 0);
        assert_eq!(snap.all.success_ratio, 1.0);
        assert!(snap.journeys.is_empty());
    }
}
