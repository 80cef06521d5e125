//! Shop-specific Prometheus metrics, declared once and registered in the service's own registry
//! (never the global one, so several shops can share a test process).

use prometheus::{CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use service_kit::Metrics;

/// Buckets for waits that are usually sub-millisecond but become seconds under saturation.
const WAIT_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Values of `shop_checkout_failures_total{reason}`.
pub const CHECKOUT_FAILURE_REASONS: &[&str] = &[
    "invalid_request",
    "cart_not_found",
    "empty_cart",
    "insufficient_stock",
    "idempotency_conflict",
    "not_found",
    "conflict",
    "unavailable",
    "internal",
];

#[derive(Debug, Clone)]
pub struct ShopMetrics {
    pub pricing_cpu_seconds: CounterVec,
    pub pricing_lines: IntCounterVec,
    pub worker_in_flight: IntGauge,
    pub worker_queued: IntGauge,
    pub worker_limit: IntGauge,
    pub worker_queued_total: IntCounter,
    pub worker_queue_wait: Histogram,
    pub worker_rejected: IntCounterVec,
    pub db_pool_size: IntGauge,
    pub db_pool_in_use: IntGauge,
    pub db_pool_waiting: IntGauge,
    pub db_acquire_duration: Histogram,
    pub db_acquire_timeouts: IntCounter,
    pub orders_created: IntCounter,
    pub checkout_failures: IntCounterVec,
    pub search_queries: IntCounterVec,
}

impl ShopMetrics {
    /// Declares the shop metrics and registers them in `registry`. Definitions are static, so
    /// an `expect` here can only fire on a programming error the first test would reveal.
    pub fn new(registry: &Metrics) -> Self {
        let m = Self {
            pricing_cpu_seconds: CounterVec::new(
                Opts::new("shop_pricing_cpu_seconds_total", "Thread CPU time spent computing prices, by algorithm."),
                &["algorithm"],
            )
            .expect("static metric definition"),
            pricing_lines: IntCounterVec::new(
                Opts::new("shop_pricing_lines_total", "Product lines priced, by algorithm."),
                &["algorithm"],
            )
            .expect("static metric definition"),
            worker_in_flight: IntGauge::new("shop_worker_pool_in_flight", "Business requests holding a worker.")
                .expect("static metric definition"),
            worker_queued: IntGauge::new("shop_worker_pool_queued", "Business requests waiting for a worker.")
                .expect("static metric definition"),
            worker_limit: IntGauge::new("shop_worker_pool_limit", "Workers available (workers.max_concurrent).")
                .expect("static metric definition"),
            worker_queued_total: IntCounter::new(
                "shop_worker_pool_queued_total",
                "Business requests that had to wait for a worker.",
            )
            .expect("static metric definition"),
            worker_queue_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "shop_worker_pool_queue_wait_seconds",
                    "Time business requests waited for a worker (admitted or not).",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
            )
            .expect("static metric definition"),
            worker_rejected: IntCounterVec::new(
                Opts::new(
                    "shop_worker_pool_rejected_total",
                    "Business requests refused by the worker pool with 503, by reason (queue_full, queue_timeout).",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
            db_pool_size: IntGauge::new("shop_db_pool_size", "Maximum connections of the live pool (db.pool_size).")
                .expect("static metric definition"),
            db_pool_in_use: IntGauge::new("shop_db_pool_in_use", "PostgreSQL connections checked out by requests.")
                .expect("static metric definition"),
            db_pool_waiting: IntGauge::new("shop_db_pool_waiting", "Tasks waiting to acquire a connection.")
                .expect("static metric definition"),
            db_acquire_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "shop_db_pool_acquire_duration_seconds",
                    "Time spent acquiring a pooled connection (successful or not).",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
            )
            .expect("static metric definition"),
            db_acquire_timeouts: IntCounter::new(
                "shop_db_pool_acquire_timeouts_total",
                "Connection acquires that gave up after db.acquire_timeout_ms.",
            )
            .expect("static metric definition"),
            orders_created: IntCounter::new("shop_orders_created_total", "Orders placed by checkout.")
                .expect("static metric definition"),
            checkout_failures: IntCounterVec::new(
                Opts::new("shop_checkout_failures_total", "Checkouts that did not place an order, by reason."),
                &["reason"],
            )
            .expect("static metric definition"),
            search_queries: IntCounterVec::new(
                Opts::new("shop_search_queries_total", "Product searches run, by search strategy."),
                &["strategy"],
            )
            .expect("static metric definition"),
        };
        registry.register(m.pricing_cpu_seconds.clone());
        registry.register(m.pricing_lines.clone());
        registry.register(m.worker_in_flight.clone());
        registry.register(m.worker_queued.clone());
        registry.register(m.worker_limit.clone());
        registry.register(m.worker_queued_total.clone());
        registry.register(m.worker_queue_wait.clone());
        registry.register(m.worker_rejected.clone());
        registry.register(m.db_pool_size.clone());
        registry.register(m.db_pool_in_use.clone());
        registry.register(m.db_pool_waiting.clone());
        registry.register(m.db_acquire_duration.clone());
        registry.register(m.db_acquire_timeouts.clone());
        registry.register(m.orders_created.clone());
        registry.register(m.checkout_failures.clone());
        registry.register(m.search_queries.clone());
        // Label values that exist from the start, so dashboards show zeros rather than gaps.
        for algorithm in ["efficient", "quadratic"] {
            m.pricing_cpu_seconds.with_label_values(&[algorithm]);
            m.pricing_lines.with_label_values(&[algorithm]);
        }
        for reason in ["queue_full", "queue_timeout"] {
            m.worker_rejected.with_label_values(&[reason]);
        }
        for reason in CHECKOUT_FAILURE_REASONS {
            m.checkout_failures.with_label_values(&[reason]);
        }
        for strategy in ["indexed", "full_scan"] {
            m.search_queries.with_label_values(&[strategy]);
        }
        m
    }
}
