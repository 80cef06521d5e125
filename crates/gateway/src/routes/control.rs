//! Control role: the services' `/config` and the orchestrator's scenario API behind the stack's
//! JWT. The caller's token travels on to the service, which verifies it again and decides what
//! the role may do.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::Uri;
use http::uri::PathAndQuery;
use serde::Deserialize;
use service_kit::ApiError;

use super::{ORCHESTRATOR, ServiceLink, ServiceList, ServicesState};

pub fn router(state: Arc<ServicesState>) -> Router {
    Router::new()
        .route("/api/services", get(list_services))
        .route(
            "/api/services/{service}/config",
            get(service_config).patch(service_config).put(service_config).delete(service_config),
        )
        // The sub-resources (`schema`, `history`) are read-only at every service.
        .route("/api/services/{service}/config/{*rest}", get(service_config_sub))
        .route("/api/services/{service}/metrics", get(service_metrics))
        .route("/api/scenarios", get(orchestrator))
        .route("/api/scenarios/{id}", get(orchestrator))
        .route("/api/runs", get(orchestrator).post(orchestrator))
        .route("/api/runs/current", get(orchestrator))
        .route("/api/runs/current/stop", post(orchestrator))
        .route("/api/runs/current/give-up", post(orchestrator))
        .route("/api/runs/{id}", get(orchestrator))
        .route("/api/reset", post(orchestrator))
        .route("/api/ws", get(orchestrator_ws))
        // The console (served by the orchestrator): public assets and the login route, which
        // is how a browser gets its cookie; see `is_console_path`.
        .route("/", get(orchestrator))
        .route("/console", get(orchestrator))
        .route("/console/", get(orchestrator))
        // Exactly the methods the orchestrator serves, so a 405's `Allow` is the truth.
        .route("/console/logout", post(orchestrator))
        .route("/console/{*rest}", get(orchestrator))
        .with_state(state)
}

/// The orchestrator's scenario API, forwarded unchanged (path, query, body, token).
pub async fn orchestrator(State(state): State<Arc<ServicesState>>, req: Request) -> Response {
    let target = match state.service(ORCHESTRATOR) {
        Ok(target) => target,
        Err(err) => return err.into_response(),
    };
    let Some(path) = req.uri().path_and_query().cloned() else {
        return ApiError::NotFound(format!("no route for {}", req.uri().path())).into_response();
    };
    state.proxy.forward(target, req, path).await
}

/// The orchestrator's WebSocket (`/api/ws`), tunnelled once the orchestrator accepts it.
pub async fn orchestrator_ws(State(state): State<Arc<ServicesState>>, req: Request) -> Response {
    let target = match state.service(ORCHESTRATOR) {
        Ok(target) => target,
        Err(err) => return err.into_response(),
    };
    let Some(path) = req.uri().path_and_query().cloned() else {
        return ApiError::NotFound(format!("no route for {}", req.uri().path())).into_response();
    };
    state.proxy.tunnel(target, req, path).await
}

#[derive(Debug, Deserialize)]
pub struct ServicePath {
    service: String,
}

/// Services whose runtime configuration this gateway fronts.
#[utoipa::path(get, path = "/api/services", tag = "control", security(("bearer" = [])), responses(
    (status = 200, body = ServiceList),
    (status = 401, body = service_kit::error::ErrorBody, description = "Missing, forged or expired token"),
))]
pub async fn list_services(State(state): State<Arc<ServicesState>>) -> Json<ServiceList> {
    let services = state
        .services
        .keys()
        .map(|name| ServiceLink {
            name: name.clone(),
            config: Some(format!("/api/services/{name}/config")),
            metrics: None,
        })
        .collect();
    Json(ServiceList { services })
}

/// A service's `/config` (read, merge-patch, replace, reset), forwarded with the caller's token.
/// Documented per method in `crate::openapi`.
pub async fn service_config(
    State(state): State<Arc<ServicesState>>,
    path: Result<Path<ServicePath>, PathRejection>,
    req: Request,
) -> Response {
    forward_config(&state, path, req).await
}

