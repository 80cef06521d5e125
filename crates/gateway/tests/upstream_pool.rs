//! The upstream pool: `upstream.pool_size` bounds concurrency across worker threads, waiting
//! is bounded in time and in queue length, and every upstream failure has its own answer.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, Upstream, dead_url, http, metric, settings};
use gateway::GatewayRole;
use serde_json::{Value, json};
use service_kit::Role;

const WAIT_COUNT: &str = "gateway_upstream_pool_wait_seconds_count";

fn outcome(outcome: &str) -> String {
    format!(r#"gateway_upstream_requests_total{{outcome="{outcome}",upstream="shop"}}"#)
}

async fn two_thread_gateway(upstream: &str) -> TestGateway {
    let mut s = settings(GatewayRole::User, upstream);
    s.threads = 2;
    TestGateway::start(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_one_serialises_concurrent_upstream_requests_across_threads() {
    let upstream = Upstream::start().await;
    let gw = two_thread_gateway(&upstream.url()).await;
    let patched = gw.patch_config(Role::Learner, json!({"upstream": {"pool_size": 1}})).await;
    assert_eq!(patched.status(), 200);
    gw.wait_for_metric("gateway_upstream_pool_size", 1.0).await;
    let waits_before = metric(&gw.metrics().await, WAIT_COUNT).unwrap();

    let started = Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url("/api/ping");
            // A fresh client per request: separate connections, spread over both threads.
            tokio::spawn(async move { http().get(url).header("x-test-sleep-ms", "300").send().await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "4 × 300 ms through one slot took {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.max_in_flight(), 1);
    let text = gw.metrics().await;
    assert!(metric(&text, WAIT_COUNT).unwrap() >= waits_before + 4.0, "{text}");
    assert!(metric(&text, "gateway_upstream_pool_wait_seconds_sum").unwrap() > 0.0, "{text}");
    assert_eq!(metric(&text, "gateway_upstream_pool_in_use"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_pool_lets_concurrent_requests_through_together() {
    let upstream = Upstream::start().await;
    let gw = two_thread_gateway(&upstream.url()).await;
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url("/api/ping");
            tokio::spawn(async move { http().get(url).header("x-test-sleep-ms", "300").send().await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(upstream.max_in_flight(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_for_a_slot_past_the_timeout_answers_503_with_retry_after() {
    let upstream = Upstream::start().await;
    let gw = two_thread_gateway(&upstream.url()).await;
    let patched = gw.patch_config(Role::Learner, json!({"upstream": {"pool_size": 1, "timeout_ms": 200}})).await;
    assert_eq!(patched.status(), 200);
    gw.wait_for_metric("gateway_upstream_pool_size", 1.0).await;

    // The first request's head arrives at once; its body streams for 2 s and holds the slot.
    let holder = http().get(gw.url("/api/products")).header("x-test-stream-ms", "2000").send().await.unwrap();
    assert_eq!(holder.status(), 200);
    gw.wait_for_metric("gateway_upstream_pool_in_use", 1.0).await;

    let started = Instant::now();
    let refused = http().get(gw.url("/api/ping")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited for the budget first");
    assert_eq!(refused.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()), Some("1".to_owned()));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let text = gw.metrics().await;
    assert_eq!(metric(&text, &outcome("pool_timeout")), Some(1.0), "{text}");
    assert_eq!(metric(&text, "gateway_upstream_pool_waiting"), Some(0.0), "{text}");

    // The holder's body still arrives whole, then the slot is free again.
    let held: Value = holder.json().await.unwrap();
    assert_eq!(held["path"], "/api/products");
    gw.wait_for_metric("gateway_upstream_pool_in_use", 0.0).await;
    assert_eq!(http().get(gw.url("/api/ping")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_wait_queue_refuses_the_next_request_at_once() {
    let upstream = Upstream::start().await;
    let gw = two_thread_gateway(&upstream.url()).await;
    let patched = gw.patch_config(Role::Learner, json!({"upstream": {"pool_size": 1, "max_waiting": 0}})).await;
    assert_eq!(patched.status(), 200);
    gw.wait_for_metric("gateway_upstream_pool_size", 1.0).await;

    let holder = http().get(gw.url("/api/products")).header("x-test-stream-ms", "1000").send().await.unwrap();
    gw.wait_for_metric("gateway_upstream_pool_in_use", 1.0).await;
    let refused = http().get(gw.url("/api/ping")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let text = gw.metrics().await;
    assert_eq!(metric(&text, &outcome("queue_full")), Some(1.0), "{text}");
    assert_eq!(metric(&text, &outcome("pool_timeout")), Some(0.0), "{text}");
    // Refused without waiting: the holder still has the slot.
    assert_eq!(metric(&text, "gateway_upstream_pool_in_use"), Some(1.0), "{text}");
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_slower_than_the_timeout_answers_504_and_frees_its_slot() {
    let upstream = Upstream::start().await;
    let gw = two_thread_gateway(&upstream.url()).await;
    // The size change makes the (simultaneous) timeout change observable in the metrics.
    let patched = gw.patch_config(Role::Learner, json!({"upstream": {"timeout_ms": 200, "pool_size": 255}})).await;
    assert_eq!(patched.status(), 200);
    gw.wait_for_metric("gateway_upstream_pool_size", 255.0).await;

    let resp = http().get(gw.url("/api/ping")).header("x-test-sleep-ms", "2000").send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    let text = gw.metrics().await;
    assert_eq!(metric(&text, &outcome("upstream_timeout")), Some(1.0), "{text}");
    assert_eq!(metric(&text, "gateway_upstream_pool_in_use"), Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_upstream_answers_502_as_json_without_hanging() {
    let gw = two_thread_gateway(&dead_url()).await;
    for _ in 0..3 {
        let resp = http().get(gw.url("/api/products")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_gateway");
        assert!(body["error"]["message"].as_str().unwrap().contains("shop"));
    }
    let text = gw.metrics().await;
    assert_eq!(metric(&text, &outcome("upstream_error")), Some(3.0), "{text}");
    assert_eq!(metric(&text, "gateway_upstream_pool_in_use"), Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_the_pool_releases_queued_requests() {
    let upstream = Upstream::start().await;
    let gw = two_thread_gateway(&upstream.url()).await;
    gw.patch_config(Role::Learner, json!({"upstream": {"pool_size": 1}})).await;
    gw.wait_for_metric("gateway_upstream_pool_size", 1.0).await;
    let holder = http().get(gw.url("/api/products")).header("x-test-stream-ms", "3000").send().await.unwrap();
    gw.wait_for_metric("gateway_upstream_pool_in_use", 1.0).await;
    let url = gw.url("/api/ping");
    let queued = tokio::spawn(async move { http().get(url).send().await });
    gw.wait_for_metric("gateway_upstream_pool_waiting", 1.0).await;

    gw.patch_config(Role::Learner, json!({"upstream": {"pool_size": 2}})).await;
    assert_eq!(queued.await.unwrap().unwrap().status(), 200);
    assert_eq!(upstream.seen().iter().filter(|s| s.path == "/api/ping").count(), 1);
    drop(holder);
}
