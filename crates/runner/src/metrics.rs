//! The runner's Prometheus metrics, declared once and resolved per journey up front so the
//! aggregator's hot path does no label lookups.

use std::sync::Arc;

use prometheus::{Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};
use scenario::sli::Journey;
use service_kit::Metrics;

use crate::record::{Outcome, Record};

const JOURNEYS: usize = Journey::ALL.len();

struct PerJourney {
    ok: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
    duration: Histogram,
}

#[derive(Clone)]
pub struct RunnerMetrics {
    per: Arc<[PerJourney; JOURNEYS]>,
    failures: IntCounterVec,
    orders: IntCounter,
    /// Journeys per second the plan asks for now.
    pub offered_rate: Gauge,
    /// Journeys started and not yet finished.
    pub in_flight: IntGauge,
}

impl std::fmt::Debug for RunnerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerMetrics").finish_non_exhaustive()
    }
}

impl RunnerMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let journeys = IntCounterVec::new(
            Opts::new("runner_journeys_total", "Journeys finished, by journey and outcome (ok | failed)."),
            &["journey", "outcome"],
        )
        .expect("static metric definition");
        let dropped = IntCounterVec::new(
            Opts::new(
                "runner_dropped_journeys_total",
                "Planned journeys not started because the in-flight cap was reached (client-side).",
            ),
            &["journey"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "runner_journey_duration_seconds",
                "Journey latency as users see it: each step from its planned send time (coordinated omission \
                 corrected), think time excluded.",
            )
            .buckets(service_kit::metrics::LATENCY_BUCKETS.to_vec()),
            &["journey"],
        )
        .expect("static metric definition");
        let failures = IntCounterVec::new(
            Opts::new("runner_journey_failures_total", "Failed journeys by journey and reason."),
            &["journey", "reason"],
        )
        .expect("static metric definition");
        let orders = IntCounter::new("runner_orders_total", "Orders placed by checkout journeys.")
            .expect("static metric definition");
        let offered_rate = Gauge::new("runner_offered_rate", "Journeys per second the load plan offers now.")
            .expect("static metric definition");
        let in_flight = IntGauge::new("runner_in_flight_journeys", "Journeys started and not yet finished.")
            .expect("static metric definition");
        let per = Journey::ALL.map(|j| PerJourney {
            ok: journeys.with_label_values(&[j.as_str(), "ok"]),
            failed: journeys.with_label_values(&[j.as_str(), "failed"]),
            dropped: dropped.with_label_values(&[j.as_str()]),
            duration: duration.with_label_values(&[j.as_str()]),
        });
        metrics.register(journeys);
        metrics.register(dropped);
        metrics.register(duration);
        metrics.register(failures.clone());
        metrics.register(orders.clone());
        metrics.register(offered_rate.clone());
        metrics.register(in_flight.clone());
        Self { per: Arc::new(per), failures, orders, offered_rate, in_flight }
    }

    pub fn observe(&self, r: &Record) {
        let Some(per) = Journey::ALL.iter().position(|j| *j == r.journey).and_then(|i| self.per.get(i)) else {
            return;
        };
        match r.outcome {
            Outcome::Dropped => per.dropped.inc(),
            Outcome::Ok => per.ok.inc(),
            Outcome::Failed(f) => {
                per.failed.inc();
                self.failures.with_label_values(&[r.journey.as_str(), f.reason()]).inc();
            }
        }
        if r.outcome != Outcome::Dropped {
            per.duration.observe(r.latency_us as f64 / 1e6);
            self.orders.inc_by(u64::from(r.orders));
        }
    }
}