/// A service's own Prometheus metrics, for the console's Observability tab (the
/// observability gateway serves the same without a token on its own port).
#[utoipa::path(
    get,
    path = "/api/services/{service}/metrics",
    tag = "control",
    security(("bearer" = [])),
    params(("service" = String, Path, description = "Service name, see `GET /api/services`")),
    responses(
        (status = 200, description = "Prometheus text exposition, passed through", content_type = "text/plain"),
        (status = 401, body = service_kit::error::ErrorBody),
        (status = 404, body = service_kit::error::ErrorBody, description = "Unknown service"),
        (status = 502, body = service_kit::error::ErrorBody, description = "The service is unreachable"),
    ),
)]
pub async fn service_metrics(
    State(state): State<Arc<ServicesState>>,
    path: Result<Path<ServicePath>, PathRejection>,
    req: Request,
) -> Response {
    forward_config(&state, path, req).await
}

/// Paths of the console, served without a token: the assets hold no secrets, and the login
/// route is how a browser gets its cookie.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// Header the console sends with every state-changing request. A cross-site form cannot set
/// it, and a cross-site script cannot send it without a CORS preflight this gateway never
/// grants.
pub const CSRF_HEADER: &str = "x-observastack-csrf";

/// Cross-site request forgery guard for cookie-authenticated browsers. Requests with an
/// `Authorization` header (CLI, curl) carry no ambient credential and pass. A request that
/// relies on the cookie must, when it changes state, carry [`CSRF_HEADER`]; and any request
/// (the WebSocket handshake included) that says where it comes from (`Origin`) must come from
/// this gateway's own origin.
pub fn csrf_check(method: &http::Method, headers: &http::HeaderMap) -> Result<(), ApiError> {
    use http::header;
    if headers.contains_key(header::AUTHORIZATION) || service_kit::auth::token_from_headers(headers).is_none() {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if origin_host != Some(host) {
            return Err(ApiError::Forbidden {
                message: format!("cross-origin request refused: Origin `{origin}` is not this gateway (`{host}`)"),
                fields: vec![service_kit::FieldError::new("Origin", "same_origin", "must be this gateway's origin")],
            });
        }
    }
    let safe = matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
    if !safe && headers.get(CSRF_HEADER).is_none_or(|v| v.is_empty()) {
        return Err(ApiError::Forbidden {
            message: format!("a {method} authenticated by the console cookie must carry the `{CSRF_HEADER}` header"),
            fields: vec![service_kit::FieldError::new(CSRF_HEADER, "required", "set it to 1")],
        });
    }
    Ok(())
}

/// Sub-resources of a service's `/config`: `schema`, `history` (documented in `crate::openapi`).
pub async fn service_config_sub(
    State(state): State<Arc<ServicesState>>,
    path: Result<Path<ServicePath>, PathRejection>,
    req: Request,
) -> Response {
    forward_config(&state, path, req).await
}

async fn forward_config(
    state: &ServicesState,
    path: Result<Path<ServicePath>, PathRejection>,
    req: Request,
) -> Response {
    let Path(ServicePath { service }) = match path {
        Ok(path) => path,
        Err(rejection) => return ApiError::bad_request("invalid_path", rejection.body_text()).into_response(),
    };
    let target = match state.service(&service) {
        Ok(target) => target,
        Err(err) => return err.into_response(),
    };
    let Some(upstream_path) = config_path(req.uri()) else {
        return ApiError::NotFound(format!("no route for {}", req.uri().path())).into_response();
    };
    let mut req = req;
    mark_through_control_gateway(req.headers_mut());
    state.proxy.forward(target, req, upstream_path).await
}

