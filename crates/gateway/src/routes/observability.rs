//! Observability role: read-only views of the services. Today their Prometheus metrics;
//! dashboards will join this router.

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
        .with_state(state)
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
