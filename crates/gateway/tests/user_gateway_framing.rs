//! Request smuggling, end to end: a byte stream sent to the real user gateway reaches a hyper
//! upstream as the requests hyper itself would see in it, never more and never others.
//!
//! Each case sends one stream of pipelined requests to the user's business routes (random
//! and mutated framing, as in `src/http1/tests/`) and a final `Connection: close` request,
//! then compares what the upstream (hyper, recording each request whose body arrived whole)
//! received with what a hyper server sees in the same bytes, less the requests the gateway
//! answers itself (no user route: 404 or 405). Some may be missing (a refusal by the gateway
//! or the upstream); none may be forwarded that the reference did not see, nor in another
//! order.
//!
//! Cases: 256 by default, `PROPTEST_CASES` for more.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use gateway::{GatewayRole, USER_ROUTES};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway's own server takes bodies up to this size (`http1::codec::MAX_BODY`).
const MAX_BODY: usize = 64 * 1024;

#[allow(dead_code)] // The strategies the in-crate tests use and these do not.
#[path = "../src/http1/tests/requests.rs"]
mod requests;

/// The user routes a stream's requests go to (method, concrete target).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/ping"),
    ("HEAD", "/api/ping"),
    ("GET", "/api/products?q=green%20tea&limit=3"),
    ("GET", "/api/products/42"),
    ("POST", "/api/carts"),
    ("POST", "/api/carts/7/items"),
    ("POST", "/api/checkout"),
    ("GET", "/api/orders/9"),
];

const SENTINEL: &[u8] = b"GET /api/ping?sentinel HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

/// One request as a hyper server handed it over, body whole.
type Seen = (String, String, Vec<u8>);

/// A hyper server that records each request whose body arrived whole and answers `200`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn serve(self, req: http::Request<Incoming>) -> Result<http::Response<Body>, Infallible> {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await else {
            return Ok(http::Response::builder().status(400).body(Body::empty()).unwrap());
        };
        let target = parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), ToString::to_string);
        self.seen.lock().unwrap().push((parts.method.to_string(), target, body.to_bytes().to_vec()));
        Ok(http::Response::new(Body::from("ok")))
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).half_close(true);
    builder
}

/// The upstream: the recorder behind a real listener.
async fn start_upstream(recorder: Recorder) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| recorder.clone().serve(req));
                let _ = builder().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// What hyper itself sees in `bytes`, fed over an in-memory stream that then ends.
async fn reference(bytes: &[u8]) -> Vec<Seen> {
    let recorder = Recorder::default();
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let service = {
        let recorder = recorder.clone();
        hyper::service::service_fn(move |req| recorder.clone().serve(req))
    };
    let task = tokio::spawn(async move { builder().serve_connection(TokioIo::new(server), service).await });
    let (mut read, mut write) = tokio::io::split(&mut client);
    let writer = async {
        let _ = write.write_all(bytes).await;
        let _ = write.shutdown().await;
    };
    let reader = async {
        let mut sink = Vec::new();
        let _ = read.read_to_end(&mut sink).await;
    };
    tokio::join!(writer, reader);
    let _ = task.await;
    recorder.take()
}

/// Sends `bytes` to the gateway on one connection and reads until it closes (the stream ends
/// with a `Connection: close` request) or falls silent.
async fn through_gateway(gateway: SocketAddr, bytes: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let (mut read, mut write) = stream.split();
    let writer = async {
        let _ = write.write_all(bytes).await;
    };
    let reader = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(2), read.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    };
    tokio::join!(writer, reader);
}

/// Whether the user gateway forwards `method` on `target` (a user route; `HEAD` as `GET`):
/// the other requests it answers itself (404, 405), and the upstream never sees them.
fn is_forwarded(method: &str, target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    USER_ROUTES.iter().any(|route| {
        let Some((route_method, template)) = route.split_once(' ') else { return false };
        let method_fits = method == route_method || (method == "HEAD" && route_method == "GET");
        let (mut want, mut got) = (template.split('/'), path.split('/'));
        let path_fits = loop {
            match (want.next(), got.next()) {
                (None, None) => break true,
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => break false,
            }
        };
        method_fits && path_fits
    })
}

/// A request of the generated kind sent to one of the user routes; a request hidden in a
/// body goes to a route too, so that the upstream would see it if it were forwarded.
fn routed_request() -> impl Strategy<Value = requests::Request> {
    (requests::request(), proptest::sample::select(ROUTES)).prop_map(|(mut req, (method, target))| {
        req.method = method;
        req.target = target.to_owned();
        if req.body.starts_with(b"GET /smuggled") {
            req.body = b"GET /api/orders/smuggled HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        }
        req
    })
}

#[test]
fn the_upstream_behind_the_user_gateway_sees_only_requests_hyper_sees_in_the_same_bytes() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let recorder = Recorder::default();
    let (gateway, _gw) = rt.block_on(async {
        let upstream = start_upstream(recorder.clone()).await;
        let mut settings = common::settings(GatewayRole::User, &format!("http://{upstream}"));
        // A case whose last body never arrives whole ends soon.
        settings.header_read_timeout = Duration::from_millis(500);
        let gw = common::TestGateway::start(settings);
        (gw.public, gw)
    });
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    proptest!(config, |(stream in requests::stream(routed_request(), 20))| {
        let mut bytes = stream.bytes();
        bytes.extend_from_slice(SENTINEL);
        let (expected, forwarded) = rt.block_on(async {
            let mut expected = reference(&bytes).await;
            expected.retain(|(method, target, _)| is_forwarded(method, target));
            recorder.take();
            through_gateway(gateway, &bytes).await;
            (expected, recorder.take())
        });
        let shown = |seen: &[Seen]| seen.iter().map(|(m, t, b)| format!("{m} {t} ({} bytes)", b.len())).collect::<Vec<_>>();
        // In order, each one hyper's; some may be missing (an upstream refusal: the fields
        // the gateway adds can take a request over hyper's 100 with a 431).
        let mut remaining = expected.iter();
        if !forwarded.iter().all(|seen| remaining.any(|candidate| candidate == seen)) {
            return Err(TestCaseError::fail(format!(
                "the upstream saw {:?}, hyper sees {:?} (of them, those the gateway forwards) in {}",
                shown(&forwarded),
                shown(&expected),
                bytes.escape_ascii()
            )));
        }
    });
}