/// Tells the service the request came through this gateway (its change history records it).
/// Hop-by-hop fields go first, so a client's `Connection: x-observastack-through` cannot strip
/// the mark again on the way; a client-sent value is overwritten.
fn mark_through_control_gateway(headers: &mut http::HeaderMap) {
    crate::proxy::strip_hop_by_hop(headers);
    headers.insert(
        service_kit::config::THROUGH_HEADER,
        http::HeaderValue::from_static(service_kit::config::THROUGH_CONTROL_GATEWAY),
    );
}

/// `/api/services/shop/config/history?limit=5` → `/config/history?limit=5`, keeping the raw
/// (still percent-encoded) path so nothing is decoded and re-encoded on the way.
fn config_path(uri: &Uri) -> Option<PathAndQuery> {
    let rest = uri.path().strip_prefix("/api/services/")?;
    let tail = &rest[rest.find('/')?..];
    let path = match uri.query() {
        Some(query) => format!("{tail}?{query}"),
        None => tail.to_owned(),
    };
    PathAndQuery::try_from(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_keeps_the_tail_and_query() {
        let uri: Uri = "/api/services/shop/config/history?limit=5".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config_path(&uri).map(|p| p.to_string()), Some("/config/history?limit=5".to_owned()));
        let uri: Uri = "/api/services/shop/config".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config_path(&uri).map(|p| p.to_string()), Some("/config".to_owned()));
        let uri: Uri = "/api/services/shop/metrics".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config_path(&uri).map(|p| p.to_string()), Some("/metrics".to_owned()));
    }

    #[test]
    fn the_through_mark_overwrites_a_client_sent_one_and_survives_connection_tricks() {
        let mut map = headers(&[
            ("x-observastack-through", "elsewhere"),
            ("connection", "x-observastack-through, x-other"),
            ("x-other", "1"),
        ]);
        mark_through_control_gateway(&mut map);
        let marks: Vec<&str> = map.get_all("x-observastack-through").iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(marks, ["control-gateway"]);
        assert!(!map.contains_key("connection") && !map.contains_key("x-other"));
        crate::proxy::strip_hop_by_hop(&mut map);
        assert!(map.contains_key("x-observastack-through"), "the proxy's own stripping keeps it");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")));
        }
        map
    }

    #[test]
    fn cookie_writes_need_the_csrf_header() {
        let cookie = ("cookie", "observastack_token=abc");
        let host = ("host", "127.0.0.1:8081");
        let refused = csrf_check(&http::Method::PATCH, &headers(&[cookie, host]));
        assert!(
            matches!(refused, Err(ApiError::Forbidden { ref message, .. }) if message.contains(CSRF_HEADER)),
            "{refused:?}"
        );
        assert!(csrf_check(&http::Method::PATCH, &headers(&[cookie, host, (CSRF_HEADER, "1")])).is_ok());
        assert!(csrf_check(&http::Method::GET, &headers(&[cookie, host])).is_ok());
    }

    #[test]
    fn cookie_requests_from_another_origin_are_refused() {
        let cookie = ("cookie", "observastack_token=abc");
        let host = ("host", "127.0.0.1:8081");
        let evil = ("origin", "http://evil.example");
        assert!(csrf_check(&http::Method::GET, &headers(&[cookie, host, evil])).is_err(), "WebSocket hijacking");
        assert!(csrf_check(&http::Method::POST, &headers(&[cookie, host, evil, (CSRF_HEADER, "1")])).is_err());
        let same = ("origin", "http://127.0.0.1:8081");
        assert!(csrf_check(&http::Method::POST, &headers(&[cookie, host, same, (CSRF_HEADER, "1")])).is_ok());
    }

    #[test]
    fn bearer_callers_and_anonymous_requests_pass() {
        let bearer = ("authorization", "Bearer abc");
        assert!(csrf_check(&http::Method::POST, &headers(&[bearer, ("origin", "http://evil.example")])).is_ok());
        assert!(csrf_check(&http::Method::POST, &headers(&[])).is_ok());
    }
}
