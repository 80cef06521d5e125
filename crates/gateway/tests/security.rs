//! Hostile callers: a matrix of forged and misused tokens against the control gateway, and
//! every control, observability and internal route (enumerated from the checked-in OpenAPI
//! documents) tried on the user gateway. Nothing may reach the upstream.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{TestGateway, Upstream, http, settings, token, with_services};
use gateway::GatewayRole;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use service_kit::{JwtKeys, JwtSigner, Role};
use test_support::signer;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims the stack would mint for an instructor, valid for a minute; cases bend one field.
fn claims() -> Value {
    let now = now();
    json!({"sub": "eve", "role": "instructor", "aud": "observastack", "iss": "observastack",
           "iat": now, "nbf": now, "exp": now + 60})
}

/// Signed with the stack's private key, under its `kid`: what the orchestrator would mint.
fn signed(claims: &Value) -> String {
    signer().sign_claims(claims).unwrap()
}

/// The stack's public key as each form an attacker might read it in: the PEM file (with its
/// `# kid:` line), the bare PEM, the SPKI DER and the raw 32 bytes.
fn public_key_forms() -> Vec<(&'static str, Vec<u8>)> {
    let file = signer().public_key().to_pem();
    let pem: String = file.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let raw = der[der.len() - 32..].to_vec();
    vec![("file", file.into_bytes()), ("PEM", pem.into_bytes()), ("DER", der), ("raw", raw)]
}

/// The algorithm-confusion attack: an HMAC token whose secret is the (public) verification
/// key, under the stack's `kid`.
fn hmac_with_public_key(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(signer().kid().to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Signed by a key the stack never issued (a compromised service's own, say).
fn foreign_signed(claims: &Value) -> String {
    JwtSigner::generate().unwrap().sign_claims(claims).unwrap()
}

/// Signed by another key but naming the stack's `kid`.
fn foreign_under_stack_kid(claims: &Value) -> String {
    let foreign = JwtSigner::generate().unwrap();
    let token = foreign.sign_claims(claims).unwrap();
    let (header, rest) = token.split_once('.').unwrap();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"] = json!(signer().kid());
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
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
    control_gateway_with(upstream, signer().verifier()).await
}

async fn control_gateway_with(upstream: &Upstream, keys: JwtKeys) -> TestGateway {
    let services = [("shop", upstream.url()), ("orchestrator", upstream.url())];
    let services: Vec<(&str, &str)> = services.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let mut settings = with_services(settings(GatewayRole::Control, "http://127.0.0.1:1"), &services);
    settings.jwt_keys = keys;
    TestGateway::start(settings)
}

const ROUTES: [(&str, &str); 3] =
    [("GET", "/api/services/shop/config"), ("PATCH", "/api/services/shop/config"), ("GET", "/api/runs")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_or_misused_token_is_refused_with_401_and_reaches_nothing() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let hour_ago = now() - 3600;
    let in_an_hour = now() + 3600;
    let kid = signer().kid();
    // EdDSA is pinned and the header's `kid` must name one of the stack's public keys. The
    // gateway holds only public keys, so the classic confusion (an HMAC token keyed with the
    // public key, in each form it can be read in) is in the matrix, with `none` and asymmetric
    // algorithms the stack does not use.
    let mut cases: Vec<(String, String, &str)> = vec![
        ("alg none".into(), raw(&json!({"alg": "none", "typ": "JWT", "kid": kid}), &claims(), ""), "malformed"),
        ("alg None with a signature".into(), raw(&json!({"alg": "None"}), &claims(), "c2ln"), "malformed"),
        (
            "RS256 header, made-up signature".into(),
            raw(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}), &claims(), "c2ln"),
            "algorithm",
        ),
        (
            "ES256 header, made-up signature".into(),
            raw(&json!({"alg": "ES256", "typ": "JWT", "kid": kid}), &claims(), "c2ln"),
            "algorithm",
        ),
        ("another key, its own kid".into(), foreign_signed(&claims()), "not one this stack trusts"),
        ("another key under the stack's kid".into(), foreign_under_stack_kid(&claims()), "signature"),
        (
            "the stack's key, no kid".into(),
            raw(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims(), signed(&claims()).rsplit('.').next().unwrap()),
            "`kid`",
        ),
        (
            "an unknown kid".into(),
            raw(&json!({"alg": "EdDSA", "kid": "0000000000000000"}), &claims(), "c2ln"),
            "not one this stack trusts",
        ),
        ("tampered payload (learner → instructor)".into(), tampered(), "signature"),
        ("wrong audience".into(), signed(&with("aud", json!("grafana"))), "audience"),
        ("wrong issuer".into(), signed(&with("iss", json!("someone-else"))), "issuer"),
        ("expired".into(), signed(&with("exp", json!(hour_ago))), "expired"),
        ("not yet valid".into(), signed(&with("nbf", json!(in_an_hour))), "not yet valid"),
        ("no exp".into(), signed(&without("exp")), "`exp`"),
        ("no audience".into(), signed(&without("aud")), "`aud`"),
        ("unknown role".into(), signed(&with("role", json!("admin"))), "unknown variant `admin`"),
        ("no role".into(), signed(&without("role")), "missing field `role`"),
        ("garbage".into(), "not.a.jwt".to_owned(), "malformed"),
        ("empty".into(), String::new(), ""),
    ];
    for (form, secret) in public_key_forms() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = hmac_with_public_key(alg, &secret, &claims());
            cases.push((format!("{alg:?} keyed with the public key ({form})"), token, "algorithm must be EdDSA"));
        }
    }
    for (case, token, why) in &cases {
        for (method, path) in ROUTES {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_is_forbidden_on_every_control_route() {
    let upstream = Upstream::start().await;
    let gw = control_gateway(&upstream).await;
    let service = token(Role::Service);
    for (method, path) in ROUTES.into_iter().chain([("POST", "/api/runs"), ("POST", "/api/reset")]) {
        let resp = http()
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(&service)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
    }
    assert!(upstream.seen().is_empty(), "nothing reached the services: {:?}", upstream.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_out_key_is_accepted_until_its_cut_off_and_refused_after() {
    let upstream = Upstream::start().await;
    let old = JwtSigner::generate().unwrap();
    let older = JwtSigner::generate().unwrap();
    let now = chrono::Utc::now();
    // The current key, the previous one still in its grace period, the one before past it.
    let keys = JwtKeys::new(vec![
        signer().public_key(),
        old.public_key().retired_at(now + chrono::Duration::hours(1)),
        older.public_key().retired_at(now - chrono::Duration::seconds(1)),
    ])
    .unwrap();
    let gw = control_gateway_with(&upstream, keys).await;
    let ttl = std::time::Duration::from_secs(600);
    for (who, token, status) in [
        ("current key", token(Role::Learner), 200),
        ("previous key, before its cut-off", old.mint("ada", Role::Learner, ttl).unwrap(), 200),
        ("older key, after its cut-off", older.mint("ada", Role::Learner, ttl).unwrap(), 401),
    ] {
        let resp = http().get(gw.url("/api/services/shop/config")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), status, "{who}");
        if status == 401 {
            let body: Value = resp.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(&format!("`{}` was retired at", older.kid())), "{message}");
        }
    }
    assert_eq!(upstream.seen().len(), 2);
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
