//! Assembly every service repeats: the internal routes (`/healthz`, `/readyz`, `/metrics`,
//! `/config*`) and the observation layer around everything.

use std::sync::Arc;

use axum::routing::get;
use axum::{Router, middleware};

use crate::auth::JwtKeys;
use crate::config::{self, ConfigStore, RuntimeConfig};
use crate::metrics::{self, Metrics};
use crate::server::{ReadinessCheck, health_router};

/// Health, readiness, metrics and the `/config` API of one service.
pub fn internal_routes<T: RuntimeConfig>(
    metrics: Arc<Metrics>,
    store: Arc<ConfigStore<T>>,
    keys: Arc<JwtKeys>,
    ready: ReadinessCheck,
) -> Router {
    Router::new()
        .merge(health_router(store.service(), ready))
        .route("/metrics", get(metrics::metrics_handler).with_state(metrics))
        .merge(config::router(store, keys))
}

/// Wraps every route of `router` (and its fallback) in the request span and the HTTP duration
/// histogram. Apply last, so it sees the final matched route.
pub fn observed(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(middleware::from_fn_with_state(metrics, metrics::observe))
}
