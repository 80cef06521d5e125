//! The scenario orchestrator: the catalog of scenarios from `scenarios/` (and any extra
//! folders), the run lifecycle behind the control gateway, runs and their timelines in
//! PostgreSQL, fault patches through the services' `/config`, hints and success evaluated on
//! the runner's SLIs, and a WebSocket hub for consoles.
//!
//! `main.rs` parses settings and starts telemetry; [`Application::build`] binds, connects,
//! migrates and loads the catalog; [`Application::run_until`] resumes any active run and serves
//! until told to stop. Tests run the same code in-process on port 0.

pub mod api;
pub mod catalog;
pub mod config;
pub mod console;
pub mod grading;
pub mod hub;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod run_loop;
pub mod services;
pub mod store;
pub mod ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use service_kit::app::observed;
use service_kit::server::{ReadinessCheck, health_router};
use service_kit::{JwtKeys, JwtSigner, Metrics, Secret};
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::OpenApi as _;

pub use crate::hub::Hub;
pub use crate::lifecycle::Orchestrator;
pub use crate::model::WsMessage;
use crate::services::Services;

/// Service name in metrics, logs and traces.
pub const SERVICE: &str = "orchestrator";

/// Default listener (DESIGN §6).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8102);
/// Default PostgreSQL URL: the stack's database.
pub const DEFAULT_DATABASE_URL: &str = service_kit::startup::DEFAULT_DATABASE_URL;
/// Default log filter.
pub const DEFAULT_LOG: &str = "info,sqlx=warn";
/// The scenario folder read by default.
pub const DEFAULT_SCENARIOS_DIR: &str = "scenarios";
/// Default evaluation period of the active run, in milliseconds.
pub const DEFAULT_TICK_MS: u64 = 1000;
/// The binary's console assets by default (`npm run build` in `console/`); tests serve none.
pub const DEFAULT_CONSOLE_DIR: &str = "console/dist";
/// Where each service listens by default (DESIGN §6): the shop, the user gateway's admin
/// listener (its `/config`), the runner.
pub const DEFAULT_SERVICES: [(&str, &str); 3] =
    [("shop", "http://127.0.0.1:8101"), ("gateway", "http://127.0.0.1:8111"), ("runner", "http://127.0.0.1:8103")];

/// [`DEFAULT_SERVICES`] as `Settings::services` holds them.
pub fn default_services() -> BTreeMap<String, String> {
    DEFAULT_SERVICES.into_iter().map(|(name, url)| (name.to_owned(), url.to_owned())).collect()
}

/// Everything the orchestrator needs to start. `main.rs` fills it from flags and env; tests
/// build it directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one (see [`Application::port`]).
    pub listen: SocketAddr,
    /// PostgreSQL URL; the orchestrator keeps its tables in the `orchestrator` schema.
    pub database_url: Secret<String>,
    /// The stack's public keys: verify callers' tokens and the console's login codes.
    pub jwt_keys: JwtKeys,
    /// The stack's private key: signs the orchestrator's own instructor tokens and console
    /// sessions. Its public half must be among `jwt_keys`.
    pub jwt_signer: Option<Arc<JwtSigner>>,
    /// Folders of scenario files, read in order (the first of two equal ids wins).
    pub scenario_dirs: Vec<PathBuf>,
    /// Service name → base URL. `runner` is required for SLIs and load.
    pub services: BTreeMap<String, String>,
    /// Evaluation period of the active run.
    pub tick: Duration,
    /// Ordered messages a WebSocket client may lag behind before it is closed.
    pub ws_queue: usize,
    /// Timeout of one call to a service.
    pub service_timeout: Duration,
    /// How long start-up keeps retrying a database that refuses connections.
    pub connect_timeout: Duration,
    /// How long in-flight requests may run on after shutdown was asked for.
    pub drain: Duration,
    /// The web console: built assets and the optional tools it links to.
    pub console: console::ConsoleSettings,
}

