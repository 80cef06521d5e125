//! Router-level tests of the `/config` API with a small sample configuration.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::faults::{HasRouteFaults, RouteFaults};
use service_kit::{ConfigStore, FieldError, JwtSigner, Metrics, Role, RuntimeConfig};
use tower::ServiceExt;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct SampleConfig {
    db: Db,
    mode: Mode,
    faults: RouteFaults,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct Db {
    #[schemars(range(min = 1, max = 100))]
    pool_size: u32,
    #[schemars(range(min = 1, max = 60000))]
    timeout_ms: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Fast,
    Slow,
}

impl Default for Db {
    fn default() -> Self {
        Self { pool_size: 10, timeout_ms: 2000 }
    }
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self { db: Db::default(), mode: Mode::Fast, faults: RouteFaults::new() }
    }
}

impl RuntimeConfig for SampleConfig {
    fn check(&self) -> Vec<FieldError> {
        service_kit::faults::check_route_keys(&self.faults, &["GET /api/things"])
    }
}

impl HasRouteFaults for SampleConfig {
    fn route_faults(&self) -> &RouteFaults {
        &self.faults
    }
}

struct Fixture {
    app: Router,
    store: Arc<ConfigStore<SampleConfig>>,
    keys: Arc<JwtSigner>,
    metrics: Arc<Metrics>,
}

fn fixture() -> Fixture {
    let metrics = Metrics::new("sample");
    let keys = Arc::new(JwtSigner::generate().unwrap());
    let store = ConfigStore::new("sample", SampleConfig::default(), metrics.clone()).unwrap();
    let app = service_kit::app::observed(
        service_kit::app::internal_routes(
            metrics.clone(),
            store.clone(),
            Arc::new(keys.verifier()),
            service_kit::server::always_ready(),
        ),
        metrics.clone(),
    );
    Fixture { app, store, keys, metrics }
}

