//! The observability gateway: read-only, no token, services' metrics passed through.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use common::{TestGateway, Upstream, http, settings, with_services};
use gateway::GatewayRole;
use serde_json::{Value, json};

async fn observability_gateway(upstream: &Upstream) -> TestGateway {
    let url = upstream.url();
    TestGateway::start(with_services(settings(GatewayRole::Observability, "http://127.0.0.1:1"), &[("shop", &url)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_gateway_passes_a_services_metrics_through_without_a_token() {
    let upstream = Upstream::start().await;
    let gw = observability_gateway(&upstream).await;
    let resp = http().get(gw.url("/api/services/shop/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/metrics"));
    let head = http().head(gw.url("/api/services/shop/metrics")).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_gateway_refuses_every_write_with_405() {
    let upstream = Upstream::start().await;
    let gw = observability_gateway(&upstream).await;
    for (method, path) in [
        ("POST", "/api/services/shop/metrics"),
        ("PUT", "/api/services/shop/metrics"),
        ("PATCH", "/api/services/shop/config"),
        ("DELETE", "/api/services"),
        ("POST", "/anything"),
    ] {
        let resp = http().request(method.parse().unwrap(), gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers().get("allow").unwrap(), "GET, HEAD");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_gateway_lists_services_and_hides_config() {
    let upstream = Upstream::start().await;
    let gw = observability_gateway(&upstream).await;
    let body: Value = http().get(gw.url("/api/services")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"services": [{"name": "shop", "metrics": "/api/services/shop/metrics"}]}));
    assert_eq!(http().get(gw.url("/api/services/shop/config")).send().await.unwrap().status(), 404);
    assert_eq!(http().get(gw.url("/api/services/nope/metrics")).send().await.unwrap().status(), 404);
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_gateway_serves_the_service_health_page_and_its_reads_under_facts() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let gw = TestGateway::start(with_services(
        settings(GatewayRole::Observability, "http://127.0.0.1:1"),
        &[("shop", &url), ("facts", &url)],
    ));
    for path in [
        "/facts/dashboard",
        "/facts/assets/uPlot.min.css",
        "/facts/api/v1/dashboard?service=shop&group_by=path_template",
        "/facts/api/v1/services?from=1&to=2",
    ] {
        assert_eq!(http().get(gw.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let seen: Vec<(String, Option<String>)> = upstream.seen().into_iter().map(|s| (s.path, s.query)).collect();
    assert_eq!(
        seen,
        [
            ("/dashboard".to_owned(), None),
            ("/assets/uPlot.min.css".to_owned(), None),
            ("/api/v1/dashboard".to_owned(), Some("service=shop&group_by=path_template".to_owned())),
            ("/api/v1/services".to_owned(), Some("from=1&to=2".to_owned())),
        ]
    );
    // The lake's writes and SQL stay out of reach: not routed, and every write is a 405.
    for (method, path) in [
        ("POST", "/facts/api/v1/sql"),
        ("POST", "/facts/api/v1/facts"),
        ("GET", "/facts/api/v1/sql"),
        ("GET", "/facts/"),
    ] {
        let status = http().request(method.parse().unwrap(), gw.url(path)).send().await.unwrap().status();
        assert!(status == 404 || status == 405, "{method} {path}: {status}");
    }
    assert_eq!(upstream.seen().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_gateway_without_a_lake_answers_404_on_the_service_health_page() {
    let upstream = Upstream::start().await;
    let gw = observability_gateway(&upstream).await;
    let resp = http().get(gw.url("/facts/dashboard")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("facts"), "{body}");
    assert!(upstream.seen().is_empty());
}
