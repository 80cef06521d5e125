//! Forwarding one request to an upstream: pool slot, deadline, header hygiene, trace context,
//! streamed bodies both ways, and the mapping of every failure to a JSON error.
//!
//! Each worker thread owns its [`Target`]s (each with its own keep-alive connections); the
//! [`UpstreamPool`] slots are shared by all threads.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri, Version};
use http_body_util::{LengthLimitError, Limited};
use service_kit::ApiError;
use service_kit::error::{ErrorBody, ErrorDetail};
use service_kit::telemetry::TraceContext;
use tokio::time::Instant;

use crate::http1::LazyTimer;
use crate::http1::client::{ConnPool, Extra, Guarded, SendError};
use crate::http1::codec::{HOP_BY_HOP, is_hop_by_hop, write_field};
use crate::http1::server::{RawRequest, Reply};
use crate::pool::{Outcome, OutcomeCounters, PoolHandle, Refusal, Slot, UpstreamPool};
use crate::settings::UpstreamUrl;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// One upstream as seen from one worker thread: built by that thread, so its connections
/// live on that thread's runtime.
pub struct Target {
    name: Arc<str>,
    url: UpstreamUrl,
    counters: OutcomeCounters,
    conns: Arc<ConnPool>,
}

impl Target {
    pub fn new(name: &str, url: UpstreamUrl, counters: OutcomeCounters) -> Self {
        let conns = Arc::new(ConnPool::new(url.authority()));
        Self { name: Arc::from(name), url, counters, conns }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Origin-form request target (`/path?query`) under the upstream's base path.
    fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        let path_and_query = if self.url.base_path().is_empty() {
            path_and_query
        } else {
            PathAndQuery::try_from(format!("{}{}", self.url.base_path(), path_and_query))?
        };
        Ok(Uri::from(path_and_query))
    }
}

/// The forwarding machinery shared by a worker thread's routes.
#[derive(Clone)]
pub struct Proxy {
    pool: Arc<PoolHandle>,
    body_limit: usize,
}

impl Proxy {
    /// Forwarding for the calling worker thread, with its own handle on the shared `pool`.
    pub fn new(pool: &Arc<UpstreamPool>, body_limit: usize) -> Self {
        Self { pool: PoolHandle::new(pool), body_limit }
    }

