//! The business routes (`/api/*`) and what their handlers share.

pub mod carts;
pub mod catalog;
pub mod orders;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use serde::Serialize;
use service_kit::body::DEFAULT_BODY_LIMIT;
use service_kit::config::Snapshot;
use service_kit::{ApiError, ConfigStore};

use crate::config::ShopConfig;
use crate::db::{Database, DbConn};
use crate::metrics::ShopMetrics;
use crate::pricing::PricingEngine;
use crate::workers::{self, WorkerGate};

/// Currency of every price (all amounts are integer cents).
pub const CURRENCY: &str = "EUR";

#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Arc<Database>,
    pub store: Arc<ConfigStore<ShopConfig>>,
    pub pricing: Arc<PricingEngine>,
    pub metrics: ShopMetrics,
}

impl AppState {
    pub fn config(&self) -> Arc<Snapshot<ShopConfig>> {
        self.store.current()
    }

    /// A connection under the current pool settings (503 when none comes in time).
    pub async fn conn(&self, config: &ShopConfig) -> Result<DbConn, ApiError> {
        self.db.acquire(&config.db).await
    }
}

/// `GET /api/ping` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pong {
    pub ok: bool,
}

/// Business routes with route faults inside the worker pool, so an injected delay occupies a
/// worker just as slow code would. `/api/ping` skips the pool: it does no work and measures
/// the proxy path alone.
pub fn router(state: AppState, gate: WorkerGate) -> Router {
    let store = state.store.clone();
    let pooled = Router::new()
        .route("/api/products", get(catalog::list_products))
        .route("/api/products/search", get(catalog::search_products))
        .route("/api/products/{id}", get(catalog::get_product))
        .route("/api/carts", post(carts::create_cart))
        .route("/api/carts/{cart_id}", get(carts::get_cart))
        .route("/api/carts/{cart_id}/items", post(carts::add_item))
        .route("/api/checkout", post(orders::checkout))
        .route("/api/orders/{id}", get(orders::get_order))
        .with_state(state)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(store.clone(), service_kit::faults::inject::<ShopConfig>))
        .layer(middleware::from_fn_with_state(gate, workers::limit));
    let ping = Router::new()
        .route("/api/ping", get(catalog::ping))
        .layer(middleware::from_fn_with_state(store, service_kit::faults::inject::<ShopConfig>));
    pooled.merge(ping)
}
