//! Hostile callers: a matrix of forged and misused tokens against the control gateway, and
//! every control, observability and internal route (enumerated from the checked-in OpenAPI
//! documents) tried on the user gateway. Nothing may reach the upstream.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{SECRET, TestGateway, Upstream, http, settings, token, with_services};
use gateway::GatewayRole;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use service_kit::Role;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims the stack would mint for an instructor, valid for a minute; cases bend one field.
fn claims() -> Value {
    let now = now();
    json!({"sub": "eve", "role": "instructor", "aud": "observastack", "iss": "observastack",
           "iat": now, "nbf": now, "exp": now + 60})
}

fn signed(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn foreign_signed(claims: &Value) -> String {
    let key = EncodingKey::from_secret(b"not-the-stack-secret-not-the-stack-secret");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn with(field: &str, value: Value) -> Value {
    let mut c = claims();
    c[field] = value;
    c
}

fn without(field: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(field);
    c
}

/// A token whose header and payload are chosen freely, with `signature` appended as is.
fn raw(header: &Value, payload: &Value, signature: &str) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", enc(header), enc(payload))
}

/// A valid learner token with its payload rewritten to claim the instructor role; the
/// signature is the original one.
fn tampered() -> String {
    let learner = token(Role::Learner);
    let mut parts = learner.split('.');
    let (header, payload, signature) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["role"] = json!("instructor");
    format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

async fn control_gateway(upstream: &Upstream) -> TestGateway {
    let services = [("shop", upstream.url()), ("orchestrator", upstream.url())];
    let services: Vec<(&str, &str)> = services.iter().map(|(n, u)| (*n, u.as_str())).collect();
    TestGateway::start(with_services(settings(GatewayRole::Control, "http://127.0.0.1:1"), &services))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_or_misused_token_is_refused_with_401_and_reaches_nothing() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let hour_ago = now() - 3600;
    let in_an_hour = now() + 3600;
    // HS256 is pinned. The stack has no asymmetric key, so "HS256 signed with the public key"
    // has no key to abuse; its relatives (another algorithm naming the same secret, an
    // asymmetric algorithm in the header) are in the matrix.
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", raw(&json!({"alg": "none", "typ": "JWT"}), &claims(), ""), "malformed"),
        ("alg None with a signature", raw(&json!({"alg": "None"}), &claims(), "c2ln"), "malformed"),
        ("HS512 with the stack's secret", signed(Algorithm::HS512, &claims()), "algorithm"),
        ("HS384 with the stack's secret", signed(Algorithm::HS384, &claims()), "algorithm"),
        (
            "RS256 header, made-up signature",
            raw(&json!({"alg": "RS256", "typ": "JWT"}), &claims(), "c2ln"),
            "algorithm",
        ),
        (
            "ES256 header, made-up signature",
            raw(&json!({"alg": "ES256", "typ": "JWT"}), &claims(), "c2ln"),
            "algorithm",
        ),
        ("wrong secret", foreign_signed(&claims()), "signature"),
        ("tampered payload (learner → instructor)", tampered(), "signature"),
        ("wrong audience", signed(Algorithm::HS256, &with("aud", json!("grafana"))), "audience"),
        ("wrong issuer", signed(Algorithm::HS256, &with("iss", json!("someone-else"))), "issuer"),
        ("expired", signed(Algorithm::HS256, &with("exp", json!(hour_ago))), "expired"),
        ("not yet valid", signed(Algorithm::HS256, &with("nbf", json!(in_an_hour))), "not yet valid"),
        ("no exp", signed(Algorithm::HS256, &without("exp")), "`exp`"),
        ("no audience", signed(Algorithm::HS256, &without("aud")), "`aud`"),
        ("unknown role", signed(Algorithm::HS256, &with("role", json!("admin"))), "unknown variant `admin`"),
        ("no role", signed(Algorithm::HS256, &without("role")), "missing field `role`"),
        ("garbage", "not.a.jwt".to_owned(), "malformed"),
        ("empty", String::new(), ""),
    ];
    for (case, token, why) in &cases {
        for (method, path) in
            [("GET", "/api/services/shop/config"), ("PATCH", "/api/services/shop/config"), ("GET", "/api/runs")]
        {
            let resp = http()
                .request(method.parse().unwrap(), gw.url(path))
                .header("authorization", format!("Bearer {token}"))
                .json(&json!({"faults": null}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{case}: {method} {path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{case}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(why), "{case}: the message names why: {message}");
        }
    }
    // A valid token where it is not accepted: the query string (it would end up in logs).
    let valid = token(Role::Instructor);
    for param in ["access_token", "token", "jwt"] {
        let resp = http().get(gw.url(&format!("/api/services/shop/config?{param}={valid}"))).send().await.unwrap();
        assert_eq!(resp.status(), 401, "token in ?{param}=");
    }
    assert!(upstream.seen().is_empty(), "nothing reached the services: {:?}", upstream.seen());

    // The same token in the header passes: the matrix is not refusing everything.
    let resp = http().get(gw.url("/api/services/shop/config")).bearer_auth(&valid).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen().len(), 1);
}

fn api_doc(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `(METHOD, concrete path)` of every operation in an OpenAPI document, with `prefix` put in
/// front of its paths (how the control gateway exposes a service's own routes).
fn operations(doc: &Value, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path: String =
            template.split('/').map(|seg| if seg.starts_with('{') { "1" } else { seg }).collect::<Vec<_>>().join("/");
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.push((method.to_uppercase(), format!("{prefix}{path}")));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_gateway_reaches_no_control_observability_or_internal_route() {
    let user_paths: Vec<(String, String)> = operations(&api_doc("gateway-user.json"), "");
    let mut hostile = Vec::new();
    for doc in ["gateway-control.json", "gateway-observability.json"] {
        hostile.extend(operations(&api_doc(doc), ""));
    }
    // The services' own routes, as they exist on the services' listeners, and as the
    // control/observability gateways expose them.
    for (doc, service) in [("internal.json", "shop"), ("runner.json", "runner"), ("orchestrator.json", "orchestrator")]
    {
        let ops = operations(&api_doc(doc), "");
        hostile.extend(ops.iter().map(|(m, p)| (m.clone(), format!("/api/services/{service}{p}"))));
        hostile.extend(ops);
    }
    hostile.retain(|op| !user_paths.contains(op));
    hostile.sort();
    hostile.dedup();
    assert!(hostile.len() >= 30, "the documents list the control surface: {hostile:?}");

    let upstream = Upstream::start().await;
    let gw = TestGateway::start(settings(GatewayRole::User, &upstream.url()));
    let token = token(Role::Instructor);
    for (method, path) in &hostile {
        let resp = http()
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        // 405 only where the path is a business route under another method.
        let business_path = user_paths.iter().any(|(_, p)| p == path);
        assert!(status == 404 || (business_path && status == 405), "{method} {path} answered {status}");
    }
    assert!(upstream.seen().is_empty(), "nothing may reach the shop: {:?}", upstream.seen());
    // Sanity: a business route does pass.
    assert_eq!(http().get(gw.url("/api/products")).send().await.unwrap().status(), 200);
}