impl Fixture {
    fn token(&self, role: Role) -> String {
        self.keys.mint("ada", role, Duration::from_secs(300)).unwrap()
    }

    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        self.call_with(method, uri, token, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn patch(&self, role: Role, body: &str) -> (StatusCode, Value) {
        let token = self.token(role);
        self.call(Method::PATCH, "/config", Some(&token), Some(body)).await
    }
}

fn details(body: &Value) -> Vec<(String, String)> {
    body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap_or_default().to_owned(),
                        e["rule"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn get_config_returns_values_revision_and_schema_link() {
    let f = fixture();
    let token = f.token(Role::Learner);
    let (status, body) = f.call(Method::GET, "/config", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["revision"], 1);
    assert_eq!(body["values"]["db"]["pool_size"], 10);
    assert_eq!(body["schema"], "/config/schema");
}

#[tokio::test]
async fn schema_describes_ranges_and_forbids_unknown_fields() {
    let f = fixture();
    let token = f.token(Role::Learner);
    let (status, schema) = f.call(Method::GET, "/config/schema", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let text = schema.to_string();
    assert!(text.contains("\"maximum\":100"), "{text}");
    assert!(text.contains("\"additionalProperties\":false"), "{text}");
}

#[tokio::test]
async fn patch_applies_atomically_bumps_revision_and_records_history() {
    let f = fixture();
    let (status, body) = f.patch(Role::Learner, r#"{"db": {"pool_size": 3}, "mode": "slow"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 2);
    let current = f.store.current();
    assert_eq!((current.db.pool_size, current.db.timeout_ms, current.mode), (3, 2000, Mode::Slow));

    let token = f.token(Role::Learner);
    let (_, history) = f.call(Method::GET, "/config/history", Some(&token), None).await;
    let entry = &history[0];
    assert_eq!(entry["actor"], "ada");
    assert_eq!(entry["role"], "learner");
    assert_eq!(entry["revision"], 2);
    assert_eq!(entry["changes"][0], json!({"field": "db.pool_size", "old": 10, "new": 3}));
    assert_eq!(entry["changes"][1], json!({"field": "mode", "old": "fast", "new": "slow"}));
    assert!(f.metrics.render().contains("observastack_config_revision{service=\"sample\"} 2"));
}

#[tokio::test]
async fn patch_config_rejects_out_of_range_pool_size_and_changes_nothing() {
    let f = fixture();
    for (body, rule) in [(r#"{"db": {"pool_size": 0}}"#, "minimum"), (r#"{"db": {"pool_size": 101}}"#, "maximum")] {
        let (status, resp) = f.patch(Role::Instructor, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        assert_eq!(details(&resp), vec![("db.pool_size".to_owned(), rule.to_owned())]);
    }
    assert_eq!(f.store.current().revision, 1);
    assert_eq!(f.store.current().db.pool_size, 10);
}

// Found by the contract run: JSON Schema, and so the OpenAPI document, counts 3.0 as an
// integer; serde refused it.
#[tokio::test]
async fn a_whole_number_written_as_a_float_is_an_integer() {
    let f = fixture();
    let (status, body) = f.patch(Role::Learner, r#"{"db": {"pool_size": 3.0}}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(f.store.current().db.pool_size, 3);
    let (status, body) = f.patch(Role::Learner, r#"{"db": {"pool_size": 3.5}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

// Found by the contract run: `{"typo": null}` removed nothing and was accepted.
#[tokio::test]
async fn a_null_for_an_unknown_field_is_refused_and_one_for_a_fault_removes_it() {
    let f = fixture();
    let (status, body) = f.patch(Role::Learner, r#"{"typo": null, "db": {"pool_szie": null}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        details(&body),
        vec![("db.pool_szie".to_owned(), "unknown_field".to_owned()), ("typo".to_owned(), "unknown_field".to_owned())]
    );
    let (status, body) = f.patch(Role::Learner, r#"{"db": {"pool_size": null}, "mode": null}"#).await;
    assert_eq!(status, StatusCode::OK, "known fields take their defaults: {body}");
    let (status, body) = f.patch(Role::Instructor, r#"{"faults": {"GET /api/things": {"latency_ms": 5}}}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = f.patch(Role::Instructor, r#"{"faults": {"GET /api/things": null}}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(f.store.current().faults.is_empty());
}

// Found by the contract run: a limit past the history's size was quietly cut, one past
// `usize` refused without naming it; the document now says 0..=500.
#[tokio::test]
async fn history_limits_outside_their_range_are_refused_naming_the_field() {
    let f = fixture();
    let token = f.token(Role::Learner);
    let (status, body) = f.call(Method::GET, "/config/history?limit=500", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = f.call(Method::GET, "/config/history?limit=501", Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(details(&body), vec![("limit".to_owned(), "maximum".to_owned())]);
}

#[tokio::test]
async fn one_bad_field_rejects_the_whole_patch() {
    let f = fixture();
    let (status, resp) = f.patch(Role::Learner, r#"{"db": {"pool_size": 5, "timeout_ms": -1}, "mode": "slow"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp), vec![("db.timeout_ms".to_owned(), "minimum".to_owned())]);
    let current = f.store.current();
    assert_eq!((current.db.pool_size, current.mode), (10, Mode::Fast));
}

#[tokio::test]
async fn unknown_fields_wrong_types_and_bad_enums_name_the_field() {
    let f = fixture();
    let cases = [
        (r#"{"db": {"pool_sise": 5}}"#, "db.pool_sise", "unknown_field"),
        (r#"{"colour": "red"}"#, "colour", "unknown_field"),
        (r#"{"db": {"pool_size": "five"}}"#, "db.pool_size", "type"),
        (r#"{"mode": "turbo"}"#, "mode", "enum"),
        (r#"[1, 2]"#, "(body)", "type"),
    ];
    for (body, field, rule) in cases {
        let (status, resp) = f.patch(Role::Instructor, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        let found = details(&resp);
        assert!(
            found.iter().any(|(f, r)| f == field && r.contains(rule)),
            "{body}: expected {field}/{rule}, got {found:?}"
        );
    }
    assert_eq!(f.store.current().revision, 1);
}

#[tokio::test]
async fn malformed_json_is_a_400_and_wrong_content_type_a_415() {
    let f = fixture();
    let (status, resp) = f.patch(Role::Learner, r#"{"db": {"pool_size": 5"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp)[0].1, "json_syntax");

    let token = f.token(Role::Learner);
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/config")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"mode":"slow"}"#))
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(f.store.current().revision, 1);
}

#[tokio::test]
async fn oversize_body_is_413_and_changes_nothing() {
    let f = fixture();
    let huge = format!(r#"{{"mode": "slow", "pad": "{}"}}"#, "x".repeat(200 * 1024));
    let (status, resp) = f.patch(Role::Learner, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert_eq!(resp["error"]["code"], "payload_too_large");
    assert_eq!(f.store.current().revision, 1);
}

#[tokio::test]
async fn learner_may_not_touch_fault_fields_but_instructor_may() {
    let f = fixture();
    let patch = r#"{"faults": {"GET /api/things": {"latency_ms": 250}}}"#;
    let (status, resp) = f.patch(Role::Learner, patch).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{resp}");
    assert_eq!(details(&resp), vec![("faults.GET /api/things".to_owned(), "role".to_owned())]);
    let message = resp["error"]["message"].as_str().unwrap();
    assert!(message.contains(service_kit::config::FAULTS_REASON), "the default reason: {message}");
    assert!(f.store.current().faults.is_empty());

    let (status, _) = f.patch(Role::Instructor, patch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.store.current().faults["GET /api/things"].latency_ms, 250);

    // A learner can neither remove the fault by patch nor by a reset.
    let (status, _) = f.patch(Role::Learner, r#"{"faults": {"GET /api/things": null}}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let token = f.token(Role::Learner);
    let (status, _) = f.call(Method::DELETE, "/config", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(f.store.current().faults.len(), 1);
}

#[tokio::test]
async fn fault_keys_must_name_a_route_of_the_service() {
    let f = fixture();
    let (status, resp) = f.patch(Role::Instructor, r#"{"faults": {"GET /nope": {"error_rate": 0.5}}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp), vec![("faults.GET /nope".to_owned(), "known_route".to_owned())]);
    let (status, resp) = f.patch(Role::Instructor, r#"{"faults": {"*": {"error_rate": 1.5}}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp), vec![("faults.*.error_rate".to_owned(), "maximum".to_owned())]);
}

#[tokio::test]
async fn put_replaces_and_delete_resets_to_defaults() {
    let f = fixture();
    let token = f.token(Role::Learner);
    let (status, body) = f.call(Method::PUT, "/config", Some(&token), Some(r#"{"db": {"pool_size": 7}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(f.store.current().db, Db { pool_size: 7, timeout_ms: 2000 });
    let (status, body) = f.call(Method::DELETE, "/config", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["revision"], 3);
    assert_eq!(f.store.current().config, SampleConfig::default());
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_the_revision() {
    let f = fixture();
    let (status, body) = f.patch(Role::Learner, r#"{"db": {"pool_size": 10}}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["revision"], 1);
    assert!(f.store.history(10).await.is_empty());
}

#[tokio::test]
async fn reads_and_writes_need_a_valid_token() {
    let f = fixture();
    let (status, _) = f.call(Method::GET, "/config", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = f.call(Method::PATCH, "/config", Some("not.a.token"), Some(r#"{"mode":"slow"}"#)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let foreign = JwtSigner::generate().unwrap();
    let forged = foreign.mint("eve", Role::Instructor, Duration::from_secs(60)).unwrap();
    let (status, body) = f.call(Method::PATCH, "/config", Some(&forged), Some(r#"{"mode":"slow"}"#)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(f.store.current().revision, 1);
    // Health stays public.
    let (status, _) = f.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_service_token_may_neither_read_nor_change_the_config() {
    let f = fixture();
    let service = f.token(Role::Service);
    for (method, uri, body) in [
        (Method::GET, "/config", None),
        (Method::GET, "/config/schema", None),
        (Method::GET, "/config/history", None),
        (Method::PATCH, "/config", Some(r#"{"db": {"pool_size": 4}}"#)),
        (Method::PUT, "/config", Some("{}")),
    ] {
        let (status, body) = f.call(method.clone(), uri, Some(&service), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(body["error"]["code"], "forbidden", "{method} {uri}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("service"), "{body}");
    }
    assert_eq!(f.store.current().revision, 1);
}

#[tokio::test]
async fn token_in_query_string_is_not_accepted() {
    let f = fixture();
    let token = f.token(Role::Instructor);
    let (status, _) = f.call(Method::GET, &format!("/config?access_token={token}"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_use_route_templates_and_count_config_outcomes() {
    let f = fixture();
    let _ = f.patch(Role::Learner, r#"{"db": {"pool_size": 1000}}"#).await;
    let _ = f.patch(Role::Learner, r#"{"db": {"pool_size": 20}}"#).await;
    let _ = f.call(Method::GET, "/no/such/path/12345", None, None).await;
    let text = f.metrics.render();
    assert!(text.contains(r#"observastack_config_changes_total{outcome="rejected",service="sample"} 1"#), "{text}");
    assert!(text.contains(r#"observastack_config_changes_total{outcome="applied",service="sample"} 1"#), "{text}");
    assert!(text.contains(r#"http_route="/config""#), "{text}");
    assert!(text.contains(r#"http_route="unmatched""#), "{text}");
    assert!(!text.contains("12345"), "raw paths must never become labels");
    let build_info = text.lines().find(|l| l.starts_with("observastack_build_info{")).expect("build info exported");
    assert!(
        build_info.contains(r#"service="sample""#) && build_info.contains("version=") && build_info.ends_with(" 1")
    );
}

/// A configuration whose every field is the instructor's, like the runner's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct LockedConfig {
    db: Db,
    mode: Mode,
}

impl RuntimeConfig for LockedConfig {
    fn instructor_only() -> &'static [&'static str] {
        &["db", "mode"]
    }

    fn instructor_only_reason() -> &'static str {
        "this knob is part of the exercise"
    }
}

fn locked_app() -> (Router, Arc<ConfigStore<LockedConfig>>, JwtSigner) {
    let keys = JwtSigner::generate().unwrap();
    let store = ConfigStore::new("locked", LockedConfig::default(), Metrics::new("locked")).unwrap();
    (service_kit::config::router(store.clone(), Arc::new(keys.verifier())), store, keys)
}

#[tokio::test]
async fn a_learners_refusal_names_every_instructor_only_field_and_carries_the_types_reason() {
    let (app, store, keys) = locked_app();
    let learner = keys.mint("ada", Role::Learner, Duration::from_secs(60)).unwrap();
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/config")
        .header(header::AUTHORIZATION, format!("Bearer {learner}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"db": {"pool_size": 3}, "mode": "slow"}"#))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        details(&body),
        vec![("db.pool_size".to_owned(), "role".to_owned()), ("mode".to_owned(), "role".to_owned())]
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`db.pool_size`") && message.contains("`mode`"), "{message}");
    assert!(message.ends_with("this knob is part of the exercise"), "{message}");
    assert_eq!(store.current().revision, 1);

    let instructor = keys.mint("orchestrator", Role::Instructor, Duration::from_secs(60)).unwrap();
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/config")
        .header(header::AUTHORIZATION, format!("Bearer {instructor}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"mode": "slow"}"#))
        .unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(store.current().mode, Mode::Slow);
}

#[tokio::test]
async fn history_entries_say_which_client_made_the_change_and_through_which_path() {
    let f = fixture();
    let token = f.token(Role::Learner);
    let through = [("x-observastack-client", "cli"), ("x-observastack-through", "control-gateway")];
    let (status, _) = f.call_with(Method::PATCH, "/config", Some(&token), Some(r#"{"mode": "slow"}"#), &through).await;
    assert_eq!(status, StatusCode::OK);
    let direct = [("user-agent", "curl/8.5.0")];
    let (status, _) = f.call_with(Method::DELETE, "/config", Some(&token), None, &direct).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = f.call(Method::PUT, "/config", Some(&token), Some(r#"{"mode": "slow"}"#)).await;
    assert_eq!(status, StatusCode::OK);

    let (_, history) = f.call(Method::GET, "/config/history", Some(&token), None).await;
    let seen: Vec<(&str, &str, &Value)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["client"].as_str().unwrap(), &e["through"]))
        .collect();
    assert_eq!(
        seen,
        [
            ("put", "unknown", &Value::Null),
            ("reset", "curl", &Value::Null),
            ("patch", "cli", &json!("control-gateway"))
        ]
    );
}

#[tokio::test]
async fn client_and_through_headers_with_bad_values_are_ignored() {
    let f = fixture();
    let token = f.token(Role::Learner);
    let headers = [
        ("x-observastack-client", "Robert'); DROP TABLE--"),
        ("user-agent", "Evil Agent/1.0"),
        ("x-observastack-through", "the-back-door"),
    ];
    let (status, _) = f.call_with(Method::PATCH, "/config", Some(&token), Some(r#"{"mode": "slow"}"#), &headers).await;
    assert_eq!(status, StatusCode::OK);
    let long = "x".repeat(33);
    let headers = [("x-observastack-client", long.as_str()), ("user-agent", "Mozilla/5.0 (X11)")];
    let (status, _) = f.call_with(Method::PATCH, "/config", Some(&token), Some(r#"{"mode": "fast"}"#), &headers).await;
    assert_eq!(status, StatusCode::OK);

    let history = f.store.history(10).await;
    let seen: Vec<(&str, Option<&str>)> = history.iter().map(|r| (r.client.as_str(), r.through.as_deref())).collect();
    assert_eq!(seen, [("mozilla", None), ("unknown", None)]);
}
