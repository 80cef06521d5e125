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
        let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or_default();
        fault_for(snapshot.route_faults(), req.method(), route)
    };
    if let Some(fault) = fault
        && let Some(failed) = apply(&fault).await
    {
        return failed;
    }
    next.run(req).await
}

/// The fault configured for `method` on the route template `route`: its own entry, else the
/// `*` entry. Allocates nothing for keys of ordinary length.
pub fn fault_for(faults: &RouteFaults, method: &http::Method, route: &str) -> Option<RouteFault> {
    if faults.is_empty() {
        return None;
    }
    let (method, route) = (method.as_str().as_bytes(), route.as_bytes());
    let len = method.len() + 1 + route.len();
    let mut buf = [0u8; 128];
    let owned;
    let key = if len <= buf.len() {
        buf[..method.len()].copy_from_slice(method);
        buf[method.len()] = b' ';
        buf[method.len() + 1..len].copy_from_slice(route);
        std::str::from_utf8(&buf[..len]).unwrap_or_default()
    } else {
        owned = [method, b" ", route].concat();
        std::str::from_utf8(&owned).unwrap_or_default()
    };
    faults.get(key).or_else(|| faults.get(ALL_ROUTES)).cloned()
}

/// Applies `fault` to the request about to be handled: waits its latency, then answers for
/// the handler with a 500 at its error rate (`Some`), or lets the request through (`None`).
pub async fn apply(fault: &RouteFault) -> Option<Response> {
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(fault.latency_ms))).await;
    }
    if fault.error_rate > 0.0 && fastrand::f64() < fault.error_rate {
        tracing::warn!(fault = "error_rate", "request failed by an injected fault");
        return Some(ApiError::Internal(anyhow::anyhow!("injected fault")).into_response());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_entry_wins_over_the_wildcard() {
        let slow = RouteFault { latency_ms: 5, error_rate: 0.0 };
        let failing = RouteFault { latency_ms: 0, error_rate: 1.0 };
        let mut faults = RouteFaults::new();
        faults.insert("POST /api/checkout".to_owned(), slow.clone());
        assert_eq!(fault_for(&faults, &http::Method::POST, "/api/checkout"), Some(slow.clone()));
        assert_eq!(fault_for(&faults, &http::Method::GET, "/api/checkout"), None);
        faults.insert(ALL_ROUTES.to_owned(), failing.clone());
        assert_eq!(fault_for(&faults, &http::Method::GET, "/api/checkout"), Some(failing.clone()));
        let long = format!("/{}", "x".repeat(200));
        faults.insert(format!("GET {long}"), slow.clone());
        assert_eq!(fault_for(&faults, &http::Method::GET, &long), Some(slow));
        assert_eq!(fault_for(&RouteFaults::new(), &http::Method::GET, "/"), None);
    }
}
