//! The upstream pool: a bound on upstream requests in flight across every worker thread, with
//! a bounded queue and a deadline for waiting, resized live when `/config` changes.
//!
//! One `tokio::sync::Semaphore` is shared by all worker runtimes (it is runtime-agnostic and
//! FIFO-fair). Shrinking below the slots in use cannot take permits back from requests, so the
//! shortfall is recorded as debt and paid by forgetting permits as they come back.
//!
//! Each worker thread takes slots through its own [`PoolHandle`]: a slot holds that thread's
//! `Arc`, and a slot found free at once is counted in a per-thread counter rather than in the
//! shared wait histogram, so the common path writes no cache line the other threads write.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::UpstreamConfig;

/// Buckets for pool waits: from "barely queued" to the largest sensible `timeout_ms`.
const WAIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_waiting` requests were already queued.
    QueueFull,
    /// No slot freed up before the request's deadline.
    Timeout,
}

pub struct UpstreamPool {
    semaphore: Semaphore,
    /// Logical capacity (`upstream.pool_size`).
    size: AtomicUsize,
    /// Permits to forget as they are released, because a shrink found them in use.
    debt: AtomicUsize,
    /// Requests queued for a slot now; bounded by `max_waiting`.
    waiting: AtomicUsize,
    max_waiting: AtomicUsize,
    timeout_ms: AtomicU64,
    /// Waits of requests that found no slot free at once.
    wait_seconds: Histogram,
    /// Per worker thread: requests that found a slot free at once (zero waits, added to
    /// `wait_seconds` when scraped).
    free_at_once: Mutex<Vec<Arc<AtomicU64>>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("size", &self.size.load(Ordering::Relaxed))
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// Creates the pool and registers its metrics into `metrics`.
    pub fn new(config: &UpstreamConfig, metrics: &service_kit::Metrics) -> anyhow::Result<Arc<Self>> {
        let wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_upstream_pool_wait_seconds",
                "Time each upstream request waited for a pool slot (0 when one was free), including waits that timed out.",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
        )?;
        let size = to_usize(config.pool_size);
        let pool = Arc::new(Self {
            semaphore: Semaphore::new(size),
            size: AtomicUsize::new(size),
            debt: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            max_waiting: AtomicUsize::new(to_usize(config.max_waiting)),
            timeout_ms: AtomicU64::new(config.timeout_ms),
            wait_seconds,
            free_at_once: Mutex::new(Vec::new()),
        });
        metrics.register(PoolGauges::new(pool.clone())?);
        Ok(pool)
    }

    /// The request budget in force now.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Applies a new configuration. Called by one task only, so resizes never interleave.
    pub fn apply(&self, config: &UpstreamConfig) {
        self.timeout_ms.store(config.timeout_ms, Ordering::Relaxed);
        self.max_waiting.store(to_usize(config.max_waiting), Ordering::Relaxed);
        let new = to_usize(config.pool_size);
        let old = self.size.swap(new, Ordering::AcqRel);
        if new > old {
            let grow = new - old;
            // Cancel outstanding debt first: those permits are still out and will now come back.
            let mut paid = 0;
            let _ = self.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                paid = debt.min(grow);
                Some(debt - paid)
            });
            self.semaphore.add_permits(grow - paid);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        if new != old {
            tracing::info!(from = old, to = new, "upstream pool resized");
        }
    }

    /// The wait histogram with the zero waits of every thread folded in.
    fn wait_family(&self) -> Vec<MetricFamily> {
        let zeros: u64 =
            self.free_at_once.lock().map(|c| c.iter().map(|n| n.load(Ordering::Relaxed)).sum()).unwrap_or(0);
        let mut families = self.wait_seconds.collect();
        for metric in families.iter_mut().flat_map(|family| family.mut_metric().iter_mut()) {
            let mut histogram = metric.get_histogram().clone();
            histogram.set_sample_count(histogram.get_sample_count() + zeros);
            let buckets = histogram
                .get_bucket()
                .iter()
                .map(|bucket| {
                    let mut bucket = bucket.clone();
                    bucket.set_cumulative_count(bucket.cumulative_count() + zeros);
                    bucket
                })
                .collect();
            histogram.set_bucket(buckets);
            metric.set_histogram(histogram);
        }
        families
    }

    fn in_use(&self) -> usize {
        (self.size.load(Ordering::Relaxed) + self.debt.load(Ordering::Relaxed))
            .saturating_sub(self.semaphore.available_permits())
    }
}

fn to_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A worker thread's access to the shared pool.
pub struct PoolHandle {
    pool: Arc<UpstreamPool>,
    /// This thread's count of slots found free at once; written by this thread only.
    free_at_once: Arc<AtomicU64>,
}

impl std::fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHandle").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl PoolHandle {
    /// A handle for the calling worker thread.
    pub fn new(pool: &Arc<UpstreamPool>) -> Arc<Self> {
        let free_at_once = Arc::new(AtomicU64::new(0));
        if let Ok(mut counters) = pool.free_at_once.lock() {
            counters.push(free_at_once.clone());
        }
        Arc::new(Self { pool: pool.clone(), free_at_once })
    }

    pub fn pool(&self) -> &UpstreamPool {
        &self.pool
    }

    /// Waits for a slot until `deadline`, unless too many requests are queued already.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Slot, Refusal> {
        let pool = &self.pool;
        if let Ok(permit) = pool.semaphore.try_acquire() {
            // The slot travels with the response body; the permit comes back in `Slot::drop`.
            permit.forget();
            // Single writer: a plain load and store, no locked instruction.
            self.free_at_once.store(self.free_at_once.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return Ok(Slot { handle: self.clone() });
        }
        // Boxed: only a request that queues pays for the waiting future's size.
        Box::pin(self.wait(deadline)).await
    }

    /// Queues for a slot until `deadline`, unless too many requests are queued already.
    async fn wait(self: &Arc<Self>, deadline: Instant) -> Result<Slot, Refusal> {
        let pool = &self.pool;
        let max_waiting = pool.max_waiting.load(Ordering::Relaxed);
        if pool.waiting.fetch_add(1, Ordering::AcqRel) >= max_waiting {
            pool.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::QueueFull);
        }
        // Decrements `waiting` even when the caller gives up (client gone, future dropped).
        let _queued = Queued(&pool.waiting);
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(deadline, pool.semaphore.acquire()).await;
        pool.wait_seconds.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(Slot { handle: self.clone() })
            }
            // The semaphore is never closed; treat it like a timeout rather than panic.
            Ok(Err(_)) | Err(_) => Err(Refusal::Timeout),
        }
    }
}

/// One pool slot; released (or forgotten, to pay shrink debt) when dropped.
pub struct Slot {
    handle: Arc<PoolHandle>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let pool = &self.handle.pool;
        let paid = pool.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| debt.checked_sub(1)).is_ok();
        if !paid {
            pool.semaphore.add_permits(1);
        }
    }
}

/// Pool gauges and the wait histogram, computed at scrape time, so the request path pays no
/// extra shared atomics.
struct PoolGauges {
    pool: Arc<UpstreamPool>,
    size: IntGauge,
    in_use: IntGauge,
    waiting: IntGauge,
}

impl PoolGauges {
    fn new(pool: Arc<UpstreamPool>) -> prometheus::Result<Self> {
        Ok(Self {
            pool,
            size: IntGauge::new("gateway_upstream_pool_size", "Configured upstream pool slots (upstream.pool_size).")?,
            in_use: IntGauge::new("gateway_upstream_pool_in_use", "Upstream pool slots held by requests now.")?,
            waiting: IntGauge::new("gateway_upstream_pool_waiting", "Requests queued for an upstream pool slot now.")?,
        })
    }
}

impl Collector for PoolGauges {
    fn desc(&self) -> Vec<&Desc> {
        [self.size.desc(), self.in_use.desc(), self.waiting.desc(), self.pool.wait_seconds.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.size.set(gauge(self.pool.size.load(Ordering::Relaxed)));
        self.in_use.set(gauge(self.pool.in_use()));
        self.waiting.set(gauge(self.pool.waiting.load(Ordering::Relaxed)));
        [self.size.collect(), self.in_use.collect(), self.waiting.collect(), self.pool.wait_family()].concat()
    }
}

/// How one proxied request ended, as counted in `gateway_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    PoolTimeout,
    QueueFull,
    UpstreamTimeout,
    UpstreamError,
}

