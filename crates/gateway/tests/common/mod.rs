//! Test scaffolding: an upstream we control (sleeps, streams, counts concurrency, records what
//! arrived), a gateway started in-process on port 0, tokens and metric readers.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gateway::{Gateway, GatewayRole, ServiceTarget, Settings};
use serde_json::{Value, json};
use service_kit::Role;
use test_support::{public_keys, signer};
use tokio::sync::oneshot;

pub fn token(role: Role) -> String {
    signer().mint("tester", role, Duration::from_secs(600)).unwrap()
}

/// Installs the stack's telemetry once per test binary, so spans carry W3C trace context.
/// Logs are filtered out; spans still reach the OpenTelemetry layer.
pub fn init_telemetry() {
    static GUARD: OnceLock<()> = OnceLock::new();
    GUARD.get_or_init(|| {
        let guard = service_kit::telemetry::init("gateway-tests", None, "off").unwrap();
        // Kept for the whole test binary: dropping it would shut the tracer down.
        std::mem::forget(guard);
    });
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
pub struct UpstreamState {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
    /// Client address of every request: distinct ports are distinct connections.
    pub peers: Mutex<Vec<SocketAddr>>,
}

/// An upstream on port 0 answering every path with an echo of the request. Request headers
/// steer it: `x-test-sleep-ms` (delay before answering), `x-test-status` (status to answer),
/// `x-test-stream-ms` (send the head at once and the body after this delay), `x-test-close`
/// (answer with `Connection: close`).
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    pub async fn start() -> Self {
        let state = Arc::new(UpstreamState::default());
        let app = Router::new().fallback(echo).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await },
        );
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many distinct connections requests arrived on.
    pub fn connections(&self) -> usize {
        let mut peers = self.state.peers.lock().unwrap().clone();
        peers.sort();
        peers.dedup();
        peers.len()
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

async fn echo(State(state): State<Arc<UpstreamState>>, req: Request) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(peer) = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>() {
        state.peers.lock().unwrap().push(peer.0);
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Some(ms) = header_u64(&parts.headers, "x-test-sleep-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    state.seen.lock().unwrap().push(seen);
    let headers: BTreeMap<String, String> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())).collect();
    let echoed = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body": String::from_utf8_lossy(&body),
        "headers": headers,
    });
    let status = header_u64(&parts.headers, "x-test-status")
        .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(ms) = header_u64(&parts.headers, "x-test-stream-ms") {
        let state = state.clone();
        let chunk = futures_util::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Bytes::from(echoed.to_string()))
        });
        return (status, Body::from_stream(chunk)).into_response();
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = (status, axum::Json(echoed)).into_response();
    if parts.headers.contains_key("x-test-close") {
        resp.headers_mut().insert("connection", axum::http::HeaderValue::from_static("close"));
    }
    resp
}

/// A URL nothing listens on: bound, then closed again.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Settings for a test gateway: port 0 everywhere, one worker thread.
pub fn settings(role: GatewayRole, shop_url: &str) -> Settings {
    let mut settings = Settings::new(role, public_keys());
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.admin_listen = "127.0.0.1:0".parse().unwrap();
    settings.shop_url = shop_url.parse().unwrap();
    settings.threads = 1;
    settings.drain = Duration::from_secs(5);
    settings
}

pub fn with_services(mut settings: Settings, services: &[(&str, &str)]) -> Settings {
    settings.services =
        services.iter().map(|(name, url)| format!("{name}={url}").parse::<ServiceTarget>().unwrap()).collect();
    settings
}

/// A gateway running in-process until dropped (or [`TestGateway::stop`]).
pub struct TestGateway {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    pub fn start(settings: Settings) -> Self {
        let gateway = Gateway::build(settings).unwrap();
        let (public, admin) = (gateway.public_addr(), gateway.admin_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run_until(async move {
            let _ = rx.await;
        }));
        Self { public, admin, shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Asks for shutdown and waits for the drain to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Merge-patches the gateway's own `/config` on the admin listener.
    pub async fn patch_config(&self, role: Role, patch: Value) -> reqwest::Response {
        http().patch(self.admin_url("/config")).bearer_auth(token(role)).json(&patch).send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        http().get(self.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Polls `/metrics` until `series` (name with labels, as rendered) has `value`.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        for _ in 0..200 {
            if metric(&self.metrics().await, series) == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{series} never reached {value}; metrics:\n{}", self.metrics().await);
    }
}

/// Value of one series in Prometheus text, matched by its name and labels as a prefix, e.g.
/// `gateway_upstream_requests_total{outcome="ok"` (labels may follow in any order after it).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}').split(',').collect::<Vec<_>>()),
        None => (series, Vec::new()),
    };
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let key_name = key.split('{').next()?;
        if key_name != name || !labels.iter().all(|label| key.contains(label)) {
            return None;
        }
        value.parse().ok()
    })
}

/// A client without connection reuse surprises: no proxy, a guard against hangs.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap()
}
