//! End-to-end tracing: the real `gateway` and `shop` binaries export OTLP/HTTP to a receiver in
//! this test. A request sent with a known W3C `traceparent` must show up in the spans of both
//! services (propagation gateway → shop), and the shop's JSON error log must carry that trace id.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use serde_json::json;
use service_kit::{JwtSigner, Role};

mod support;
use support::{Proc, bin, free_port, recreate_database};
use test_support::{database_url, drop_database};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn wait_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(resp) = reqwest::get(url).await
            && resp.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_started_at_the_gateway_continues_in_shop_and_in_its_logs() {
    // OTLP/HTTP receiver: keeps every export body.
    let exports: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = exports.clone();
    let receiver = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let db = format!("observastack_tracing_{}", std::process::id());
    let db_url = database_url(&db);
    recreate_database(&db).await;

    let (shop_port, gw_port, gw_admin) = (free_port(), free_port(), free_port());
    // The processes get the public keys inline; the test keeps the private key to mint with.
    let keys = JwtSigner::generate().unwrap();
    let public_keys = keys.verifier().to_pem();
    let shop = Proc(
        Command::new(bin("shop"))
            .args(["--listen", &format!("127.0.0.1:{shop_port}"), "--database-url", &db_url])
            .args(["--seed-products", "200", "--seed-orders", "200", "--otlp-endpoint", &otlp])
            .env("OBSERVASTACK_JWT_PUBLIC_KEYS", &public_keys)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let gateway = Proc(
        Command::new(bin("gateway"))
            .args(["--role", "user", "--listen", &format!("127.0.0.1:{gw_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{gw_admin}")])
            .args(["--shop-url", &format!("http://127.0.0.1:{shop_port}"), "--otlp-endpoint", &otlp])
            .env("OBSERVASTACK_JWT_PUBLIC_KEYS", &public_keys)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{shop_port}/readyz")).await;
    wait_ok(&format!("http://127.0.0.1:{gw_admin}/readyz")).await;

    // Break checkout with the known-bad release, so the shop logs an error inside the trace.
    let token = keys.mint("tracing-test", Role::Instructor, Duration::from_secs(300)).unwrap();
    let http = reqwest::Client::new();
    let patched = http
        .patch(format!("http://127.0.0.1:{shop_port}/config"))
        .bearer_auth(&token)
        .json(&json!({"release": {"version": "2.4.1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let products: serde_json::Value = http
        .get(format!("http://127.0.0.1:{gw_port}/api/products?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product_id = products["items"][0]["id"].as_i64().unwrap();
    let cart: serde_json::Value =
        http.post(format!("http://127.0.0.1:{gw_port}/api/carts")).send().await.unwrap().json().await.unwrap();
    let cart_id = cart["cart_id"].as_str().unwrap();
    let added = http
        .post(format!("http://127.0.0.1:{gw_port}/api/carts/{cart_id}/items"))
        .json(&json!({"product_id": product_id, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success());
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let checkout = http
        .post(format!("http://127.0.0.1:{gw_port}/api/checkout"))
        .header("traceparent", &traceparent)
        .json(&json!({"cart_id": cart_id, "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(checkout.status().is_server_error(), "release 2.4.1 must break checkout, got {}", checkout.status());

    gateway.stop();
    let shop_logs = shop.stop();

    let needle = hex_to_bytes(TRACE_ID);
    let bodies = exports.lock().unwrap().clone();
    let carrying: Vec<&Bytes> = bodies.iter().filter(|b| b.windows(needle.len()).any(|w| w == needle)).collect();
    let has = |service: &str| carrying.iter().any(|b| b.windows(service.len()).any(|w| w == service.as_bytes()));
    assert!(has("gateway-user"), "no gateway span carried the trace id ({} exports)", bodies.len());
    assert!(has("shop"), "no shop span carried the trace id ({} exports)", bodies.len());

    let error_line = shop_logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["level"] == "ERROR" && l["trace_id"] == TRACE_ID);
    assert!(error_line.is_some(), "no ERROR log line with trace_id {TRACE_ID} in shop output:\n{shop_logs}");

    drop_database(&db).await.unwrap();
}