    /// Sends `req` to `target` at `path_and_query` and streams the answer back.
    pub async fn forward(&self, target: &Target, req: Request, path_and_query: PathAndQuery) -> Response {
        let (parts, body) = req.into_parts();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| forwarded_for(info.0.ip()));
        self.forward_parts(target, parts, body, path_and_query, peer.as_ref()).await
    }

    /// [`Proxy::forward`] for a request already taken apart; `peer_ip` is the client's
    /// `x-forwarded-for` entry.
    pub async fn forward_parts(
        &self,
        target: &Target,
        mut parts: http::request::Parts,
        body: Body,
        path_and_query: PathAndQuery,
        peer_ip: Option<&HeaderValue>,
    ) -> Response {
        let deadline = Instant::now() + self.pool.pool().timeout();

        let declared_length = content_length(&parts.headers);
        if declared_length.is_some_and(|len| len > self.body_limit) {
            return ApiError::PayloadTooLarge { limit: self.body_limit }.into_response();
        }
        // A declared length is enforced by the HTTP/1 codec; only chunked bodies need counting.
        let body = if declared_length.is_some() || http_body_is_empty(&body) {
            body
        } else {
            Body::new(Limited::new(body, self.body_limit))
        };

        let uri = match target.uri(path_and_query) {
            Ok(uri) => uri,
            Err(err) => {
                return ApiError::Internal(anyhow::anyhow!("upstream URI for {}: {err}", target.name)).into_response();
            }
        };
        // Hop-by-hop fields go; `Host`, `Upgrade`, `x-forwarded-for` and `traceparent` are
        // replaced as the request is written (no map updates on the way).
        strip_hop_by_hop(&mut parts.headers);
        let forwarded_for = peer_ip.map(|ip| forwarded_chain(&parts.headers, ip));
        let traceparent = if service_kit::telemetry::exporting() {
            service_kit::telemetry::inject_current(&mut parts.headers);
            None
        } else {
            TraceContext::current().map(|trace| trace.traceparent_bytes())
        };
        let extra =
            Extra { forwarded_for: forwarded_for.as_deref(), traceparent: traceparent.as_ref().map(|t| &t[..]) };
        parts.uri = uri;
        // Keep-alive to the upstream whatever the client spoke.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let upstream_req = Request::from_parts(parts, body);

        let slot = match self.pool.acquire(deadline).await {
            Ok(slot) => slot,
            Err(refusal) => return self.refuse(target, refusal),
        };

        match tokio::time::timeout_at(deadline, target.conns.send(upstream_req, extra)).await {
            Ok(Ok(resp)) => {
                target.counters.record(Outcome::Ok);
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(Guarded::new(body, slot)))
            }
            Ok(Err(err)) => self.failed(target, &err),
            Err(_elapsed) => self.timed_out(target),
        }
    }

    /// [`Proxy::forward_parts`] for a request of the gateway's own HTTP/1.1 server: its
    /// fields go to the upstream as they came, less hop-by-hop ones, and the upstream's
    /// response head comes back encoded for the client.
    pub(crate) async fn forward_raw(
        &self,
        target: &Target,
        req: &RawRequest<'_>,
        peer_ip: &HeaderValue,
        timer: &mut LazyTimer,
    ) -> http::Response<Reply<Slot>> {
        let deadline = Instant::now() + self.pool.pool().timeout();
        let mut request = Vec::with_capacity(512 + req.body.len());
        encode_raw_request(target, req, peer_ip, &mut request);
        let slot = match self.pool.acquire(deadline).await {
            Ok(slot) => slot,
            Err(refusal) => return self.refuse(target, refusal).map(Reply::Local),
        };
        let mut head = Vec::with_capacity(512);
        let exchange = target.conns.exchange(&request, &req.method, req.close, &mut head);
        match timer.run_until(deadline, exchange).await {
            Some(Ok(exchanged)) => {
                target.counters.record(Outcome::Ok);
                let reply = Reply::Upstream { head, body: exchanged.body, chunked: exchanged.chunked, guard: slot };
                let mut resp = http::Response::new(reply);
                *resp.status_mut() = exchanged.status;
                resp
            }
            Some(Err(err)) => self.failed(target, &err).map(Reply::Local),
            None => self.timed_out(target).map(Reply::Local),
        }
    }

    /// The answer to an exchange with the upstream that failed.
    fn failed(&self, target: &Target, err: &SendError) -> Response {
        if is_body_too_large(err) {
            return ApiError::PayloadTooLarge { limit: self.body_limit }.into_response();
        }
        target.counters.record(Outcome::UpstreamError);
        tracing::warn!(upstream = %target.name, error = %error_chain(err), "upstream request failed");
        bad_gateway(format!("upstream `{}` could not be reached", target.name))
    }

    /// The answer to an upstream that did not answer within the pool's timeout.
    fn timed_out(&self, target: &Target) -> Response {
        target.counters.record(Outcome::UpstreamTimeout);
        tracing::debug!(upstream = %target.name, "upstream did not answer within the budget");
        ApiError::Timeout(format!(
            "upstream `{}` did not answer within {} ms",
            target.name,
            self.pool.pool().timeout().as_millis()
        ))
        .into_response()
    }

    /// Tunnels a WebSocket handshake to `target` and, once the upstream accepts it (`101`), the
    /// bytes of both upgraded connections. A tunnel holds no upstream pool slot: it is long
    /// lived and would starve the request path.
    pub async fn tunnel(&self, target: &Target, mut req: Request, path_and_query: PathAndQuery) -> Response {
        if !is_websocket_upgrade(req.headers()) {
            return ApiError::bad_request(
                "websocket_required",
                "this route speaks WebSocket only: send `Connection: upgrade` and `Upgrade: websocket`",
            )
            .into_response();
        }
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, _body) = req.into_parts();
        let uri = match target.uri(path_and_query) {
            Ok(uri) => uri,
            Err(err) => {
                return ApiError::Internal(anyhow::anyhow!("upstream URI for {}: {err}", target.name)).into_response();
            }
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| forwarded_for(info.0.ip()));
        let upgrade = parts.headers.get(header::UPGRADE).cloned();
        prepare_request_headers(&mut parts.headers, peer.as_ref());
        if let Some(upgrade) = upgrade {
            parts.headers.insert(header::UPGRADE, upgrade);
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        service_kit::telemetry::inject_current(&mut parts.headers);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let upstream_req = Request::from_parts(parts, Body::empty());

        let deadline = Instant::now() + self.pool.pool().timeout();
        let mut resp = match tokio::time::timeout_at(deadline, target.conns.send_upgrade(upstream_req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(err)) => {
                target.counters.record(Outcome::UpstreamError);
                tracing::warn!(upstream = %target.name, error = %error_chain(&err), "upstream handshake failed");
                return bad_gateway(format!("upstream `{}` could not be reached", target.name));
            }
            Err(_elapsed) => {
                target.counters.record(Outcome::UpstreamTimeout);
                return ApiError::Timeout(format!("upstream `{}` did not accept the WebSocket in time", target.name))
                    .into_response();
            }
        };
        target.counters.record(Outcome::Ok);
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // A refusal (401, 404, …) is the upstream's answer to pass on.
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, Body::new(body));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let name = target.name.clone();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(client), Ok(upstream)) => (client, upstream),
                (client, upstream) => {
                    tracing::debug!(upstream = %name, client_ok = client.is_ok(), upstream_ok = upstream.is_ok(), "WebSocket upgrade did not complete");
                    return;
                }
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(upstream = %name, error = %err, "WebSocket tunnel ended with an error");
            }
        });
        // The 101 keeps `Connection: upgrade` and `Upgrade`: they are this hop's handshake.
        let (parts, _body) = resp.into_parts();
        Response::from_parts(parts, Body::empty())
    }

    fn refuse(&self, target: &Target, refusal: Refusal) -> Response {
        let (outcome, message) = match refusal {
            Refusal::QueueFull => (
                Outcome::QueueFull,
                format!("upstream `{}` is saturated: too many requests are waiting for a connection", target.name),
            ),
            Refusal::Timeout => (
                Outcome::PoolTimeout,
                format!(
                    "no connection to upstream `{}` became free within {} ms",
                    target.name,
                    self.pool.pool().timeout().as_millis()
                ),
            ),
        };
        target.counters.record(outcome);
        tracing::debug!(upstream = %target.name, ?outcome, "no upstream pool slot");
        ApiError::Unavailable { message, retry_after_secs: 1 }.into_response()
    }
}