/// Counters of one upstream, resolved once so the request path skips the label lookup.
#[derive(Clone)]
pub struct OutcomeCounters {
    ok: IntCounter,
    pool_timeout: IntCounter,
    queue_full: IntCounter,
    upstream_timeout: IntCounter,
    upstream_error: IntCounter,
}

impl OutcomeCounters {
    pub fn new(requests: &IntCounterVec, upstream: &str) -> Self {
        let counter = |outcome: &str| requests.with_label_values(&[upstream, outcome]);
        Self {
            ok: counter("ok"),
            pool_timeout: counter("pool_timeout"),
            queue_full: counter("queue_full"),
            upstream_timeout: counter("upstream_timeout"),
            upstream_error: counter("upstream_error"),
        }
    }

    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::PoolTimeout => &self.pool_timeout,
            Outcome::QueueFull => &self.queue_full,
            Outcome::UpstreamTimeout => &self.upstream_timeout,
            Outcome::UpstreamError => &self.upstream_error,
        }
        .inc();
    }
}

/// Declares and registers `gateway_upstream_requests_total{upstream,outcome}`.
pub fn requests_counter(metrics: &service_kit::Metrics) -> prometheus::Result<IntCounterVec> {
    let requests = IntCounterVec::new(
        Opts::new("gateway_upstream_requests_total", "Requests proxied to an upstream, by how they ended."),
        &["upstream", "outcome"],
    )?;
    metrics.register(requests.clone());
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: u32, max_waiting: u32) -> Arc<UpstreamPool> {
        let metrics = service_kit::Metrics::new("pool-test");
        let config = UpstreamConfig { pool_size: size, timeout_ms: 1000, max_waiting };
        UpstreamPool::new(&config, &metrics).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Tests take slots through one handle, as one worker thread would.
    trait Acquire {
        async fn acquire(&self, deadline: Instant) -> Result<Slot, Refusal>;
    }

    impl Acquire for Arc<UpstreamPool> {
        async fn acquire(&self, deadline: Instant) -> Result<Slot, Refusal> {
            PoolHandle::new(self).acquire(deadline).await
        }
    }

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn slots_found_free_at_once_count_as_zero_waits_of_every_thread() {
        let pool = pool(2, 10);
        let (first, second) = (PoolHandle::new(&pool), PoolHandle::new(&pool));
        let a = first.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        let _b = second.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        let waiter = tokio::spawn({
            let first = first.clone();
            async move { first.acquire(later(100)).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(a);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        let families = pool.wait_family();
        let histogram = families[0].get_metric()[0].get_histogram();
        assert_eq!(histogram.get_sample_count(), 3);
        assert_eq!(histogram.get_bucket()[0].cumulative_count(), 2, "two zero waits in the first bucket");
        assert!(histogram.get_sample_sum() > 0.004);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_past_the_deadline_is_a_timeout() {
        let pool = pool(1, 10);
        let _held = pool.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(pool.acquire(later(100)).await.err(), Some(Refusal::Timeout));
        assert_eq!(pool.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let pool = pool(1, 0);
        let _held = pool.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        let started = Instant::now();
        assert_eq!(pool.acquire(later(100)).await.err(), Some(Refusal::QueueFull));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_below_slots_in_use_pays_back_as_slots_return() {
        let pool = pool(3, 10);
        let a = pool.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        let b = pool.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        pool.apply(&UpstreamConfig { pool_size: 1, timeout_ms: 1000, max_waiting: 10 });
        assert_eq!(pool.in_use(), 2);
        drop(a);
        // One slot is still held, and the pool has only one: nothing free yet.
        assert_eq!(pool.acquire(later(10)).await.err(), Some(Refusal::Timeout));
        drop(b);
        let c = pool.acquire(later(10)).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(pool.acquire(later(10)).await.err(), Some(Refusal::Timeout));
        drop(c);
        pool.apply(&UpstreamConfig { pool_size: 2, timeout_ms: 1000, max_waiting: 10 });
        let _x = pool.acquire(later(10)).await.unwrap_or_else(|e| panic!("{e:?}"));
        let _y = pool.acquire(later(10)).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(pool.in_use(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn growing_while_in_debt_cancels_the_debt_first() {
        let pool = pool(2, 10);
        let a = pool.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        let b = pool.acquire(later(100)).await.unwrap_or_else(|e| panic!("{e:?}"));
        pool.apply(&UpstreamConfig { pool_size: 1, timeout_ms: 1000, max_waiting: 10 });
        pool.apply(&UpstreamConfig { pool_size: 2, timeout_ms: 1000, max_waiting: 10 });
        drop(a);
        drop(b);
        assert_eq!(pool.semaphore.available_permits(), 2);
        assert_eq!(pool.in_use(), 0);
    }
}
