//! The gateway's own `/config` on the admin listener: validated, role-checked, applied live.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use common::{TestGateway, Upstream, http, metric, settings, token};
use gateway::GatewayRole;
use serde_json::{Value, json};
use service_kit::Role;

async fn config_values(gw: &TestGateway) -> Value {
    let resp = http().get(gw.admin_url("/config")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_pool_size_is_refused_naming_the_field_and_nothing_changes() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let before = config_values(&gw).await;
    assert_eq!(before["values"]["upstream"], json!({"pool_size": 256, "timeout_ms": 10000, "max_waiting": 10000}));
    for bad in [0, 4097] {
        let resp = gw.patch_config(Role::Learner, json!({"upstream": {"pool_size": bad}})).await;
        assert_eq!(resp.status(), 400, "pool_size {bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["details"][0]["field"], "upstream.pool_size", "{body}");
    }
    let resp = gw.patch_config(Role::Learner, json!({"upstream": {"timeout_ms": 0, "max_waiting": 100001}})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let fields: Vec<&str> =
        body["error"]["details"].as_array().unwrap().iter().filter_map(|d| d["field"].as_str()).collect();
    assert_eq!(fields, ["upstream.max_waiting", "upstream.timeout_ms"]);
    let resp = gw.patch_config(Role::Learner, json!({"upstream": {"pool_szie": 3}})).await;
    assert_eq!(resp.status(), 400);

    let after = config_values(&gw).await;
    assert_eq!(after["values"], before["values"]);
    assert_eq!(after["revision"], 1);
    assert_eq!(metric(&gw.metrics().await, "gateway_upstream_pool_size"), Some(256.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_may_not_set_faults_but_an_instructor_may() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let fault = json!({"faults": {"GET /api/ping": {"error_rate": 1.0}}});
    let resp = gw.patch_config(Role::Learner, fault.clone()).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["details"][0]["field"].as_str().unwrap().starts_with("faults"), "{body}");
    assert_eq!(http().get(gw.url("/api/ping")).send().await.unwrap().status(), 200);

    let resp = gw.patch_config(Role::Instructor, fault).await;
    assert_eq!(resp.status(), 200);
    // The fault switch follows the change asynchronously; poll until it bites.
    let mut status = 200;
    for _ in 0..200 {
        status = http().get(gw.url("/api/ping")).send().await.unwrap().status().as_u16();
        if status == 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, 500);
    assert_eq!(http().get(gw.url("/api/products")).send().await.unwrap().status(), 200, "other routes unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_keys_must_name_a_route_of_this_gateway() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let resp = gw.patch_config(Role::Instructor, json!({"faults": {"GET /api/services": {"latency_ms": 10}}})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["rule"], "known_route", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_serves_health_and_metrics_openly_and_config_only_with_a_token() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    assert_eq!(http().get(gw.admin_url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http().get(gw.admin_url("/config")).send().await.unwrap().status(), 401);
    assert_eq!(http().get(gw.admin_url("/config/schema")).send().await.unwrap().status(), 401);
    let schema: Value = http()
        .get(gw.admin_url("/config/schema"))
        .bearer_auth(token(Role::Learner))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(schema["$defs"]["UpstreamConfig"]["properties"]["pool_size"]["maximum"], 4096, "{schema}");
    let text = gw.metrics().await;
    for series in [
        "gateway_upstream_pool_size",
        "gateway_upstream_pool_in_use",
        "gateway_upstream_pool_waiting",
        "gateway_upstream_pool_wait_seconds_count",
        "observastack_build_info",
        "observastack_config_revision",
    ] {
        assert!(metric(&text, series).is_some(), "{series} missing:\n{text}");
    }
    assert!(text.contains(r#"service="gateway-user""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_and_observability_gateways_keep_their_learner_knobs() {
    let upstream = Upstream::start().await;
    for role in [GatewayRole::User, GatewayRole::Observability] {
        let gw = TestGateway::start(settings(role, &upstream.url()));
        let knobs = json!({"upstream": {"pool_size": 8, "timeout_ms": 2000, "max_waiting": 50}});
        let resp = gw.patch_config(Role::Learner, knobs.clone()).await;
        assert_eq!(resp.status(), 200, "{role:?}");
        assert_eq!(config_values(&gw).await["values"]["upstream"], knobs["upstream"], "{role:?}");
    }
}

// Found by the contract run: the admin listener answered unknown paths with an empty 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_unknown_paths_and_methods_in_json() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::Control, &upstream.url()));
    let resp = http().get(gw.admin_url("/config/nope")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let resp = http().post(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}
