//! Property-based fuzzing of the input paths learners and instructors write to: every service's
//! `/config` (mutations of its real configuration, arbitrary JSON, arbitrary bytes) and the
//! scenario parser (mutations of the shipped scenario files). Properties: no panic, never a
//! 5xx, every rejection names a field and a rule, and a rejected change leaves nothing behind.
//!
//! Case counts are modest so the run stays within seconds; `PROPTEST_CASES=5000` digs deeper.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use service_kit::{ConfigStore, JwtSigner, Metrics, Role, RuntimeConfig};
use tower::ServiceExt;

fn cases(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// A service's internal router (the one `/config` lives on) around a fresh store of `T`.
struct Target {
    name: &'static str,
    app: Router,
    token: String,
}

fn target<T: RuntimeConfig>(name: &'static str) -> Target {
    let metrics = Metrics::new(name);
    let keys = JwtSigner::generate().unwrap();
    let store = ConfigStore::new(name, T::default(), metrics.clone()).unwrap();
    let app = service_kit::app::internal_routes(
        metrics,
        store,
        Arc::new(keys.verifier()),
        service_kit::server::always_ready(),
    );
    // Instructor: may change every field, so a rejection is always about the value.
    let token = keys.mint("fuzzer", Role::Instructor, Duration::from_secs(3600)).unwrap();
    Target { name, app, token }
}

fn targets() -> Vec<Target> {
    vec![
        target::<shop::config::ShopConfig>("shop"),
        target::<gateway::GatewayConfig<gateway::config::User>>("gateway-user"),
        target::<gateway::GatewayConfig<gateway::config::Control>>("gateway-control"),
        target::<gateway::GatewayConfig<gateway::config::Observability>>("gateway-observability"),
        target::<runner::RunnerConfig>("runner"),
    ]
}

impl Target {
    async fn call(&self, method: Method, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri("/config")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Sends `body` with `method` and checks the properties; returns the status.
    async fn check(&self, method: Method, body: Vec<u8>) -> Result<StatusCode, TestCaseError> {
        let (_, before) = self.call(Method::GET, None).await;
        let shown = String::from_utf8_lossy(&body).chars().take(300).collect::<String>();
        let (status, answer) = self.call(method.clone(), Some(body)).await;
        prop_assert!(
            status.is_success() || status.is_client_error(),
            "{} {method} {shown}: {status} {answer}",
            self.name
        );
        if status.is_client_error() {
            let error = &answer["error"];
            prop_assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: {answer}", self.name);
            if status == StatusCode::BAD_REQUEST {
                let details = error["details"].as_array();
                prop_assert!(details.is_some_and(|d| !d.is_empty()), "{} {shown}: no details: {answer}", self.name);
                for detail in details.into_iter().flatten() {
                    prop_assert!(detail["field"].is_string(), "{}: {detail}", self.name);
                    prop_assert!(detail["rule"].as_str().is_some_and(|r| !r.is_empty()), "{}: {detail}", self.name);
                }
            }
            let (_, after) = self.call(Method::GET, None).await;
            prop_assert_eq!(&after, &before, "{} {} {}: a rejected change left state behind", self.name, method, shown);
        } else {
            // What was accepted reads back as a valid configuration.
            let (_, now) = self.call(Method::GET, None).await;
            let (status, answer) = self.call(Method::PUT, Some(now["values"].to_string().into_bytes())).await;
            prop_assert_eq!(
                status,
                StatusCode::OK,
                "{}: the accepted config does not round-trip: {}",
                self.name,
                answer
            );
        }
        Ok(status)
    }
}

/// A JSON leaf with the values validation cares about: edges of integer ranges, fractions,
/// negative numbers, huge numbers, enum-looking strings, empty and odd strings.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(100),
            Just(1000),
            Just(65_535),
            Just(65_536),
            Just(4_294_967_296)
        ]
        .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN/inf", |f| f.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "indexed",
            "full_scan",
            "efficient",
            "quadratic",
            "2.4.0",
            "2.4.1",
            "constant",
            "ramp",
            "spike",
            "step",
            "GET /api/products",
            "POST /api/checkout",
            "é",
            "\u{0}",
            "NaN",
            "-5",
            "1e400",
        ])
        .prop_map(Value::from),
        prop::collection::vec(any::<char>(), 0..12).prop_map(|c| Value::from(c.into_iter().collect::<String>())),
    ]
}

