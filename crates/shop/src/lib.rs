//! The shop: ObservaStack's business service (catalog, cart, checkout, orders) on PostgreSQL,
//! with the runtime knobs the scenarios turn (pricing algorithm, worker pool, database pool,
//! search strategy, release) behind `/config`.
//!
//! `main.rs` parses settings and starts telemetry; [`Application::build`] binds, connects,
//! migrates, seeds and assembles the router; [`Application::run_until`] serves until told to
//! stop. Tests run the same code in-process on port 0.

pub mod db;
pub mod metrics;
pub mod params;
pub mod pricing;
pub mod routes;
pub mod seed;
pub mod workers;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use service_kit::app::{internal_routes, observed};
use service_kit::server::ReadinessCheck;
use service_kit::{ApiError, ConfigStore, JwtKeys, Metrics, Secret};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use utoipa::OpenApi as _;

use crate::db::Database;
use crate::metrics::ShopMetrics;
use crate::pricing::{PriceBook, PricingEngine};
use crate::routes::AppState;
use crate::workers::{WorkerGate, WorkerPool};
/// The shop's `/config` types and routes, kept in `stack-config` so the orchestrator can check
/// scenarios against them without depending on the shop.
pub use stack_config::shop as config;
pub use stack_config::shop::{ROUTES, ShopConfig};

/// Service name in metrics, logs, traces and `/config`.
pub const SERVICE: &str = "shop";

/// Default listener (DESIGN §6).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8101);
/// Default PostgreSQL URL: the stack's database.
pub const DEFAULT_DATABASE_URL: &str = service_kit::startup::DEFAULT_DATABASE_URL;
/// Default log filter.
pub const DEFAULT_LOG: &str = "info,sqlx=warn";
/// Products seeded into an empty catalog by default.
pub const DEFAULT_SEED_PRODUCTS: u32 = 10_000;
/// Past orders seeded into an empty order history by default.
pub const DEFAULT_SEED_ORDERS: u32 = 100_000;

/// Everything the shop needs to start. `main.rs` fills it from flags and env; tests build it
/// directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one (see [`Application::port`]).
    pub listen: SocketAddr,
    /// PostgreSQL URL, e.g. `postgres://postgres@127.0.0.1:5432/observastack`.
    pub database_url: Secret<String>,
    /// The stack's public keys, which verify `/config` tokens (the shop mints none).
    pub jwt_keys: JwtKeys,
    /// Products seeded into an empty catalog.
    pub seed_products: u32,
    /// Past orders seeded into an empty order history.
    pub seed_orders: u32,
    /// Runtime configuration at revision 1.
    pub initial_config: ShopConfig,
    /// How long start-up keeps retrying a database that refuses connections.
    pub connect_timeout: Duration,
    /// How long in-flight requests may run on after shutdown was asked for.
    pub drain: Duration,
}

impl Default for Settings {
    /// The binary's defaults, without public keys (building fails until they are set).
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            database_url: Secret::new(DEFAULT_DATABASE_URL.to_owned()),
            jwt_keys: JwtKeys::default(),
            seed_products: DEFAULT_SEED_PRODUCTS,
            seed_orders: DEFAULT_SEED_ORDERS,
            initial_config: ShopConfig::default(),
            connect_timeout: Duration::from_secs(30),
            drain: service_kit::server::DEFAULT_DRAIN,
        }
    }
}