/// `Connection: upgrade` (among other tokens) and `Upgrade: websocket`.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn http_body_is_empty(body: &Body) -> bool {
    hyper::body::Body::is_end_stream(body)
}

/// Removes hop-by-hop headers (including those named by `Connection`) and `Host`, which the
/// client sets from the upstream URI, then records the caller (`peer_ip`) in `x-forwarded-for`.
fn prepare_request_headers(headers: &mut HeaderMap, peer_ip: Option<&HeaderValue>) {
    strip_hop_by_hop(headers);
    headers.remove(header::UPGRADE);
    headers.remove(header::HOST);
    let Some(ip) = peer_ip else { return };
    let chained = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => {
            HeaderValue::try_from(format!("{prior}, {}", ip.to_str().unwrap_or_default())).ok()
        }
        _ => Some(ip.clone()),
    };
    if let Some(value) = chained {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The `x-forwarded-for` value that records `ip` after the chain the request carries.
fn forwarded_chain<'a>(headers: &HeaderMap, ip: &'a HeaderValue) -> Cow<'a, [u8]> {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => Cow::Owned([prior.as_bytes(), b", ", ip.as_bytes()].concat()),
        _ => Cow::Borrowed(ip.as_bytes()),
    }
}

/// Writes the request `req` as `target` receives it: the client's fields less hop-by-hop ones
/// and `Host`, the upstream's `Host`, the client recorded in `x-forwarded-for`, this request's
/// trace context, then the body.
fn encode_raw_request(target: &Target, req: &RawRequest<'_>, peer_ip: &HeaderValue, out: &mut Vec<u8>) {
    // Spans exported: OpenTelemetry's propagator writes the context (`traceparent`, and
    // `tracestate` when there is one); otherwise the request's own context is written.
    let mut propagated = HeaderMap::new();
    let traceparent = if service_kit::telemetry::exporting() {
        service_kit::telemetry::inject_current(&mut propagated);
        None
    } else {
        TraceContext::current().map(|trace| trace.traceparent_bytes())
    };
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.url.base_path().as_bytes());
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_field(out, b"host", target.conns.host_header().as_bytes());
    let mut prior_chain: Option<&[u8]> = None;
    for f in req.fields {
        let name = f.name;
        if name.eq_ignore_ascii_case(X_FORWARDED_FOR.as_str()) {
            prior_chain = prior_chain.or(Some(f.value.trim_ascii()).filter(|v| !v.is_empty()));
            continue;
        }
        let replaced = name.eq_ignore_ascii_case(header::HOST.as_str())
            || is_hop_by_hop(name.as_bytes())
            || (traceparent.is_some() && name.eq_ignore_ascii_case("traceparent"))
            || propagated.keys().any(|key| name.eq_ignore_ascii_case(key.as_str()));
        if !replaced {
            write_field(out, name.as_bytes(), f.value);
        }
    }
    match prior_chain {
        Some(prior) => {
            write_field(out, X_FORWARDED_FOR.as_str().as_bytes(), &[prior, b", ", peer_ip.as_bytes()].concat())
        }
        None => write_field(out, X_FORWARDED_FOR.as_str().as_bytes(), peer_ip.as_bytes()),
    }
    if let Some(traceparent) = &traceparent {
        write_field(out, b"traceparent", traceparent);
    }
    for (name, value) in &propagated {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // A body-carrying method says its (empty) length, as hyper's client does.
    if req.field("content-length").is_none() && matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body);
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names instead of a removal (a hash
    // and a probe) per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name.as_str())) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_body_too_large(err: &SendError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if err.is::<LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// A JSON error in the shape of [`ApiError`] for statuses it has no variant for.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message, details: Vec::new() } };
    (status, Json(body)).into_response()
}

