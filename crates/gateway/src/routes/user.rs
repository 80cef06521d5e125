//! User role: the shop's business routes and nothing else, on the request path that carries
//! the stack's load. Routed by hand rather than through an axum `Router`: a proxied request
//! there paid for boxed, cloned services and a middleware future per layer, more than the
//! forwarding itself. Answers are the ones the axum roles give: the route label, fault keys,
//! JSON 404/405 (with `Allow`), `HEAD` served by `GET` routes, `/healthz`.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use prometheus::Histogram;
use service_kit::metrics::{RequestTrace, UNMATCHED_ROUTE};
use service_kit::{ApiError, Metrics};

use super::{FaultLookup, USER_ROUTES, healthz, split_route};
use crate::http1::LazyTimer;
use crate::http1::server::{Handler, RawRequest, Reply};
use crate::pool::Slot;
use crate::proxy::{Proxy, Target, error_response};
use crate::settings::GatewayRole;

/// Route template of the gateway's own liveness probe.
const HEALTHZ: &str = "/healthz";

/// One path template and what may be done on it.
struct PathRoutes {
    template: &'static str,
    methods: Vec<Method>,
    /// `Allow` of a 405 on this path, spelled as axum spells it (`GET,HEAD`).
    allow: HeaderValue,
}

/// Per worker thread: routes, the shop's connections, and what every request records.
pub struct UserFront {
    proxy: Proxy,
    shop: Target,
    metrics: Arc<Metrics>,
    faults: FaultLookup,
    paths: Vec<PathRoutes>,
    /// Path → index into `paths`.
    router: matchit::Router<usize>,
    /// Duration series already resolved by this thread (see [`UserFront::duration`]).
    durations: Mutex<Vec<(&'static str, Method, StatusCode, Histogram)>>,
}

/// Most duration series a worker thread keeps resolved.
const MAX_CACHED_SERIES: usize = 256;

/// Where a request goes.
enum Matched<'a> {
    Proxy(&'static str),
    Health,
    MethodNotAllowed(&'a PathRoutes),
    NotFound,
}

impl UserFront {
    pub fn new(proxy: Proxy, shop: Target, metrics: Arc<Metrics>, faults: FaultLookup) -> anyhow::Result<Self> {
        let mut paths: Vec<PathRoutes> = Vec::new();
        let routes = USER_ROUTES.iter().filter_map(|route| split_route(route)).chain([(Method::GET, HEALTHZ)]);
        for (method, template) in routes {
            match paths.iter_mut().find(|p| p.template == template) {
                Some(path) => path.methods.push(method),
                None => paths.push(PathRoutes { template, methods: vec![method], allow: HeaderValue::from_static("") }),
            }
        }
        let mut router = matchit::Router::new();
        for (index, path) in paths.iter_mut().enumerate() {
            let mut allow: Vec<&str> = Vec::new();
            for method in &path.methods {
                let names: &[&str] = if method == Method::GET { &["GET", "HEAD"] } else { &[method.as_str()] };
                for name in names {
                    if !allow.contains(name) {
                        allow.push(name);
                    }
                }
            }
            path.allow = HeaderValue::from_str(&allow.join(","))?;
            router.insert(path.template, index)?;
        }
        Ok(Self { proxy, shop, metrics, faults, paths, router, durations: Mutex::new(Vec::new()) })
    }

    /// Serves one request from a client at `peer_ip` (its `x-forwarded-for` value), as
    /// hyper parsed it: the requests that [`crate::http1::server`] hands over.
    pub async fn handle(&self, req: Request<Incoming>, peer_ip: &HeaderValue) -> Response {
        let method = req.method().clone();
        let matched = self.route(&method, req.uri().path());
        let route = matched.route();
        let trace = RequestTrace::start(&method, route, req.headers());
        let user_agent = self.metrics.facts.as_ref().and_then(|_| req.headers().get(http::header::USER_AGENT).cloned());
        let (resp, elapsed) = trace.run(self.dispatch(matched, req, peer_ip)).await;
        self.observed(route, &method, resp.status(), elapsed, user_agent.as_ref());
        resp
    }

    /// [`UserFront::handle`] for a request of the gateway's own HTTP/1.1 server.
    /// `timer` carries the upstream budget (see [`LazyTimer`]).
    pub(crate) async fn handle_raw(
        &self,
        req: &RawRequest<'_>,
        peer_ip: &HeaderValue,
        timer: &mut LazyTimer,
    ) -> http::Response<Reply<Slot>> {
        let matched = self.route(&req.method, req.path());
        let route = matched.route();
        let trace = RequestTrace::start_with(&req.method, route, req.field("traceparent"), || req.header_map());
        let user_agent = self
            .metrics
            .facts
            .as_ref()
            .and_then(|_| req.field("user-agent"))
            .and_then(|value| HeaderValue::from_bytes(value).ok());
        let (resp, elapsed) = trace.run(self.dispatch_raw(matched, req, peer_ip, timer)).await;
        self.observed(route, &req.method, resp.status(), elapsed, user_agent.as_ref());
        resp
    }

    /// Records a request's duration and, when the fact lake is on, its fact.
    fn observed(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        elapsed: std::time::Duration,
        user_agent: Option<&HeaderValue>,
    ) {
        self.duration(route, method, status).observe(elapsed.as_secs_f64());
        if let Some(facts) = &self.metrics.facts {
            facts.emit(route, method, status.as_u16(), elapsed, user_agent);
        }
    }

    /// The `http_server_request_duration_seconds` series of one route, method and status,
    /// resolved once per worker thread: the registry's lookup takes a lock all threads share.
    fn duration(&self, route: &'static str, method: &Method, status: StatusCode) -> Histogram {
        let Ok(mut cache) = self.durations.lock() else {
            return self.metrics.http_duration.with_label_values(&[route, method.as_str(), status.as_str()]);
        };
        let cached = cache.iter().find(|(r, m, s, _)| *s == status && m == method && *r == route);
        if let Some((_, _, _, histogram)) = cached {
            return histogram.clone();
        }
        let histogram = self.metrics.http_duration.with_label_values(&[route, method.as_str(), status.as_str()]);
        // Methods are few and statuses come from a small set; the bound is only a backstop.
        if cache.len() < MAX_CACHED_SERIES {
            cache.push((route, method.clone(), status, histogram.clone()));
        }
        histogram
    }

    fn route(&self, method: &Method, path: &str) -> Matched<'_> {
        let Some(path) = self.router.at(path).ok().and_then(|m| self.paths.get(*m.value)) else {
            return Matched::NotFound;
        };
        let serves = |m: &Method| m == method || (method == Method::HEAD && m == Method::GET);
        match path.methods.iter().any(serves) {
            true if path.template == HEALTHZ => Matched::Health,
            true => Matched::Proxy(path.template),
            false => Matched::MethodNotAllowed(path),
        }
    }

    async fn dispatch(&self, matched: Matched<'_>, req: Request<Incoming>, peer_ip: &HeaderValue) -> Response {
        let Matched::Proxy(template) = matched else {
            return local(matched, req.method(), req.uri().path()).await;
        };
        if let Some(failed) = self.fault(req.method(), template).await {
            return failed;
        }
        let (parts, body) = req.into_parts();
        // Forwarded unchanged: method, path, query, body.
        let path_and_query = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        self.proxy.forward_parts(&self.shop, parts, Body::new(body), path_and_query, Some(peer_ip)).await
    }

    async fn dispatch_raw(
        &self,
        matched: Matched<'_>,
        req: &RawRequest<'_>,
        peer_ip: &HeaderValue,
        timer: &mut LazyTimer,
    ) -> http::Response<Reply<Slot>> {
        let Matched::Proxy(template) = matched else {
            return local(matched, &req.method, req.path()).await.map(Reply::Local);
        };
        if let Some(failed) = self.fault(&req.method, template).await {
            return failed.map(Reply::Local);
        }
        self.proxy.forward_raw(&self.shop, req, peer_ip, timer).await
    }

    /// The answer of a fault in force on the route, if it fails the request (a latency fault
    /// delays it and lets it through).
    async fn fault(&self, method: &Method, template: &str) -> Option<Response> {
        let fault = (self.faults)(method, template)?;
        // Boxed: only requests under a fault pay for its future, the others do not carry its
        // size.
        Box::pin(service_kit::faults::apply(&fault)).await
    }
}

/// One client connection of the user role, as the gateway's HTTP/1.1 server serves it.
#[derive(Clone)]
pub struct UserConnection {
    front: Arc<UserFront>,
    /// The client's `x-forwarded-for` entry, computed once per connection.
    peer_ip: HeaderValue,
}

impl UserConnection {
    pub fn new(front: Arc<UserFront>, peer_ip: HeaderValue) -> Self {
        Self { front, peer_ip }
    }
}

impl Handler for UserConnection {
    type Guard = Slot;