/// A built shop, bound and connected, ready to serve.
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    db: Arc<Database>,
    store: Arc<ConfigStore<ShopConfig>>,
    metrics: Arc<Metrics>,
    watcher: JoinHandle<()>,
    drain: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).field("db", &self.db).finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener first (so a port clash fails fast and tests learn the real port),
    /// then connects to PostgreSQL, migrates, seeds an empty database and loads the price book.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = settings.jwt_keys.require_some()?.clone();
        let listener = service_kit::server::bind(settings.listen).await?;
        let port = listener.local_addr()?.port();

        let metrics = Metrics::new(SERVICE);
        let shop_metrics = ShopMetrics::new(&metrics);
        let store = ConfigStore::new(SERVICE, settings.initial_config.clone(), metrics.clone())
            .map_err(|err| anyhow::anyhow!("the initial shop configuration is invalid: {}", describe(&err)))?;
        let initial = store.current();

        let db = Arc::new(
            Database::connect(
                settings.database_url.expose(),
                &initial.db,
                settings.connect_timeout,
                shop_metrics.clone(),
            )
            .await?,
        );
        let book = {
            let mut conn = db.acquire(&initial.db).await.map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            let report = seed::seed_if_empty(&mut conn, settings.seed_products, settings.seed_orders)
                .await
                .with_context(|| format!("cannot seed {}", db.target()))?;
            if report != seed::SeedReport::default() {
                tracing::info!(
                    products = report.products,
                    orders = report.orders,
                    order_items = report.order_items,
                    "seeded the shop database"
                );
            }
            PriceBook::load(&mut conn)
                .await
                .with_context(|| format!("cannot load the price book from {}", db.target()))?
        };
        tracing::info!(products = book.len(), categories = book.categories().count(), "price book loaded");
        let pricing = Arc::new(PricingEngine::new(book, shop_metrics.clone()));
        let workers = WorkerPool::new(initial.workers.max_concurrent, shop_metrics.clone());

        let state = AppState { db: db.clone(), store: store.clone(), pricing, metrics: shop_metrics };
        let gate = WorkerGate { pool: workers.clone(), store: store.clone() };
        let ready: ReadinessCheck = {
            let db = db.clone();
            Arc::new(move || {
                let db = db.clone();
                Box::pin(async move { db.ready().await })
            })
        };
        let app =
            routes::router(state, gate).merge(internal_routes(metrics.clone(), store.clone(), Arc::new(keys), ready));
        let router = observed(service_kit::app::with_json_fallbacks(app), metrics.clone());
        let watcher = spawn_config_watcher(store.clone(), db.clone(), workers);
        Ok(Self { listener, port, router, db, store, metrics, watcher, drain: settings.drain })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The live runtime configuration (also served at `/config`).
    pub fn config_store(&self) -> Arc<ConfigStore<ShopConfig>> {
        self.store.clone()
    }

    /// The service's metrics registry (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, drains in-flight requests, then closes the pool.
    pub async fn run_until<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let served = service_kit::server::serve(self.listener, self.router, shutdown, self.drain).await;
        self.watcher.abort();
        self.db.close().await;
        served.context("the shop server failed")
    }
}

/// Applies pool sizes as soon as a config change is published (requests also apply them
/// lazily, so the first request after a change never runs on stale sizes).
fn spawn_config_watcher(
    store: Arc<ConfigStore<ShopConfig>>,
    db: Arc<Database>,
    workers: Arc<WorkerPool>,
) -> JoinHandle<()> {
    let mut changes = store.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let snapshot = changes.borrow_and_update().clone();
            db.sync(&snapshot.db);
            workers.set_limit(snapshot.workers.max_concurrent);
        }
    })
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
    info(title = "ObservaStack shop", description = "Business API of the shop: catalog, carts, checkout, orders."),
    paths(
        routes::catalog::ping,
        routes::catalog::list_products,
        routes::catalog::search_products,
        routes::catalog::get_product,
        routes::carts::create_cart,
        routes::carts::get_cart,
        routes::carts::add_item,
        routes::orders::checkout,
        routes::orders::get_order,
    ),
    components(schemas(service_kit::error::ErrorBody, service_kit::error::ErrorDetail, service_kit::FieldError)),
    tags((name = "shop", description = "Business routes, reached through the user gateway")),
)]
struct ShopApi;

/// OpenAPI description of the business routes. The shared internal routes (`/healthz`,
/// `/readyz`, `/metrics`, `/config*`) are documented centrally by service-kit.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ShopApi::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_print_without_the_database_password() {
        let settings =
            Settings { database_url: "postgres://shop:hunter2@db:5432/shop".to_owned().into(), ..Settings::default() };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2") && printed.contains("(redacted)"), "{printed}");
    }
}
