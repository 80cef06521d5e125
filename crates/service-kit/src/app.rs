//! Assembly every service repeats: the internal routes (`/healthz`, `/readyz`, `/metrics`,
//! `/config*`) and the observation layer around everything.

use std::sync::Arc;

use axum::http::{Method, Uri};
use axum::routing::get;
use axum::{Router, middleware};

use crate::error::ApiError;

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

/// JSON answers for a path no route serves (404) and a method the path does not take (405,
/// axum keeps its `Allow` header), so every error a client meets is `{"error": {code, message}}`,
/// never an empty body.
pub fn with_json_fallbacks(router: Router) -> Router {
    router.method_not_allowed_fallback(method_not_allowed).fallback(not_found)
}

/// The 404 of a path no route serves.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// The 405 of a method a path does not take.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
