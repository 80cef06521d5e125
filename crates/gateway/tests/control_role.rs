//! The control gateway: every route but `/healthz` needs the stack's JWT, and the caller's
//! token travels on to the service's `/config`.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use common::{TestGateway, Upstream, http, settings, token, with_services};
use gateway::GatewayRole;
use serde_json::{Value, json};
use service_kit::{JwtSigner, Role};

async fn control_gateway(upstream: &Upstream) -> TestGateway {
    let services = [("shop", upstream.url()), ("gateway-user", upstream.url())];
    let services: Vec<(&str, &str)> = services.iter().map(|(n, u)| (*n, u.as_str())).collect();
    TestGateway::start(with_services(settings(GatewayRole::Control, "http://127.0.0.1:1"), &services))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_refuses_requests_without_a_token() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    for path in ["/api/services", "/api/services/shop/config", "/api/services/shop/config/schema", "/unknown"] {
        let resp = http().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert!(resp.headers().contains_key("www-authenticate"), "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
    let patch = http().patch(gw.url("/api/services/shop/config")).json(&json!({"a": 1})).send().await.unwrap();
    assert_eq!(patch.status(), 401);
    assert_eq!(http().get(gw.url("/healthz")).send().await.unwrap().status(), 200);
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_refuses_a_forged_token() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let forger = JwtSigner::generate().unwrap();
    let forged = forger.mint("eve", Role::Instructor, Duration::from_secs(60)).unwrap();
    let resp = http().get(gw.url("/api/services/shop/config")).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http()
        .patch(gw.url("/api/services/shop/config"))
        .bearer_auth(&forged)
        .json(&json!({"faults": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_forwards_a_learner_patch_to_the_service_config_with_the_callers_token() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let learner = token(Role::Learner);
    let patch = json!({"db": {"pool_size": 4}});
    let resp =
        http().patch(gw.url("/api/services/shop/config")).bearer_auth(&learner).json(&patch).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(seen[0].path, "/config");
    assert_eq!(seen[0].headers.get("authorization").unwrap().to_str().unwrap(), format!("Bearer {learner}"));
    assert_eq!(serde_json::from_slice::<Value>(&seen[0].body).unwrap(), patch);

    // Sub-resources and queries arrive as they were asked for.
    let resp = http()
        .get(gw.url("/api/services/gateway-user/config/history?limit=5"))
        .bearer_auth(&learner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen[1].path, "/config/history");
    assert_eq!(seen[1].query.as_deref(), Some("limit=5"));

    for method in ["PUT", "DELETE"] {
        let resp = http()
            .request(method.parse().unwrap(), gw.url("/api/services/shop/config"))
            .bearer_auth(&learner)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
    }
    assert_eq!(
        upstream.seen().iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["PATCH", "GET", "PUT", "DELETE"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_accepts_the_console_cookie() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let resp = http()
        .get(gw.url("/api/services/shop/config"))
        .header("cookie", format!("theme=dark; observastack_token={}", token(Role::Learner)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_answers_404_naming_an_unknown_service() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let resp =
        http().get(gw.url("/api/services/billing/config")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("billing") && message.contains("shop"), "{message}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_lists_the_services_it_fronts() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let resp = http().get(gw.url("/api/services")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"services": [
            {"name": "gateway-user", "config": "/api/services/gateway-user/config"},
            {"name": "shop", "config": "/api/services/shop/config"},
        ]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_does_not_forward_business_routes() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let resp = http().get(gw.url("/api/products")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(upstream.seen().is_empty());
}

async fn control_gateway_with_orchestrator(upstream: &Upstream) -> TestGateway {
    let url = upstream.url();
    let services = [("shop", url.as_str()), ("orchestrator", url.as_str())];
    TestGateway::start(with_services(settings(GatewayRole::Control, "http://127.0.0.1:1"), &services))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_forwards_the_console_pages_without_a_token() {
    let upstream = Upstream::start().await;
    let gw = control_gateway_with_orchestrator(&upstream).await;
    for path in ["/", "/console", "/console/", "/console/login?code=abc", "/console/assets/index-1.js"] {
        let resp = http().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let paths: Vec<String> = upstream.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/", "/console", "/console/", "/console/login", "/console/assets/index-1.js"]);
    assert_eq!(upstream.seen()[3].query.as_deref(), Some("code=abc"));
    // The orchestrator's API next door still needs a token.
    assert_eq!(http().get(gw.url("/api/runs")).send().await.unwrap().status(), 401);
    // Found by the contract run: `Allow` listed POST for every console page.
    let resp = http().post(gw.url("/console/login")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET,HEAD"));
    let resp = http().post(gw.url("/console/logout")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the one console POST is forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_refuses_cookie_writes_without_the_csrf_header() {
    let upstream = Upstream::start().await;
    let gw = control_gateway_with_orchestrator(&upstream).await;
    let cookie = format!("observastack_token={}", token(Role::Learner));
    let patch = json!({"db": {"pool_size": 4}});

    let resp =
        http().patch(gw.url("/api/services/shop/config")).header("cookie", &cookie).json(&patch).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["field"], "x-observastack-csrf");
    let resp = http().post(gw.url("/api/reset")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(upstream.seen().is_empty(), "nothing reached a service");

    // From another site, even a read (and so the WebSocket handshake) is refused.
    let resp = http()
        .get(gw.url("/api/runs/current"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(upstream.seen().is_empty());

    // The console's own requests pass: same origin, the header set.
    let origin = gw.url("");
    let resp = http()
        .patch(gw.url("/api/services/shop/config"))
        .header("cookie", &cookie)
        .header("origin", origin.trim_end_matches('/'))
        .header("x-observastack-csrf", "1")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A bearer token is no ambient credential: CLI and curl need no header.
    let resp = http()
        .patch(gw.url("/api/services/shop/config"))
        .bearer_auth(token(Role::Learner))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_serves_a_services_metrics_with_a_token() {
    let upstream = Upstream::start().await;
    let gw = control_gateway_with_orchestrator(&upstream).await;
    assert_eq!(http().get(gw.url("/api/services/shop/metrics")).send().await.unwrap().status(), 401);
    let resp = http().get(gw.url("/api/services/shop/metrics")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen()[0].path, "/metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_gateway_marks_every_config_request_it_forwards_overwriting_a_client_sent_mark() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let learner = token(Role::Learner);
    let resp = http()
        .patch(gw.url("/api/services/shop/config"))
        .bearer_auth(&learner)
        .header("x-observastack-through", "somewhere-else")
        .header("x-observastack-client", "cli")
        .json(&json!({"db": {"pool_size": 4}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http().get(gw.url("/api/services/shop/config/history")).bearer_auth(&learner).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.seen();
    for request in &seen {
        let marks: Vec<&str> =
            request.headers.get_all("x-observastack-through").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(marks, ["control-gateway"], "{} {}", request.method, request.path);
    }
    // The client's own name travels on untouched.
    assert_eq!(seen[0].headers.get("x-observastack-client").unwrap(), "cli");
}

/// A second gateway whose own `/config` the control gateway under test fronts, as
/// `gateway-user` and `gateway-control` (a stand-in for the control gateway's own admin
/// listener, which is bound only once the gateway is built).
async fn fronting(role: GatewayRole, name: &str) -> (TestGateway, TestGateway) {
    let upstream = Upstream::start().await;
    let fronted = TestGateway::start(with_services(settings(role, &upstream.url()), &[]));
    let admin = fronted.admin_url("");
    let control = TestGateway::start(with_services(
        settings(GatewayRole::Control, "http://127.0.0.1:1"),
        &[(name, admin.trim_end_matches('/'))],
    ));
    (fronted, control)
}

async fn history(gw: &TestGateway) -> Vec<Value> {
    let resp = http().get(gw.admin_url("/config/history")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_entries_say_whether_a_change_came_directly_or_through_the_control_gateway() {
    let (user, control) = fronting(GatewayRole::User, "gateway-user").await;
    let learner = token(Role::Learner);
    let resp = http()
        .patch(control.url("/api/services/gateway-user/config"))
        .bearer_auth(&learner)
        .header("x-observastack-client", "cli")
        .json(&json!({"upstream": {"pool_size": 8}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http()
        .patch(user.admin_url("/config"))
        .bearer_auth(&learner)
        .header("user-agent", "curl/8.5.0")
        .json(&json!({"upstream": {"pool_size": 9}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let entries = history(&user).await;
    let seen: Vec<(u64, &str, &Value)> = entries
        .iter()
        .map(|e| (e["revision"].as_u64().unwrap(), e["client"].as_str().unwrap(), &e["through"]))
        .collect();
    assert_eq!(seen, [(3, "curl", &Value::Null), (2, "cli", &json!("control-gateway"))]);
    // The control path serves the same history.
    let through: Vec<Value> = http()
        .get(control.url("/api/services/gateway-user/config/history"))
        .bearer_auth(&learner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(through, entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_may_not_change_the_control_gateway_and_the_refusal_says_why() {
    let (target, control) = fronting(GatewayRole::Control, "gateway-control").await;
    let learner = token(Role::Learner);
    for patch in [json!({"upstream": {"timeout_ms": 1}}), json!({"upstream": {"pool_size": 1, "max_waiting": 0}})] {
        let resp = http()
            .patch(control.url("/api/services/gateway-control/config"))
            .bearer_auth(&learner)
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{patch}");
        let body: Value = resp.json().await.unwrap();
        let fields: Vec<&str> =
            body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
        assert!(fields.iter().all(|f| f.starts_with("upstream.")) && !fields.is_empty(), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`upstream."), "{message}");
        assert!(message.contains(gateway::config::CONTROL_INSTRUCTOR_ONLY_REASON), "{message}");
    }
    // Directly on the admin listener, and by reset, too.
    let resp = target.patch_config(Role::Learner, json!({"upstream": {"timeout_ms": 1}})).await;
    assert_eq!(resp.status(), 403);
    let resp = http().delete(target.admin_url("/config")).bearer_auth(&learner).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a reset to the defaults changes nothing, so there is nothing to refuse");
    assert!(history(&target).await.is_empty());

    // The instructor (the orchestrator, `POST /api/reset`) still may.
    let resp = target.patch_config(Role::Instructor, json!({"upstream": {"timeout_ms": 5000}})).await;
    assert_eq!(resp.status(), 200);
    let resp = http().delete(target.admin_url("/config")).bearer_auth(&learner).send().await.unwrap();
    assert_eq!(resp.status(), 403, "a learner's reset would change an instructor-only field");
    let resp = http().delete(target.admin_url("/config")).bearer_auth(token(Role::Instructor)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["values"]["upstream"]["timeout_ms"], 10000);
}
