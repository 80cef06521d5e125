//! The scenario runner: offers open-loop load of user journeys (browse, search, product, cart,
//! checkout) through the user gateway, on a plan changed live through `/config`, and reports
//! what users experience (success ratio, latency percentiles, orders per minute) per journey
//! and window at `GET /slis` and as Prometheus metrics.
//!
//! `main.rs` parses flags; [`Application::build`] binds and starts the (idle) load engine;
//! [`Application::run_until`] follows `/config` and serves until told to stop. Tests run the
//! same code in-process on port 0. The CLI's `observastack load` drives [`load::Engine`]
//! directly.

pub mod client;
pub mod config;
pub mod journey;
pub mod load;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod routes;
pub mod stats;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use service_kit::app::{internal_routes, observed};
use service_kit::{ApiError, ConfigStore, JwtKeys, Metrics};
use tokio::net::TcpListener;

use crate::client::Endpoint;
pub use crate::config::RunnerConfig;
use crate::load::{Engine, EngineOptions, Plan};
use crate::metrics::RunnerMetrics;
use crate::stats::Stats;

/// Service name in metrics, logs and `/config`.
pub const SERVICE: &str = "runner";

/// Default internal listener (DESIGN §6).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8103);
/// Default target: the user gateway's public listener.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8080";
/// Default log filter.
pub const DEFAULT_LOG: &str = "info";
/// Keep-alive connections to the target in all, by default.
pub const DEFAULT_CONNECTIONS: usize = 256;
/// Journeys in flight at most, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

/// Everything the runner needs to start. `main.rs` fills it from flags and env; tests build it
/// directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Internal listener (`/slis`, `/config`, `/metrics`, health); port 0 picks a free one.
    pub listen: SocketAddr,
    /// Base URL journeys go to: the user gateway.
    pub target: String,
    /// The stack's public keys, which verify `/config` tokens (the runner mints none).
    pub jwt_keys: JwtKeys,
    /// Load worker threads, each with its own runtime and connections.
    pub threads: usize,
    /// Keep-alive connections to the target in all.
    pub connections: usize,
    /// Journeys in flight at most; planned journeys beyond are dropped and counted.
    pub max_in_flight: usize,
    /// Runtime configuration at revision 1.
    pub initial_config: RunnerConfig,
    /// How long journeys in flight may finish after shutdown was asked for.
    pub drain: Duration,
}

impl Default for Settings {
    /// The binary's defaults, without public keys (building fails until they are set).
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            target: DEFAULT_TARGET.to_owned(),
            jwt_keys: JwtKeys::default(),
            threads: default_threads(),
            connections: DEFAULT_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            initial_config: RunnerConfig::default(),
            drain: Duration::from_secs(5),
        }
    }
}

