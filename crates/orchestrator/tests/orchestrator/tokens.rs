//! The orchestrator's keys and roles: it mints with the stack's private key and refuses to
//! start with one the services would not trust; a `service` token (a fact emitter's) opens
//! none of its routes.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::{JwtKeys, JwtSigner, Role};
use test_support::{public_keys, signer};

use crate::helpers::{Stack, fixture_scenarios};

#[tokio::test]
async fn a_service_token_opens_no_orchestrator_route() {
    let stack = Stack::start(fixture_scenarios()).await;
    let service = stack.token(Role::Service);
    for (method, path) in [
        ("GET", "/api/scenarios"),
        ("GET", "/api/runs"),
        ("GET", "/api/runs/current"),
        ("POST", "/api/runs"),
        ("POST", "/api/runs/current/stop"),
        ("POST", "/api/reset"),
        ("GET", "/api/ws"),
    ] {
        let resp = stack
            .http
            .request(method.parse().unwrap(), stack.url(path))
            .bearer_auth(&service)
            .json(&json!({"scenario": "fixture"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
    }
    // Nor as the console's cookie.
    let resp = stack
        .http
        .get(stack.url("/api/scenarios"))
        .header("cookie", format!("observastack_token={service}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let runs = stack.get_json("/api/runs").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "nothing was started: {runs}");
    stack.stop().await;
}

async fn build_error(jwt_keys: JwtKeys, jwt_signer: Option<Arc<JwtSigner>>) -> String {
    let settings = orchestrator::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        jwt_keys,
        jwt_signer,
        ..orchestrator::Settings::default()
    };
    match orchestrator::Application::build(settings).await {
        Ok(_) => panic!("the orchestrator built"),
        Err(err) => format!("{err:#}"),
    }
}

#[tokio::test]
async fn the_orchestrator_refuses_to_start_with_a_private_key_the_services_would_not_trust() {
    let none = build_error(public_keys(), None).await;
    assert!(none.contains("OBSERVASTACK_JWT_PRIVATE_KEY"), "{none}");

    let stranger = Arc::new(JwtSigner::generate().unwrap());
    let unknown = build_error(public_keys(), Some(stranger.clone())).await;
    assert!(unknown.contains(stranger.kid()) && unknown.contains("not among the public keys"), "{unknown}");

    let a_minute = chrono::Utc::now() + chrono::Duration::minutes(1);
    let rotated_out = JwtKeys::new(vec![stranger.public_key(), signer().public_key().retired_at(a_minute)]).unwrap();
    let retired = build_error(rotated_out, Some(signer().clone())).await;
    assert!(retired.contains("retired"), "{retired}");
}
