//! Slow and hostile clients against the real user gateway, the shop behind it and the
//! services' `/config`: slow-loris heads are cut at the header read timeout while others are
//! served, oversized heads get 431, huge bodies 413 before they are read, and non-UTF-8 or
//! deeply nested JSON a 400 that names the body. Raw TCP where a real client would refuse to
//! misbehave.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use service_kit::Role;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{HEADER_READ_TIMEOUT, Stack, fixture_scenarios};

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Sends `head` (and nothing more), then reads until the server closes or `within` passes.
/// Returns the status of the first response line, if any arrived.
async fn raw(url: &str, head: &[u8], within: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(host(url)).await.unwrap();
    // A server may answer and close before it read everything: a failed write is fine.
    let _ = stream.write_all(head).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_cut_at_the_header_read_timeout_while_others_are_served() {
    let stack = Stack::start(fixture_scenarios()).await;
    let started = Instant::now();
    let loris: Vec<_> = (0..20)
        .map(|_| {
            let addr = host(&stack.gateway_url).to_owned();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.unwrap();
                stream.write_all(b"GET /api/ping HTTP/1.1\r\nHost: loris\r\nX-Slow: ").await.unwrap();
                let opened = Instant::now();
                let mut buf = [0u8; 512];
                // One byte every 100 ms, never finishing the head, until the server hangs up.
                loop {
                    if stream.write_all(b"a").await.is_err() {
                        return opened.elapsed();
                    }
                    if let Ok(read) = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
                        match read {
                            Ok(n) if n > 0 => {}
                            _ => return opened.elapsed(),
                        }
                    }
                    assert!(
                        opened.elapsed() < Duration::from_secs(30),
                        "a slow-loris connection is still open after 30 s"
                    );
                }
            })
        })
        .collect();
    // Meanwhile ordinary clients keep being served.
    let mut served = 0;
    while started.elapsed() < HEADER_READ_TIMEOUT {
        let resp = stack.http.get(format!("{}/api/ping", stack.gateway_url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "only {served} requests served beside the slow-loris clients");
    for l in loris {
        let lived = l.await.unwrap();
        // Cut by the timeout (not at once, not never), with room for a busy machine.
        assert!(lived >= HEADER_READ_TIMEOUT - Duration::from_millis(300), "closed after only {lived:?}");
        assert!(lived <= HEADER_READ_TIMEOUT + Duration::from_secs(5), "closed only after {lived:?}");
    }
    let resp = stack.http.get(format!("{}/api/ping", stack.gateway_url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    stack.stop().await;
}

/// Every HTTP listener of the stack: the user gateway (public and admin), shop, runner and
/// orchestrator.
fn listeners(stack: &Stack) -> Vec<(&'static str, String)> {
    vec![
        ("user gateway", stack.gateway_url.clone()),
        ("gateway admin", stack.gateway_admin_url.clone()),
        ("shop", stack.shop_url.clone()),
        ("runner", stack.runner_url.clone()),
        ("orchestrator", stack.orchestrator_url.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_and_the_server_keeps_serving() {
    let stack = Stack::start(fixture_scenarios()).await;
    for (name, url) in listeners(&stack) {
        // Too many headers: a small head, read whole, refused with 431.
        let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for i in 0..300 {
            head.push_str(&format!("X-Many-{i}: y\r\n"));
        }
        head.push_str("\r\n");
        let status = raw(&url, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(matches!(status, Some(431 | 400)), "{name}: 300 headers answered {status:?}");

        // One 1 MiB header: past the head buffer. Refused (431) or cut; never served.
        let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(1024 * 1024));
        let status = raw(&url, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(matches!(status, None | Some(431 | 400)), "{name}: a 1 MiB header answered {status:?}");

        let healthz = if name == "user gateway" { "/api/ping" } else { "/healthz" };
        let resp = stack.http.get(format!("{url}{healthz}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{name} still serves");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_refused_with_413_before_it_is_sent() {
    let stack = Stack::start(fixture_scenarios()).await;
    let token = stack.token(Role::Instructor);
    // 1 GiB declared, nothing sent: an answer can only come from the declared length.
    let targets = [
        ("user gateway", stack.gateway_url.clone(), "POST /api/carts/00000000-0000-0000-0000-000000000001/items"),
        ("shop", stack.shop_url.clone(), "POST /api/carts/00000000-0000-0000-0000-000000000001/items"),
        ("shop /config", stack.shop_url.clone(), "PATCH /config"),
        ("gateway /config", stack.gateway_admin_url.clone(), "PATCH /config"),
        ("runner /config", stack.runner_url.clone(), "PATCH /config"),
        ("orchestrator runs", stack.orchestrator_url.clone(), "POST /api/runs"),
    ];
    for (name, url, request) in targets {
        let head = format!(
            "{request} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: 1073741824\r\n\r\n"
        );
        let started = Instant::now();
        let status = raw(&url, head.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(status, Some(413), "{name}: 1 GiB declared answered {status:?} after {:?}", started.elapsed());
    }
    stack.stop().await;
}

async fn send_json(stack: &Stack, method: reqwest::Method, url: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = stack
        .http
        .request(method, url)
        .bearer_auth(stack.token(Role::Instructor))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_and_deeply_nested_json_get_a_400_naming_the_body() {
    let stack = Stack::start(fixture_scenarios()).await;
    let cart = stack.http.post(format!("{}/api/carts", stack.gateway_url)).send().await.unwrap();
    assert_eq!(cart.status(), StatusCode::CREATED);
    let cart_id = cart.json::<Value>().await.unwrap()["cart_id"].as_str().unwrap().to_owned();
    let targets = [
        ("user gateway → shop", reqwest::Method::POST, format!("{}/api/carts/{cart_id}/items", stack.gateway_url)),
        ("shop /config", reqwest::Method::PATCH, format!("{}/config", stack.shop_url)),
        ("gateway /config", reqwest::Method::PATCH, format!("{}/config", stack.gateway_admin_url)),
        ("runner /config", reqwest::Method::PATCH, format!("{}/config", stack.runner_url)),
        ("orchestrator runs", reqwest::Method::POST, format!("{}/api/runs", stack.orchestrator_url)),
    ];
    let bodies: [(&str, Vec<u8>); 4] = [
        ("non-UTF-8 string", b"{\"product_id\": \"\xff\xfe\xfd\", \"quantity\": 1}".to_vec()),
        ("non-UTF-8 key", b"{\"\xc3\x28\": 1}".to_vec()),
        ("10 000 nested arrays", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()),
        ("5 000 nested objects", format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes()),
    ];
    for (name, method, url) in &targets {
        for (what, body) in &bodies {
            let (status, body) = send_json(&stack, method.clone(), url, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}, {what}: {body}");
            let field = body["error"]["details"][0]["field"].as_str().unwrap_or_default();
            assert!(!field.is_empty(), "{name}, {what}: the rejection names a field: {body}");
        }
    }
    // Nothing was half-applied: the cart is still empty, the configs still answer.
    let cart = stack.http.get(format!("{}/api/carts/{cart_id}", stack.gateway_url)).send().await.unwrap();
    assert_eq!(cart.status(), StatusCode::OK);
    let cart: Value = cart.json().await.unwrap();
    assert_eq!(cart["item_count"], 0, "{cart}");
    stack.stop().await;
}
