//! Observability role: read-only views of the services: their Prometheus metrics, and the
//! `facts` service's Service Health page with the two read-only API calls it makes, under
//! `/facts/` (so a browser reaches it through this gateway, never on the lake's own port).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::uri::PathAndQuery;
use serde::Deserialize;
use service_kit::ApiError;

use super::{ServiceLink, ServiceList, ServicesState};

pub fn router(state: Arc<ServicesState>) -> Router {
    Router::new()
        .route("/api/services", get(list_services))
        .route("/api/services/{service}/metrics", get(service_metrics))
        .route("/facts/dashboard", get(service_health))
        .route("/facts/assets/{file}", get(service_health))
        .route("/facts/api/v1/dashboard", get(service_health))
        .route("/facts/api/v1/services", get(service_health))
        .with_state(state)
}

/// Name of the lake in the gateway's service list (`--service facts=URL`).
const FACTS: &str = "facts";
/// Prefix of the lake's read-only views on this gateway.
const FACTS_PREFIX: &str = "/facts";

/// The `facts` service's Service Health page (`/facts/dashboard`), its script and style, and
/// the dashboard and service-list reads it makes, passed through with the query string. The
/// page derives its API base from its own path, so it works under this prefix unchanged.
#[utoipa::path(
    get,
    path = "/facts/dashboard",
    tag = "observability",
    responses(
        (status = 200, description = "The Service Health page (HTML); it calls `/facts/api/v1/dashboard` and `/facts/api/v1/services`, which pass through the same way", content_type = "text/html"),
        (status = 404, body = service_kit::error::ErrorBody, description = "No `facts` service behind this gateway"),
        (status = 405, body = service_kit::error::ErrorBody, description = "Only GET and HEAD are allowed"),
        (status = 502, body = service_kit::error::ErrorBody, description = "The lake is unreachable"),
    ),
)]
pub async fn service_health(State(state): State<Arc<ServicesState>>, req: Request) -> Response {
    let target = match state.service(FACTS) {
        Ok(target) => target,
        Err(err) => return err.into_response(),
    };
    let upstream = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .and_then(|pq| pq.strip_prefix(FACTS_PREFIX))
        .map(PathAndQuery::try_from);
    match upstream {
        Some(Ok(path_and_query)) => state.proxy.forward(target, req, path_and_query).await,
        _ => ApiError::bad_request("invalid_path", "not a path of the Service Health page").into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ServicePath {
    service: String,
}

/// Services whose metrics this gateway shows.
#[utoipa::path(get, path = "/api/services", tag = "observability", responses((status = 200, body = ServiceList)))]
pub async fn list_services(State(state): State<Arc<ServicesState>>) -> Json<ServiceList> {
    let services = state
        .services
        .keys()
        .map(|name| ServiceLink {
            name: name.clone(),
            config: None,
            metrics: Some(format!("/api/services/{name}/metrics")),
        })
        .collect();
    Json(ServiceList { services })
}

/// A service's Prometheus metrics in the text exposition format, passed through.
#[utoipa::path(
    get,
    path = "/api/services/{service}/metrics",
    tag = "observability",
    params(("service" = String, Path, description = "Service name, see `GET /api/services`")),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 404, body = service_kit::error::ErrorBody, description = "Unknown service"),
        (status = 405, body = service_kit::error::ErrorBody, description = "Only GET and HEAD are allowed"),
        (status = 502, body = service_kit::error::ErrorBody, description = "The service is unreachable"),
    ),
)]
pub async fn service_metrics(
    State(state): State<Arc<ServicesState>>,
    path: Result<Path<ServicePath>, PathRejection>,
    req: Request,
) -> Response {
    let Path(ServicePath { service }) = match path {
        Ok(path) => path,
        Err(rejection) => return ApiError::bad_request("invalid_path", rejection.body_text()).into_response(),
    };
    match state.service(&service) {
        Ok(target) => state.proxy.forward(target, req, PathAndQuery::from_static("/metrics")).await,
        Err(err) => err.into_response(),
    }
}
