//! Orchestrator-specific Prometheus metrics, registered in the service's own registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use service_kit::Metrics;

/// Values of `orchestrator_runs_total{outcome}`.
pub const RUN_OUTCOMES: &[&str] = &["started", "resolved", "abandoned"];

#[derive(Debug, Clone)]
pub struct OrchestratorMetrics {
    /// Runs started, resolved and abandoned.
    pub runs: IntCounterVec,
    /// 1 while a run is active.
    pub active_run: IntGauge,
    pub ws_clients: IntGauge,
    /// WebSocket clients closed because they fell too far behind.
    pub ws_dropped: IntCounter,
}

impl OrchestratorMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let runs = IntCounterVec::new(
            Opts::new("orchestrator_runs_total", "Scenario runs by outcome: started, resolved, abandoned."),
            &["outcome"],
        )
        .expect("static metric definition");
        for outcome in RUN_OUTCOMES {
            runs.with_label_values(&[outcome]);
        }
        let active_run = IntGauge::new("orchestrator_active_run", "1 while a scenario run is active.")
            .expect("static metric definition");
        let ws_clients = IntGauge::new("orchestrator_websocket_clients", "Connected console WebSockets.")
            .expect("static metric definition");
        let ws_dropped = IntCounter::new(
            "orchestrator_websocket_dropped_total",
            "Console WebSockets closed because their queue of ordered messages overflowed.",
        )
        .expect("static metric definition");
        metrics.register(runs.clone());
        metrics.register(active_run.clone());
        metrics.register(ws_clients.clone());
        metrics.register(ws_dropped.clone());
        Self { runs, active_run, ws_clients, ws_dropped }
    }

    /// Metrics registered nowhere, for a hub built outside a service (tests).
    pub fn unregistered() -> Self {
        Self::new(&Metrics::new("orchestrator-unregistered"))
    }
}