/// 502: the upstream refused the connection, reset it, or answered with garbage.
pub fn bad_gateway(message: String) -> Response {
    error_response(StatusCode::BAD_GATEWAY, "bad_gateway", message)
}

/// The `x-forwarded-for` entry of a client.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::HOST, HeaderValue::from_static("gateway:8080"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        prepare_request_headers(&mut headers, Some(&forwarded_for([10, 0, 0, 7].into())));
        assert!(headers.get("x-secret-hop").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert!(headers.get(header::HOST).is_none());
        assert_eq!(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes), Some(&b"Bearer t"[..]));
        assert_eq!(headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes), Some(&b"10.0.0.7"[..]));
    }

    #[test]
    fn x_forwarded_for_appends_to_an_existing_chain() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        prepare_request_headers(&mut headers, Some(&forwarded_for([127, 0, 0, 1].into())));
        assert_eq!(headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes), Some(&b"203.0.113.9, 127.0.0.1"[..]));
    }

    #[test]
    fn target_uri_keeps_path_and_query_under_the_base_path() {
        let requests = prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["upstream", "outcome"])
            .unwrap_or_else(|e| panic!("{e}"));
        let counters = OutcomeCounters::new(&requests, "shop");
        let plain =
            Target::new("shop", "http://127.0.0.1:8101".parse().unwrap_or_else(|e| panic!("{e}")), counters.clone());
        let pq = PathAndQuery::from_static("/api/products/search?q=tea&limit=5");
        assert_eq!(
            plain.uri(pq.clone()).map(|u| u.to_string()).ok(),
            Some("/api/products/search?q=tea&limit=5".to_owned())
        );
        let prefixed = Target::new("shop", "http://shop:80/v1".parse().unwrap_or_else(|e| panic!("{e}")), counters);
        assert_eq!(
            prefixed.uri(pq).map(|u| u.to_string()).ok(),
            Some("/v1/api/products/search?q=tea&limit=5".to_owned())
        );
    }
}
