//! The user gateway forwards the shop's business routes and nothing else.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use common::{TestGateway, Upstream, dead_url, http, init_telemetry, metric, settings};
use gateway::{GatewayRole, USER_ROUTES};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `/api/products/{id}` → `/api/products/42`.
fn concrete(template: &str) -> String {
    template.split('/').map(|seg| if seg.starts_with('{') { "42" } else { seg }).collect::<Vec<_>>().join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_gateway_forwards_every_whitelisted_route_with_method_path_query_body_and_status() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let client = http();
    for route in USER_ROUTES {
        let (method, template) = route.split_once(' ').unwrap();
        let path = concrete(template);
        let body = json!({"route": route}).to_string();
        let mut req = client
            .request(method.parse().unwrap(), gw.url(&format!("{path}?q=green%20tea&limit=3")))
            .header("x-test-status", "203")
            .header("x-custom", "kept");
        if method == "POST" {
            req = req.header("content-type", "application/json").body(body.clone());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 203, "{route}");
        let echoed: Value = resp.json().await.unwrap();
        assert_eq!(echoed["method"], method, "{route}");
        assert_eq!(echoed["path"], path, "{route}");
        assert_eq!(echoed["query"], "q=green%20tea&limit=3", "{route}");
        assert_eq!(echoed["headers"]["x-custom"], "kept", "{route}");
        assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1", "{route}");
        assert_eq!(echoed["headers"]["host"], upstream.addr.to_string(), "{route}");
        if method == "POST" {
            assert_eq!(echoed["body"], body, "{route}");
        }
    }
    assert_eq!(upstream.seen().len(), USER_ROUTES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_gateway_answers_404_for_control_surfaces_and_unknown_paths() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    for path in [
        "/config",
        "/config/schema",
        "/config/history",
        "/metrics",
        "/readyz",
        "/api/services/shop/config",
        "/api/services",
        "/nope",
        "/api/products/42/secret",
        "/api",
    ] {
        let resp = http().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let patch = http().patch(gw.url("/config")).json(&json!({"upstream": {"pool_size": 1}})).send().await.unwrap();
    assert_eq!(patch.status(), 404);
    assert!(upstream.seen().is_empty(), "nothing may reach the shop: {:?}", upstream.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_gateway_answers_405_for_a_wrong_method_on_a_known_path() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let resp = http().delete(gw.url("/api/products/42")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(allow.contains("GET"), "allow: {allow}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let resp = http().get(gw.url("/api/checkout")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_served_by_get_routes_and_a_405_lists_what_the_path_allows() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let resp = http().head(gw.url("/api/products/42")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen()[0].method, "HEAD");
    for (method, path, allow) in
        [("PUT", "/api/ping", "GET,HEAD"), ("GET", "/api/carts", "POST"), ("POST", "/healthz", "GET,HEAD")]
    {
        let resp = http().request(method.parse().unwrap(), gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
    let health = http().head(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(upstream.seen().len(), 1);
    let text = gw.metrics().await;
    assert!(text.contains(r#"http_request_method="HEAD""#), "{text}");
    assert!(text.contains(r#"http_response_status_code="405",http_route="/api/carts""#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_reaches_the_upstream_and_continues_the_callers_trace() {
    init_telemetry();
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let resp = http().get(gw.url("/api/products")).header("traceparent", &incoming).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http().get(gw.url("/api/ping")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let seen = upstream.seen();
    let traceparent = |i: usize| seen[i].headers.get("traceparent").map(|v| v.to_str().unwrap().to_owned());
    let continued = traceparent(0).expect("traceparent forwarded");
    let parts: Vec<&str> = continued.split('-').collect();
    assert_eq!(parts.len(), 4, "{continued}");
    assert_eq!(parts[1], trace_id, "the caller's trace continues");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's own span is the parent");
    let started = traceparent(1).expect("a trace is started when the caller sent none");
    assert!(started.starts_with("00-") && !started.contains(trace_id), "{started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_gateway_refuses_a_body_over_one_mebibyte_with_413() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let big = vec![b'x'; 1024 * 1024 + 1];
    let resp =
        http().post(gw.url("/api/carts")).header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Exactly the limit still passes.
    let ok = http().post(gw.url("/api/carts")).body(vec![b'x'; 1024 * 1024]).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_gateway_refuses_a_chunked_body_over_one_mebibyte_with_413() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let head = "POST /api/carts HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    // 17 chunks of 64 KiB: just over 1 MiB. The gateway may stop reading early; ignore that.
    for _ in 0..17 {
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "got: {}", text.lines().next().unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_gateway_healthz_answers_even_when_the_shop_is_down_but_readyz_does_not() {
    let gw = TestGateway::start(settings(GatewayRole::User, &dead_url()));
    let health = http().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["service"], "gateway-user");
    let ready = http().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let ready = http().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(upstream.seen()[0].path, "/healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_label_requests_by_route_template_never_by_raw_path() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    http().get(gw.url("/api/products/123")).send().await.unwrap();
    http().get(gw.url("/no/such/path/9")).send().await.unwrap();
    let text = gw.metrics().await;
    assert!(text.contains(r#"http_route="/api/products/{id}""#), "{text}");
    assert!(text.contains(r#"http_route="unmatched""#), "{text}");
    assert!(!text.contains("/api/products/123") && !text.contains("/no/such/path"), "{text}");
    assert_eq!(metric(&text, r#"gateway_upstream_requests_total{outcome="ok",upstream="shop"}"#), Some(1.0));
    assert!(text.contains(r#"service="gateway-user""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_then_frees_the_port() {
    let upstream = Upstream::start().await;
    let mut s = settings(GatewayRole::User, &upstream.url());
    s.threads = 2;
    let gw = TestGateway::start(s);
    let public = gw.public;
    let url = gw.url("/api/ping");
    let in_flight = tokio::spawn(async move { http().get(url).header("x-test-sleep-ms", "300").send().await });
    while upstream.state.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.stop().await.unwrap();
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(tokio::net::TcpStream::connect(public).await.is_err(), "the listener is closed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    for _ in 0..20 {
        // A new client connection each time: reuse must come from the gateway's own pool.
        let resp = http().get(gw.url("/api/products")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(upstream.connections(), 1, "sequential requests share one upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_its_connections_is_still_served() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    for _ in 0..5 {
        let resp = http().get(gw.url("/api/ping")).header("x-test-close", "1").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("connection").is_none_or(|v| v != "close"), "hop-by-hop headers stay on their hop");
        resp.bytes().await.unwrap();
    }
    assert_eq!(upstream.connections(), 5);
    let head = http().head(gw.url("/api/products")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let after_head = http().get(gw.url("/api/products")).send().await.unwrap();
    assert_eq!(after_head.status(), 200);
    assert_eq!(upstream.connections(), 6, "a bodiless HEAD answer leaves a reusable connection");
}

/// Reads one response from `stream` (after any bytes left over in `buf` from the last one):
/// its status, its head and its body, framed by `content-length` or chunked.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    async fn more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed mid-response: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        more(stream, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    buf.drain(..head_end);
    let status = head[9..12].parse().unwrap();
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                more(stream, buf).await;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                more(stream, buf).await;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length: ")) {
        let len: usize = len.trim().parse().unwrap();
        while buf.len() < len {
            more(stream, buf).await;
        }
        body = buf.drain(..len).collect();
    }
    (status, head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_an_unusual_one_is_served_by_hyper_on_the_same_connection() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut buf = Vec::new();
    // Two plain requests in one write, then a chunked one (hyper's), then a plain one again.
    stream
        .write_all(b"GET /api/ping HTTP/1.1\r\nhost: gw\r\n\r\nPOST /api/carts HTTP/1.1\r\nhost: gw\r\ncontent-length: 7\r\n\r\n{\"a\":1}")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut stream, &mut buf).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["path"], "/api/ping");
    let (status, _, body) = read_response(&mut stream, &mut buf).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["body"], r#"{"a":1}"#);
    stream
        .write_all(b"POST /api/carts HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut stream, &mut buf).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["body"], r#"{"b":2}"#);
    stream.write_all(b"GET /api/orders/7 HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n").await.unwrap();
    let (status, head, _) = read_response(&mut stream, &mut buf).await;
    assert_eq!(status, 200);
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty() && buf.is_empty(), "nothing after the last answer");
    let paths: Vec<String> = upstream.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/api/ping", "/api/carts", "/api/carts", "/api/orders/7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_upstream_body_reaches_the_client_chunked_without_hop_by_hop_fields() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        stream
            .write_all(
                b"GET /api/products?x=1 HTTP/1.1\r\nhost: gw\r\nx-test-stream-ms: 20\r\nconnection: keep-alive\r\n\r\n",
            )
            .await
            .unwrap();
        let (status, head, body) = read_response(&mut stream, &mut buf).await;
        assert_eq!(status, 200);
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("connection:"), "{head}");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["query"], "x=1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_ambiguous_requests_get_400_and_reach_nothing() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    for raw in [
        &b"GET /api/ping HTTP/1.1\r\nhost: gw\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxy"[..],
        b"POST /api/carts HTTP/1.1\r\nhost: gw\r\ncontent-length: -1\r\n\r\n",
        b"POST /api/carts HTTP/1.1\r\nhost: gw\r\ncontent-length: 1x\r\n\r\n",
        b"GET /api/ping HTTP/1.1\r\nhost: gw\r\nno colon here\r\n\r\n",
        b"GET /api/ping\x01 HTTP/1.1\r\nhost: gw\r\n\r\n",
    ] {
        let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 400"), "{:?} got: {text}", String::from_utf8_lossy(raw));
    }
    assert!(upstream.seen().is_empty());
}

/// Waits (at most 10 s) for the gateway to close `stream`, with nothing more sent on it.
async fn assert_closed_by_the_gateway(stream: &mut tokio::net::TcpStream) {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the gateway closes the connection: {closed:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_its_request_head_or_body_is_disconnected() {
    let upstream = Upstream::start().await;
    let mut s = settings(GatewayRole::User, &upstream.url());
    s.header_read_timeout = Duration::from_millis(200);
    let gw = TestGateway::start(s);
    // One request answered first: the timeout counts from the end of the last exchange.
    let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut buf = Vec::new();
    stream.write_all(b"GET /api/ping HTTP/1.1\r\nhost: gw\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream, &mut buf).await.0, 200);
    stream.write_all(b"GET /api/ping HTTP/1.1\r\nhost:").await.unwrap();
    assert_closed_by_the_gateway(&mut stream).await;
    // A body shorter than its declared length, the rest never sent.
    let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    stream.write_all(b"POST /api/carts HTTP/1.1\r\nhost: gw\r\ncontent-length: 10\r\n\r\n{}").await.unwrap();
    assert_closed_by_the_gateway(&mut stream).await;
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_shutdown() {
    let upstream = Upstream::start().await;
    let mut s = settings(GatewayRole::User, &upstream.url());
    // Far longer than the test waits: the connection must close at the stop, not at the drain deadline.
    s.drain = Duration::from_secs(120);
    let gw = TestGateway::start(s);
    let mut stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut buf = Vec::new();
    stream.write_all(b"GET /api/ping HTTP/1.1\r\nhost: gw\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream, &mut buf).await.0, 200);
    let stopping = tokio::spawn(gw.stop());
    assert_closed_by_the_gateway(&mut stream).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), stopping).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