/// One load thread per CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// A built runner: bound, engine started and idle until `/config` enables it.
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    store: Arc<ConfigStore<RunnerConfig>>,
    metrics: Arc<Metrics>,
    runner_metrics: RunnerMetrics,
    engine: Arc<Engine>,
    stats: Arc<Stats>,
    drain: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener first (so a port clash fails fast and tests learn the real port),
    /// then starts the load engine's threads, idle until a plan is enabled. Must run inside a
    /// tokio runtime.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = settings.jwt_keys.require_some()?.clone();
        let target = Endpoint::parse(&settings.target).map_err(|e| anyhow::anyhow!("--target: {e}"))?;
        let listener = service_kit::server::bind(settings.listen).await?;
        let port = listener.local_addr()?.port();

        let metrics = Metrics::new(SERVICE);
        let runner_metrics = RunnerMetrics::new(&metrics);
        let store = ConfigStore::new(SERVICE, settings.initial_config.clone(), metrics.clone())
            .map_err(|err| anyhow::anyhow!("the initial runner configuration is invalid: {}", describe(&err)))?;
        let stats = Stats::new(Some(runner_metrics.clone()));
        let engine = Arc::new(Engine::start(
            EngineOptions {
                target,
                single_request: false,
                threads: settings.threads,
                connections: settings.connections,
                max_in_flight: settings.max_in_flight,
                request_timeout: Duration::from_millis(store.current().request_timeout_ms),
            },
            stats.clone(),
        )?);
        let state = routes::SliState { stats: stats.clone(), engine: engine.clone(), store: store.clone() };
        let app = routes::router(state).merge(internal_routes(
            metrics.clone(),
            store.clone(),
            Arc::new(keys),
            service_kit::server::always_ready(),
        ));
        let router = observed(service_kit::app::with_json_fallbacks(app), metrics.clone());
        Ok(Self { listener, port, router, store, metrics, runner_metrics, engine, stats, drain: settings.drain })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The live runtime configuration (also served at `/config`).
    pub fn config_store(&self) -> Arc<ConfigStore<RunnerConfig>> {
        self.store.clone()
    }

    /// The service's metrics registry (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The aggregated journeys (also served at `/slis`).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Follows `/config` and serves until `shutdown` resolves; then stops offering load and
    /// lets journeys in flight finish until the drain deadline.
    pub async fn run_until<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let follower = tokio::spawn(follow_config(self.store.clone(), self.engine.clone()));
        let gauges = tokio::spawn(update_gauges(self.engine.clone(), self.runner_metrics.clone()));
        let served = service_kit::server::serve(self.listener, self.router, shutdown, self.drain).await;
        follower.abort();
        gauges.abort();
        self.engine.shutdown(self.drain).await;
        served.context("the runner server failed")
    }
}

/// What the engine should be doing under `config`.
fn plan_of(config: &RunnerConfig) -> Option<Plan> {
    config.enabled.then(|| Plan { load: config.load.clone(), duration: None, concurrency: None })
}

/// Applies each accepted `/config` change: a new plan (or none) when `enabled` or `load`
/// changed, the request timeout at once.
async fn follow_config(store: Arc<ConfigStore<RunnerConfig>>, engine: Arc<Engine>) {
    let mut changes = store.subscribe();
    let mut applied: Option<Option<Plan>> = None;
    loop {
        let snapshot = changes.borrow_and_update().clone();
        engine.set_request_timeout(Duration::from_millis(snapshot.request_timeout_ms));
        let plan = plan_of(&snapshot);
        if applied.as_ref() != Some(&plan) {
            match &plan {
                Some(p) => tracing::info!(
                    pattern = ?p.load.pattern,
                    rate = p.load.rate,
                    revision = snapshot.revision,
                    "load plan started"
                ),
                None if applied.is_some() => tracing::info!(revision = snapshot.revision, "load stopped"),
                None => {}
            }
            engine.set_plan(plan.clone());
            applied = Some(plan);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn update_gauges(engine: Arc<Engine>, metrics: RunnerMetrics) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        metrics.offered_rate.set(engine.offered_rate());
        metrics.in_flight.set(i64::try_from(engine.in_flight()).unwrap_or(i64::MAX));
    }
}

fn describe(err: &ApiError) -> String {
    match err {
        ApiError::Validation(fields) => {
            fields.iter().map(|f| format!("{} ({}): {}", f.field, f.rule, f.message)).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "ObservaStack runner", description = "User-side SLIs of the load the runner generates."),
    paths(routes::slis),
    components(schemas(
        scenario::sli::SliSnapshot,
        scenario::sli::JourneySlis,
        scenario::sli::Journey,
        service_kit::error::ErrorBody,
        service_kit::error::ErrorDetail,
        service_kit::FieldError,
    )),
    tags((name = "runner", description = "Read by the orchestrator and consoles; load is steered through `/config`")),
)]
struct RunnerApi;

/// OpenAPI description of the runner's own routes. `/config`, `/healthz`, `/readyz` and
/// `/metrics` are documented centrally by service-kit.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <RunnerApi as utoipa::OpenApi>::openapi()
}
