//! The bounded worker pool in front of the business routes: at most `workers.max_concurrent`
//! requests run at once, at most `workers.queue_limit` wait (first come, first served), and none
//! waits longer than `workers.queue_timeout_ms`. A full queue or a wait past the timeout is a
//! 503 with `Retry-After`. The limit can change live: raising it admits waiters at once,
//! lowering it lets in-flight requests finish and admits no one until they drop below it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::{ApiError, ConfigStore};
use tokio::sync::oneshot;
use tracing::Instrument as _;

use crate::config::{ShopConfig, WorkersConfig};
use crate::metrics::ShopMetrics;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    QueueFull,
    QueueTimeout,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
        }
    }
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// Admission state. Invariant: `in_flight` counts granted permits, including grants sent to
/// waiters that have not woken up yet; every grant is matched by exactly one release.
struct Inner {
    limit: usize,
    in_flight: usize,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

pub struct WorkerPool {
    inner: Mutex<Inner>,
    metrics: ShopMetrics,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerPool")
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl WorkerPool {
    pub fn new(limit: u32, metrics: ShopMetrics) -> Arc<Self> {
        metrics.worker_limit.set(i64::from(limit));
        Arc::new(Self {
            inner: Mutex::new(Inner { limit: to_usize(limit), in_flight: 0, queue: VecDeque::new(), next_id: 0 }),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Critical sections only move counters and queue entries; a poisoned lock holds
        // consistent data, so keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a new `max_concurrent`; idempotent.
    pub fn set_limit(&self, limit: u32) {
        let mut inner = self.lock();
        let limit = to_usize(limit);
        if inner.limit == limit {
            return;
        }
        tracing::info!(old_limit = inner.limit, new_limit = limit, "worker pool resized");
        inner.limit = limit;
        self.metrics.worker_limit.set(to_i64(limit));
        self.dispatch(&mut inner);
    }

    /// Waits for a worker under `config`'s queue rules.
    pub async fn admit(self: &Arc<Self>, config: &WorkersConfig) -> Result<WorkerPermit, Rejection> {
        self.set_limit(config.max_concurrent);
        let (id, rx) = {
            let mut inner = self.lock();
            if inner.in_flight < inner.limit && inner.queue.is_empty() {
                inner.in_flight += 1;
                self.publish(&inner);
                return Ok(WorkerPermit { pool: self.clone() });
            }
            if inner.queue.len() >= to_usize(config.queue_limit) {
                self.metrics.worker_rejected.with_label_values(&[Rejection::QueueFull.as_str()]).inc();
                return Err(Rejection::QueueFull);
            }
            let id = inner.next_id;
            inner.next_id = inner.next_id.wrapping_add(1);
            let (grant, rx) = oneshot::channel();
            inner.queue.push_back(Waiter { id, grant });
            self.metrics.worker_queued_total.inc();
            self.publish(&inner);
            (id, rx)
        };
        let started = Instant::now();
        let mut waiting = Waiting { pool: self.clone(), id, rx, armed: true };
        let timeout = Duration::from_millis(u64::from(config.queue_timeout_ms));
        // A span only for requests that wait, so traces show where queueing time went.
        let outcome = tokio::time::timeout(timeout, &mut waiting.rx)
            .instrument(tracing::info_span!("worker_pool.queue", workers.limit = config.max_concurrent))
            .await;
        self.metrics.worker_queue_wait.observe(started.elapsed().as_secs_f64());
        waiting.armed = false;
        match outcome {
            Ok(Ok(())) => Ok(WorkerPermit { pool: self.clone() }),
            // Timed out (the sender cannot vanish while the pool lives, but treat it alike).
            _ => {
                if self.cancel(id) {
                    self.metrics.worker_rejected.with_label_values(&[Rejection::QueueTimeout.as_str()]).inc();
                    Err(Rejection::QueueTimeout)
                } else {
                    // Granted in the instant the wait ran out: the slot is ours, use it.
                    Ok(WorkerPermit { pool: self.clone() })
                }
            }
        }
    }

    /// Removes waiter `id` from the queue; `false` means it was already granted a slot.
    fn cancel(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let Some(pos) = inner.queue.iter().position(|w| w.id == id) else {
            return false;
        };
        inner.queue.remove(pos);
        self.publish(&inner);
        true
    }

    fn release(&self) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        self.dispatch(&mut inner);
    }

    /// Hands free slots to waiters in arrival order.
    fn dispatch(&self, inner: &mut Inner) {
        while inner.in_flight < inner.limit {
            let Some(waiter) = inner.queue.pop_front() else { break };
            // A waiter whose receiver is gone removes itself under this lock before dropping
            // it, so a failed send only happens for requests already accounted for.
            if waiter.grant.send(()).is_ok() {
                inner.in_flight += 1;
            }
        }
        self.publish(inner);
    }

    fn publish(&self, inner: &Inner) {
        self.metrics.worker_in_flight.set(to_i64(inner.in_flight));
        self.metrics.worker_queued.set(to_i64(inner.queue.len()));
    }
}

/// A queued request. If the request is dropped while waiting (client went away), it leaves
/// the queue, or gives back the slot it was granted in the meantime.
struct Waiting {
    pool: Arc<WorkerPool>,
    id: u64,
    /// Dropped only after `Drop::drop` ran, so a grant sent before the cancel is never lost.
    rx: oneshot::Receiver<()>,
    armed: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.armed && !self.pool.cancel(self.id) {
            self.pool.release();
        }
    }
}

/// A running request's worker; released on drop.
pub struct WorkerPermit {
    pool: Arc<WorkerPool>,
}

impl std::fmt::Debug for WorkerPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerPermit")
    }
}

impl Drop for WorkerPermit {
    fn drop(&mut self) {
        self.pool.release();
    }
}

/// State of the [`limit`] middleware.
#[derive(Debug, Clone)]
pub struct WorkerGate {
    pub pool: Arc<WorkerPool>,
    pub store: Arc<ConfigStore<ShopConfig>>,
}

/// Middleware: runs the request on a worker, or answers 503 + `Retry-After`.
pub async fn limit(State(gate): State<WorkerGate>, req: Request, next: Next) -> Response {
    let config = gate.store.current().workers.clone();
    match gate.pool.admit(&config).await {
        Ok(permit) => {
            let response = next.run(req).await;
            drop(permit);
            response
        }
        Err(rejection) => {
            let message = match rejection {
                Rejection::QueueFull => {
                    format!("all {} workers are busy and the queue is full; retry later", config.max_concurrent)
                }
                Rejection::QueueTimeout => {
                    format!("no worker became free within {} ms; retry later", config.queue_timeout_ms)
                }
            };
            tracing::warn!(reason = rejection.as_str(), "request refused by the worker pool");
            ApiError::Unavailable { message, retry_after_secs: 1 }.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limit: u32) -> Arc<WorkerPool> {
        let registry = service_kit::Metrics::new("shop-test");
        WorkerPool::new(limit, ShopMetrics::new(&registry))
    }

    fn config(max_concurrent: u32, queue_limit: u32, queue_timeout_ms: u32) -> WorkersConfig {
        WorkersConfig { max_concurrent, queue_limit, queue_timeout_ms }
    }

    #[tokio::test]
    async fn full_queue_is_refused_at_once() {
        let pool = pool(1);
        let cfg = config(1, 0, 1000);
        let _held = pool.admit(&cfg).await.unwrap();
        assert_eq!(pool.admit(&cfg).await.unwrap_err(), Rejection::QueueFull);
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_times_out_and_leaves_the_queue() {
        let pool = pool(1);
        let cfg = config(1, 5, 100);
        let _held = pool.admit(&cfg).await.unwrap();
        assert_eq!(pool.admit(&cfg).await.unwrap_err(), Rejection::QueueTimeout);
        assert_eq!(pool.lock().queue.len(), 0);
        assert_eq!(pool.metrics.worker_rejected.with_label_values(&["queue_timeout"]).get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn released_slot_goes_to_the_first_waiter() {
        let pool = pool(1);
        let cfg = config(1, 5, 10_000);
        let held = pool.admit(&cfg).await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            let cfg = cfg.clone();
            async move { pool.admit(&cfg).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(pool.metrics.worker_queued.get(), 1);
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(pool.lock().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_limit_admits_waiters_and_dropped_waiters_leave() {
        let pool = pool(1);
        let _held = pool.admit(&config(1, 5, 10_000)).await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit(&config(1, 5, 10_000)).await.map(drop) }
        });
        let abandoned = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit(&config(1, 5, 10_000)).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(pool.lock().queue.len(), 2);
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(pool.lock().queue.len(), 1);
        pool.set_limit(2);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(pool.lock().in_flight, 1);
    }
}