impl Default for Settings {
    /// The binary's defaults, without keys (building fails until they are set).
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            database_url: Secret::new(DEFAULT_DATABASE_URL.to_owned()),
            jwt_keys: JwtKeys::default(),
            jwt_signer: None,
            scenario_dirs: vec![PathBuf::from(DEFAULT_SCENARIOS_DIR)],
            services: default_services(),
            tick: Duration::from_millis(DEFAULT_TICK_MS),
            ws_queue: hub::DEFAULT_QUEUE,
            service_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(30),
            drain: service_kit::server::DEFAULT_DRAIN,
            console: console::ConsoleSettings::default(),
        }
    }
}

/// A built orchestrator, bound and connected, ready to serve.
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    orchestrator: Arc<Orchestrator>,
    shutdown: watch::Sender<bool>,
    drain: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Binds first (a port clash fails fast and tests learn the real port), then loads the
    /// catalog, connects to PostgreSQL and migrates the `orchestrator` schema.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (keys, signer) = checked_keys(&settings)?;
        anyhow::ensure!(
            settings.services.contains_key(services::RUNNER),
            "no `{}` service given: the orchestrator needs the runner for load and SLIs",
            services::RUNNER
        );
        let listener = service_kit::server::bind(settings.listen).await?;
        let port = listener.local_addr()?.port();

        let catalog = catalog::Catalog::load(&settings.scenario_dirs)?;
        let db = store::connect(settings.database_url.expose(), settings.connect_timeout).await?;
        let metrics = Metrics::new(SERVICE);
        let own_metrics = metrics::OrchestratorMetrics::new(&metrics);
        let hub = Hub::new(settings.ws_queue, own_metrics.clone());
        let services = Services::new(settings.services.clone(), signer.clone(), settings.service_timeout)?;
        let config = service_kit::ConfigStore::new(SERVICE, config::OrchestratorConfig::default(), metrics.clone())
            .map_err(|e| anyhow::anyhow!("the orchestrator's default config is invalid: {e}"))?;
        let shared = Arc::new(run_loop::Shared {
            db: db.clone(),
            hub,
            services,
            tick: settings.tick,
            metrics: own_metrics,
            config: config.subscribe(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let orchestrator = Arc::new(Orchestrator::new(shared, catalog, shutdown_rx));

        let console = console::router(settings.console.clone(), keys.clone(), signer, db.clone());
        let ready: ReadinessCheck = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { store::ready(&db).await })
        });
        let app = api::router(orchestrator.clone(), keys.clone())
            .merge(console)
            .merge(service_kit::config::router(config, keys))
            .merge(health_router(SERVICE, ready))
            .route("/metrics", get(service_kit::metrics::metrics_handler).with_state(metrics.clone()));
        let router = observed(service_kit::app::with_json_fallbacks(app), metrics);
        Ok(Self { listener, port, router, orchestrator, shutdown, drain: settings.drain })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The WebSocket hub (tests publish through it to exercise slow clients).
    pub fn hub(&self) -> Arc<Hub> {
        self.orchestrator.shared.hub.clone()
    }

    /// Resumes the active run left in the database (if any), then serves until `shutdown`
    /// resolves. The active run stays active in the database for the next orchestrator.
    pub async fn run_until<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Flipped when shutdown begins, so the run engine and the WebSocket clients let go at
        // once (consoles get a close frame instead of waiting out the drain). Dropped with
        // this future too, which stops them just the same (see `run_loop::spawn`).
        let stopping = self.shutdown;
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(true);
        };
        self.orchestrator.resume().await.context("cannot resume the active run")?;
        let served = service_kit::server::serve(self.listener, self.router, shutdown, self.drain).await;
        self.orchestrator.wait_stopped().await;
        self.orchestrator.shared.db.close().await;
        served.context("the orchestrator server failed")
    }
}

