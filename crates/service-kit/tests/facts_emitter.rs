//! The RequestFact emitter: facts carry the route template, arrive in batches, and a dead or
//! stuck facts service costs dropped facts (counted), never a failed or waiting request.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::{get, post};
use service_kit::Metrics;
use service_kit::facts::{FactEmitter, FactsTarget};
use tower::ServiceExt as _;

fn app(metrics: Arc<Metrics>) -> Router {
    let router = Router::new().route("/items/{id}", get(|| async { "ok" }));
    service_kit::app::observed(router, metrics)
}

async fn call(router: &Router, uri: &str) -> StatusCode {
    let req = Request::get(uri).header("user-agent", "Mozilla/5.0 Firefox/140.0").body(Body::empty()).unwrap();
    router.clone().oneshot(req).await.unwrap().status()
}

fn dropped(metrics: &Metrics, reason: &str) -> u64 {
    let text = metrics.render();
    text.lines()
        .find(|l| l.starts_with("observastack_facts_dropped_total") && l.contains(&format!("reason=\"{reason}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn eventually(mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met");
}

type Received = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// A facts sink recording each fact with the `Authorization` header of its batch; it answers
/// `status`.
async fn sink(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let sink = Router::new()
        .route(
            "/api/v1/facts",
            post(move |State(r): State<Received>, headers: HeaderMap, body: String| async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
                let batch: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                r.lock().unwrap().extend(batch.into_iter().map(|f| (auth.clone(), f)));
                (status, "{}")
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sink).await });
    (url, received)
}

#[tokio::test]
async fn facts_are_batched_with_the_route_template_never_the_raw_path_and_carry_the_service_token() {
    let (url, received) = sink(StatusCode::OK).await;
    let target = FactsTarget::new(url, Some("service-token".to_owned()));
    let metrics = Metrics::with_facts_target("shop", Some(target));
    let router = app(metrics.clone());
    for id in 0..5 {
        assert_eq!(call(&router, &format!("/items/{id}?colour=red")).await, StatusCode::OK);
    }
    assert_eq!(call(&router, "/nowhere/42").await, StatusCode::NOT_FOUND);
    eventually(|| received.lock().unwrap().len() >= 5).await;
    let facts = received.lock().unwrap().clone();
    assert_eq!(facts.len(), 5, "unmatched routes are not reported");
    for (auth, fact) in &facts {
        assert_eq!(auth.as_deref(), Some("Bearer service-token"));
        assert_eq!(fact["path_template"], "/items/{id}");
        assert_eq!(fact["service"], "shop");
        assert_eq!(fact["method"], "GET");
        assert_eq!(fact["status_code"], 200);
        assert_eq!(fact["user_agent_family"], "Firefox");
        assert!(fact["latency_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(uuid::Uuid::parse_str(fact["event_id"].as_str().unwrap()).unwrap().get_version_num(), 7);
    }
    assert_eq!(dropped(&metrics, "send_failed"), 0);
}

#[tokio::test]
async fn facts_the_lake_refuses_for_their_token_are_counted_as_unauthorized() {
    let (url, received) = sink(StatusCode::UNAUTHORIZED).await;
    let metrics = Metrics::with_facts_url("shop", Some(&url));
    let router = app(metrics.clone());
    for id in 0..3 {
        assert_eq!(call(&router, &format!("/items/{id}")).await, StatusCode::OK);
    }
    eventually(|| dropped(&metrics, "unauthorized") == 3).await;
    assert!(received.lock().unwrap().iter().all(|(auth, _)| auth.is_none()), "no token, no header");
    assert_eq!(dropped(&metrics, "rejected"), 0);
}

#[tokio::test]
async fn a_dead_facts_service_costs_counted_facts_not_requests() {
    // A closed port: every send fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = Metrics::with_facts_url("shop", Some(&format!("http://127.0.0.1:{port}")));
    let router = app(metrics.clone());
    for id in 0..50 {
        assert_eq!(call(&router, &format!("/items/{id}")).await, StatusCode::OK);
    }
    eventually(|| dropped(&metrics, "send_failed") == 50).await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    // A listener that never answers: the sender task is stuck in its first POST while the
    // request path keeps queueing without waiting.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", blackhole.local_addr().unwrap());
    let (emitter, counter) = FactEmitter::start("shop", &FactsTarget::new(url, None), 10).unwrap();
    let ua = axum::http::HeaderValue::from_static("curl/8");
    for _ in 0..1_000 {
        emitter.emit("/items/{id}", &axum::http::Method::GET, 200, Duration::from_millis(3), Some(&ua));
    }
    // Single-threaded test runtime and no await above: the sender never ran, so exactly the
    // queue's capacity was kept and the rest dropped, each counted.
    assert_eq!(counter.with_label_values(&["queue_full"]).get(), 990);
    drop(blackhole);
}
