//! Generic per-route faults (`faults.<METHOD> <route>.latency_ms` / `.error_rate`) that any
//! service can carry in its runtime config. Only the instructor role may set them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigStore, RuntimeConfig};
use crate::error::{ApiError, FieldError};

/// Key that applies a fault to every route of the service.
pub const ALL_ROUTES: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouteFault {
    /// Extra latency added before the handler runs, in milliseconds.
    #[schemars(range(min = 0, max = 30000))]
    pub latency_ms: u32,
    /// Share of requests answered with a 500 instead of running the handler.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_rate: f64,
}

/// Faults keyed by `"<METHOD> <route template>"` (e.g. `"POST /api/checkout"`) or `"*"`.
pub type RouteFaults = BTreeMap<String, RouteFault>;

/// A config type that carries route faults.
pub trait HasRouteFaults {
    fn route_faults(&self) -> &RouteFaults;
}

/// Rejects fault keys that name no route of the service, so a typo cannot silently do nothing.
pub fn check_route_keys(faults: &RouteFaults, known_routes: &[&str]) -> Vec<FieldError> {
    faults
        .keys()
        .filter(|key| key.as_str() != ALL_ROUTES && !known_routes.contains(&key.as_str()))
        .map(|key| {
            FieldError::new(
                format!("faults.{key}"),
                "known_route",
                format!("`{key}` is not a route of this service; use `*` or one of: {}", known_routes.join(", ")),
            )
        })
        .collect()
}

/// Middleware applying the current route faults; add with `Router::layer` so the matched
/// route is known.
pub async fn inject<T: RuntimeConfig + HasRouteFaults>(
    State(store): State<Arc<ConfigStore<T>>>,
    req: Request,
    next: Next,
) -> Response {
    let fault = {
        let snapshot = store.current();
        let faults = snapshot.route_faults();
        if faults.is_empty() {
            None
        } else {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or_default();
            let key = format!("{} {route}", req.method());
            faults.get(&key).or_else(|| faults.get(ALL_ROUTES)).cloned()
        }
    };
    if let Some(fault) = fault {
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(fault.latency_ms))).await;
        }
        if fault.error_rate > 0.0 && fastrand::f64() < fault.error_rate {
            tracing::warn!(fault = "error_rate", "request failed by an injected fault");
            return ApiError::Internal(anyhow::anyhow!("injected fault")).into_response();
        }
    }
    next.run(req).await
}