/// The verification keys and the private key, refused unless the private key's public half is
/// a current key of the set: the tokens it mints would be refused everywhere otherwise.
fn checked_keys(settings: &Settings) -> anyhow::Result<(Arc<JwtKeys>, Arc<JwtSigner>)> {
    let signer = settings.jwt_signer.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "no private key: the orchestrator mints tokens ({} is not set)",
            service_kit::auth::ENV_JWT_PRIVATE_KEY
        )
    })?;
    let own = settings.jwt_keys.keys().iter().find(|k| k.kid() == signer.kid());
    match own {
        None => anyhow::bail!(
            "the private key (kid {}) is not among the public keys ({}); tokens it mints would be refused",
            signer.kid(),
            service_kit::auth::ENV_JWT_PUBLIC_KEYS
        ),
        Some(key) if key.not_after().is_some() => anyhow::bail!(
            "the private key (kid {}) is a retired public key (`# not-after:`); sign with the current key",
            signer.kid()
        ),
        Some(_) => Ok((Arc::new(settings.jwt_keys.clone()), signer)),
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ObservaStack orchestrator",
        description = "Scenario catalog, run lifecycle and history, the console's WebSocket feed, and the \
                       console's pages. Reached through the control gateway; every `/api` route needs the \
                       stack's JWT, the console's pages do not."
    ),
    paths(
        api::list_scenarios,
        api::get_scenario,
        api::start_run,
        api::list_runs,
        api::current_run,
        api::get_run,
        api::stop_run,
        api::give_up,
        api::reset,
        api::websocket,
        console::openapi::root,
        console::openapi::console,
        console::openapi::index,
        console::openapi::login,
        console::openapi::logout,
        console::openapi::settings,
        console::openapi::asset,
    ),
    components(schemas(
        service_kit::error::ErrorBody,
        service_kit::error::ErrorDetail,
        service_kit::FieldError,
        model::RunState,
        model::RunSummary,
        model::RunDetail,
        model::TimelineEntry,
        model::Entry,
        model::Milestone,
        model::MilestoneName,
        model::ConfigChange,
        model::ChangeSource,
        model::ChangeAction,
        model::Outcome,
        model::Verdict,
        model::LearnerChange,
        model::FieldDelta,
        model::Hint,
        model::HintTrigger,
        model::Completed,
        model::WsMessage,
        model::StateMessage,
        model::HintMessage,
        model::EventMessage,
        model::SlisMessage,
        lifecycle::ResetReport,
        lifecycle::ServiceFailure,
        console::openapi::PublicSettings,
        console::openapi::Dashboard,
    )),
    tags(
        (name = "orchestrator", description = "Scenarios and runs, through the control gateway"),
        (name = "console", description = "The web console's pages (docs/console.md)"),
    ),
)]
struct OrchestratorApi;

/// OpenAPI description of the orchestrator's API. `/healthz`, `/readyz` and `/metrics` are
/// documented centrally by service-kit.
pub fn openapi() -> utoipa::openapi::OpenApi {
    OrchestratorApi::openapi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_print_without_the_database_password() {
        let settings = super::Settings {
            database_url: "postgres://orchestrator:hunter2@db:5432/observastack".to_owned().into(),
            ..super::Settings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2") && printed.contains("(redacted)"), "{printed}");
    }

    #[test]
    fn openapi_describes_every_api_route() {
        let doc = super::openapi();
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        for path in [
            "/api/scenarios",
            "/api/scenarios/{id}",
            "/api/runs",
            "/api/runs/current",
            "/api/runs/current/stop",
            "/api/runs/{id}",
            "/api/reset",
            "/api/ws",
        ] {
            assert!(paths.contains(&path), "{path} is missing from {paths:?}");
        }
        let json = doc.to_json().unwrap_or_default();
        assert!(json.contains("\"StartRun\""), "the start body is described");
        let schemas = doc.components.map(|c| c.schemas).unwrap_or_default();
        for schema in ["WsMessage", "RunDetail", "TimelineEntry", "Completed", "StartRun"] {
            assert!(schemas.contains_key(schema), "{schema} is missing");
        }
    }
}