    fn serve(
        &self,
        req: &RawRequest<'_>,
        timer: &mut LazyTimer,
    ) -> impl Future<Output = http::Response<Reply<Slot>>> + Send {
        self.front.handle_raw(req, &self.peer_ip, timer)
    }

    fn serve_hyper(&self, req: Request<Incoming>) -> impl Future<Output = Response> + Send {
        self.front.handle(req, &self.peer_ip)
    }
}

impl Matched<'_> {
    /// The `http_route` label of the request.
    fn route(&self) -> &'static str {
        match self {
            Matched::Proxy(template) => template,
            Matched::Health => HEALTHZ,
            Matched::MethodNotAllowed(path) => path.template,
            Matched::NotFound => UNMATCHED_ROUTE,
        }
    }
}

/// The gateway's own answer to a request it does not forward. The servers send no body in
/// answer to HEAD.
async fn local(matched: Matched<'_>, method: &Method, path: &str) -> Response {
    match matched {
        Matched::Health => healthz(axum::extract::State(GatewayRole::User)).await.into_response(),
        Matched::MethodNotAllowed(routes) => {
            let mut resp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            );
            resp.headers_mut().insert(header::ALLOW, routes.allow.clone());
            resp
        }
        Matched::NotFound | Matched::Proxy(_) => {
            ApiError::NotFound(format!("no route for {method} {path}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::MethodFilter;

    #[test]
    fn every_user_route_parses_into_a_method_filter() {
        for route in USER_ROUTES {
            let (method, path) = split_route(route).unwrap_or_else(|| panic!("{route}"));
            assert!(MethodFilter::try_from(method).is_ok(), "{route}");
            assert!(path.starts_with("/api/"), "{route}");
        }
    }
}
