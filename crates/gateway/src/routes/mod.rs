//! Public routers of the three roles, and what they share: the route lists (the single source
//! for routing, fault keys and OpenAPI), `/healthz`, and JSON 404/405 answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::IntCounterVec;
use serde::Serialize;
use service_kit::faults::RouteFault;
use service_kit::{ApiError, JwtKeys, Metrics};

use crate::pool::{OutcomeCounters, UpstreamPool};
use crate::proxy::{Proxy, Target, error_response};
use crate::settings::{GatewayRole, ServiceTarget, UpstreamUrl};

pub mod control;
pub mod observability;
pub mod user;

pub use stack_config::gateway::{
    CONSOLE_ROUTES, CONTROL_ROUTES, OBSERVABILITY_ROUTES, ORCHESTRATOR_ROUTES, USER_ROUTES,
};

/// The service the orchestrator routes go to (`--service orchestrator=URL`).
pub const ORCHESTRATOR: &str = "orchestrator";

/// Wraps the business routes in the live fault middleware; erases the role's config type.
pub type FaultLayer = Arc<dyn Fn(Router) -> Router + Send + Sync>;

/// The fault in force for a method on a route template, if any; reads the live config only
/// while a fault is configured.
pub type FaultLookup = Arc<dyn Fn(&Method, &str) -> Option<RouteFault> + Send + Sync>;

/// The live faults of a gateway, in the two forms its public listeners use.
#[derive(Clone)]
pub struct Faults {
    /// For the roles routed by axum.
    pub layer: FaultLayer,
    /// For the user role, routed by hand.
    pub lookup: FaultLookup,
}

/// What a worker thread serves on its public listener.
pub enum Front {
    /// The user role: routed, observed and forwarded without an axum router per request.
    User(Arc<user::UserFront>),
    Router(Router),
}

/// What every worker thread needs to build its public router; built once per gateway.
pub struct RouteDeps {
    pub role: GatewayRole,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<JwtKeys>,
    pub pool: Arc<UpstreamPool>,
    pub requests: IntCounterVec,
    pub shop_url: UpstreamUrl,
    pub services: Vec<ServiceTarget>,
    pub body_limit: usize,
    pub faults: Faults,
}

impl RouteDeps {
    /// What one worker thread serves publicly. Call it on that thread: the upstream
    /// connections it opens are tasks of the calling runtime.
    pub fn public_front(&self) -> anyhow::Result<Front> {
        let proxy = Proxy::new(&self.pool, self.body_limit);
        let router = match self.role {
            GatewayRole::User => {
                let shop = self.target("shop", &self.shop_url);
                let front = user::UserFront::new(proxy, shop, self.metrics.clone(), self.faults.lookup.clone())?;
                return Ok(Front::User(Arc::new(front)));
            }
            GatewayRole::Control => self
                .with_health_and_fallbacks(control::router(self.services_state(proxy)))
                .layer(middleware::from_fn_with_state(self.keys.clone(), require_token_except_health)),
            GatewayRole::Observability => self
                .with_health_and_fallbacks(observability::router(self.services_state(proxy)))
                .layer(middleware::from_fn(read_only)),
        };
        Ok(Front::Router(service_kit::app::observed(router, self.metrics.clone())))
    }

    /// The business routes under the live faults, plus `/healthz` and JSON 404/405 answers.
    fn with_health_and_fallbacks(&self, business: Router) -> Router {
        (self.faults.layer)(business)
            .route("/healthz", get(healthz).with_state(self.role))
            .method_not_allowed_fallback(service_kit::app::method_not_allowed)
            .fallback(service_kit::app::not_found)
    }

    fn target(&self, name: &str, url: &UpstreamUrl) -> Target {
        Target::new(name, url.clone(), OutcomeCounters::new(&self.requests, name))
    }

    fn services_state(&self, proxy: Proxy) -> Arc<ServicesState> {
        let services = self.services.iter().map(|s| (s.name.clone(), self.target(&s.name, &s.url))).collect();
        Arc::new(ServicesState { proxy, services })
    }
}

/// State of the roles that front several services by name.
pub struct ServicesState {
    pub proxy: Proxy,
    pub services: BTreeMap<String, Target>,
}

impl ServicesState {
    /// The named service, or a 404 that says which names exist.
    pub fn service(&self, name: &str) -> Result<&Target, ApiError> {
        self.services.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            ApiError::NotFound(format!(
                "unknown service `{name}`; this gateway fronts: {}",
                if known.is_empty() { "(none)".to_owned() } else { known.join(", ") }
            ))
        })
    }
}

/// One fronted service and where its resources are reached through this gateway.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceLink {
    /// Service name as given by `--service NAME=URL`.
    pub name: String,
    /// Gateway path of the service's runtime configuration (control gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Gateway path of the service's Prometheus metrics (observability gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceLink>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    pub service: String,
    pub version: String,
}

/// Liveness of the gateway itself (no upstream is consulted).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz(State(role): State<GatewayRole>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        service: role.service_name().to_owned(),
        version: service_kit::VERSION.to_owned(),
    })
}

/// Control gateway: every route needs a valid token, except the liveness probe and the
/// console's pages; requests authenticated by the console's cookie pass the CSRF guard.
async fn require_token_except_health(State(keys): State<Arc<JwtKeys>>, req: Request, next: Next) -> Response {
    if let Err(err) = control::csrf_check(req.method(), req.headers()) {
        return err.into_response();
    }
    if req.extensions().get::<MatchedPath>().is_some_and(|p| p.as_str() == "/healthz")
        || control::is_console_path(req.uri().path())
    {
        return next.run(req).await;
    }
    match service_kit::auth::require_token(State(keys), req, next).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    }
}

/// Observability gateway: reads only, whatever the path.
async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let mut resp = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("the observability gateway is read-only; {} is not allowed", req.method()),
    );
    resp.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("GET, HEAD"));
    resp
}

/// Splits `"GET /api/x"` into a method and a path template.
pub fn split_route(route: &str) -> Option<(Method, &str)> {
    let (method, path) = route.split_once(' ')?;
    Some((Method::from_bytes(method.as_bytes()).ok()?, path))
}