/// Arbitrary JSON up to a few levels deep, with keys drawn from `keys` (the real field names)
/// and a few unknown ones.
fn json_value(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let mut names = keys;
    names.extend(["unknown", "", "__proto__", "faults"].map(str::to_owned));
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(names.clone()), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every `(path, value)` of a JSON tree's leaves and inner nodes, and every key name.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, keys: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            keys.push(k.clone());
            prefix.push(k.clone());
            out.push(prefix.clone());
            paths(v, prefix, out, keys);
            prefix.pop();
        }
    }
}

fn set(root: &mut Value, path: &[String], value: Value) {
    let mut node = root;
    for key in &path[..path.len() - 1] {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node.as_object_mut().unwrap().entry(key.clone()).or_insert_with(|| json!({}));
    }
    if let Value::Object(map) = node {
        map.insert(path[path.len() - 1].clone(), value);
    } else {
        *node = json!({ path[path.len() - 1].clone(): value });
    }
}

/// Patches that look like real ones: one to three fields of the real config set to a leaf or
/// to arbitrary JSON, sometimes with an unknown sibling.
fn realistic_patch(defaults: &Value) -> impl Strategy<Value = Value> {
    let mut all = Vec::new();
    let mut keys = Vec::new();
    paths(defaults, &mut Vec::new(), &mut all, &mut keys);
    let all = if all.is_empty() { vec![vec!["unknown".to_owned()]] } else { all };
    let field = prop::sample::select(all);
    let value = prop_oneof![3 => leaf(), 1 => json_value(keys)];
    prop::collection::vec((field, value), 1..4).prop_map(|edits| {
        let mut patch = json!({});
        for (path, value) in edits {
            set(&mut patch, &path, value);
        }
        patch
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn config_patches_that_look_real_are_applied_or_rejected_whole_with_the_field_named() {
    let rt = runtime();
    for target in targets() {
        let (_, current) = rt.block_on(target.call(Method::GET, None));
        let defaults = current["values"].clone();
        let mut runner = TestRunner::new(cases(300));
        let (rejected, accepted) = (Cell::new(0usize), Cell::new(0usize));
        runner
            .run(&realistic_patch(&defaults), |patch| {
                let status = rt.block_on(target.check(Method::PATCH, patch.to_string().into_bytes()))?;
                let counter = if status.is_success() { &accepted } else { &rejected };
                counter.set(counter.get() + 1);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", target.name));
        // Both sides were exercised, or the generator is not testing validation.
        let (rejected, accepted) = (rejected.get(), accepted.get());
        assert!(rejected > 0 && accepted > 0, "{}: rejected {rejected}, accepted {accepted}", target.name);
        // Put the defaults back for the next property.
        rt.block_on(target.call(Method::DELETE, None));
    }
}

#[test]
fn arbitrary_json_to_patch_and_put_never_fails_the_server() {
    let rt = runtime();
    for target in targets() {
        let (_, current) = rt.block_on(target.call(Method::GET, None));
        let mut keys = Vec::new();
        paths(&current["values"], &mut Vec::new(), &mut Vec::new(), &mut keys);
        let mut runner = TestRunner::new(cases(200));
        runner
            .run(&(json_value(keys), any::<bool>()), |(body, put)| {
                let method = if put { Method::PUT } else { Method::PATCH };
                rt.block_on(target.check(method, body.to_string().into_bytes()))?;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", target.name));
    }
}

#[test]
fn arbitrary_bytes_and_deep_nesting_are_client_errors() {
    let rt = runtime();
    for target in targets() {
        let mut runner = TestRunner::new(cases(200));
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
                rt.block_on(target.check(Method::PATCH, bytes))?;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", target.name));
        for body in [
            "[".repeat(100_000).into_bytes(),
            format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes(),
            vec![0xff, 0xfe, 0x7b, 0x7d],
            b"{\"db\": {\"pool_size\": 1}}\xff".to_vec(),
        ] {
            let (status, answer) = rt.block_on(target.call(Method::PATCH, Some(body)));
            assert!(status.is_client_error(), "{}: {status} {answer}", target.name);
            assert!(answer["error"]["message"].is_string(), "{}: {answer}", target.name);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Edits of a scenario file's lines: drop one, duplicate one, or replace a value.
#[derive(Debug, Clone)]
enum Edit {
    Drop(usize),
    Duplicate(usize),
    Replace(usize, String),
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let text = prop_oneof![
        prop::sample::select(vec![
            "-1",
            "0",
            "1e9",
            "\"\"",
            "\"x\"",
            "[]",
            "{}",
            "true",
            "nan",
            "inf",
            "\"search.p95_ms > \"",
            "\"all.success_ratio >= 2\"",
            "\"nope.p95_ms < 1\"",
            "{ db = { pool_size = 0 } }",
            "{ nope = 1 }",
            "\"shop\"",
            "\"gateway\"",
            "\"mars\"",
            "[[",
            "]]",
            "\"\"\"",
            "'",
            "= 3",
        ])
        .prop_map(str::to_owned),
        prop::collection::vec(any::<char>(), 0..16).prop_map(|c| c.into_iter().collect()),
    ];
    prop_oneof![
        (0..200usize).prop_map(Edit::Drop),
        (0..200usize).prop_map(Edit::Duplicate),
        (0..200usize, text.clone()).prop_map(|(i, t)| Edit::Replace(i, t)),
        (0..200usize, text).prop_map(|(i, t)| Edit::Insert(i, t)),
    ]
}

fn apply(source: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        match edit {
            Edit::Drop(i) => {
                lines.remove(i % lines.len());
            }
            Edit::Duplicate(i) => {
                let line = lines[i % lines.len()].clone();
                lines.insert(i % lines.len(), line);
            }
            Edit::Replace(i, text) => {
                let i = i % lines.len();
                // Keep the key when the line has one, so the value is what is fuzzed.
                lines[i] = match lines[i].split_once('=') {
                    Some((key, _)) => format!("{key}= {text}"),
                    None => text.clone(),
                };
            }
            Edit::Insert(i, text) => lines.insert(i % lines.len(), text.clone()),
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_scenario_files_get_diagnostics_with_a_line_and_a_field_never_a_panic() {
    let catalog = stack_config::service_catalog().unwrap();
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(workspace().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            sources.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert_eq!(sources.len(), 5);
    let mut runner = TestRunner::new(cases(300));
    let rejected = Cell::new(0usize);
    runner
        .run(&(prop::sample::select(sources), prop::collection::vec(edit(), 1..4)), |((path, source), edits)| {
            let mutated = apply(&source, &edits);
            let lines = mutated.lines().count().max(1);
            let (scenario, diagnostics) = scenario::lint::lint_source(&mutated, &path, &catalog);
            if diagnostics.iter().any(|d| d.is_error()) {
                rejected.set(rejected.get() + 1);
                prop_assert!(scenario.is_none(), "a scenario with errors was returned");
            }
            for d in &diagnostics {
                prop_assert!(d.line >= 1 && d.line <= lines + 1, "line {} of {lines}: {d}", d.line);
                prop_assert!(!d.rule.is_empty() && !d.message.is_empty() && !d.field.is_empty(), "{d}");
            }
            Ok(())
        })
        .unwrap();
    assert!(rejected.get() > 0, "the mutations never broke a file");
}
