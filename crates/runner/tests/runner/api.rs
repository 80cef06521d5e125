//! The runner's `/config` (live plan changes, precise 400s) and `/slis`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use service_kit::Role;

use crate::helpers::{SlowTarget, TestRunner, details, http, metric_value, token, wait_for};

/// Only `ping`: a merge patch keeps the default weights of journeys it leaves out.
fn ping_plan(rate: f64) -> Value {
    let mix = json!({"browse": 0, "search": 0, "product": 0, "cart": 0, "checkout": 0, "ping": 1});
    json!({"enabled": true, "load": {"rate": rate, "think_time_ms": 0, "mix": mix}})
}

#[tokio::test]
async fn config_changes_start_change_and_stop_the_load_live() {
    let target = SlowTarget::start(Duration::ZERO).await;
    let runner = TestRunner::start(&target.url).await;
    let idle = runner.slis(10).await;
    assert_eq!((idle["running"].as_bool(), idle["offered_rps"].as_f64()), (Some(false), Some(0.0)));
    assert_eq!(target.requests(), 0, "nothing is offered until enabled");

    runner.configure(ping_plan(50.0)).await;
    wait_for("requests at the target", Duration::from_secs(10), || async { (target.requests() >= 10).then_some(()) })
        .await;
    let slis = runner.slis(10).await;
    assert_eq!((slis["running"].as_bool(), slis["offered_rps"].as_f64()), (Some(true), Some(50.0)));

    // A new pattern applies at once, its clock starting now.
    runner
        .configure(json!({"load": {"pattern": "spike", "target_rate": 200, "spike_at_secs": 0, "spike_secs": 3600}}))
        .await;
    assert_eq!(runner.slis(10).await["offered_rps"].as_f64(), Some(200.0));
    runner.configure(json!({"load": {"pattern": "step", "steps": [{"at_secs": 3600, "rate": 1}]}})).await;
    assert_eq!(runner.slis(10).await["offered_rps"].as_f64(), Some(50.0));
    wait_for("ping SLIs", Duration::from_secs(10), || async {
        let slis = runner.slis(10).await;
        (slis["journeys"]["ping"]["completed"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;

    runner.configure(json!({"enabled": false})).await;
    let slis = runner.slis(10).await;
    assert_eq!((slis["running"].as_bool(), slis["offered_rps"].as_f64()), (Some(false), Some(0.0)));
    // Journeys in flight finish (the target answers at once); then nothing more arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = target.requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.requests(), settled, "requests kept arriving after enabled=false");

    let metrics = runner.metrics().await;
    let ok = metric_value(&metrics, "runner_journeys_total", &[("journey", "ping"), ("outcome", "ok")]);
    assert!(ok >= 10.0, "{ok} journeys counted, {settled} requests seen; metrics:\n{metrics}");
    assert!(metric_value(&metrics, "runner_journey_duration_seconds_count", &[("journey", "ping")]) >= 10.0);
    assert!(metrics.contains("runner_offered_rate"));
    assert!(metrics.contains("observastack_config_revision"));
}

#[tokio::test]
async fn bad_config_is_refused_naming_the_field() {
    let runner = TestRunner::start("http://127.0.0.1:9").await;
    let cases = [
        (json!({"load": {"rate": -1}}), "load.rate"),
        (json!({"load": {"pattern": "ramp"}}), "load.target_rate"),
        (json!({"load": {"pattern": "zigzag"}}), "load.pattern"),
        (json!({"load": {"mix": {"browse": 0, "search": 0, "product": 0, "cart": 0, "checkout": 0}}}), "load.mix"),
        (json!({"slis": {"window_secs": 0}}), "slis.window_secs"),
        (json!({"request_timeout_ms": "fast"}), "request_timeout_ms"),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"bogus": 1}), "bogus"),
    ];
    for (patch, field) in cases {
        let resp = runner.patch_config(&patch).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{patch}");
        let body: Value = resp.json().await.unwrap();
        let fields: Vec<String> = details(&body).into_iter().map(|(f, _)| f).collect();
        assert!(fields.iter().any(|f| f == field), "{patch}: expected {field}, got {body}");
    }
    // Nothing changed, and writes need a token.
    let resp = http().get(runner.url("/config")).bearer_auth(token(Role::Learner)).send().await.unwrap();
    let config: Value = resp.json().await.unwrap();
    assert_eq!(config["revision"], 1);
    let anonymous = http().patch(runner.url("/config")).json(&json!({"enabled": true})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_learner_may_not_change_the_runner_and_the_refusal_names_the_field_and_says_why() {
    let runner = TestRunner::start("http://127.0.0.1:9").await;
    let cases = [
        (json!({"load": {"rate": 5}}), "load.rate"),
        (json!({"enabled": true}), "enabled"),
        (json!({"slis": {"window_secs": 30}}), "slis.window_secs"),
        (json!({"request_timeout_ms": 100}), "request_timeout_ms"),
    ];
    for (patch, field) in cases {
        let resp = runner.patch_config_as(Role::Learner, &patch).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{patch}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(details(&body), [(field.to_owned(), "role".to_owned())], "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
        assert!(message.contains(runner::config::INSTRUCTOR_ONLY_REASON), "{message}");
    }
    // Nor by a reset or a whole replacement (the load is off by default, the rate differs).
    runner.configure(json!({"load": {"rate": 40}})).await;
    let learner = token(Role::Learner);
    let reset = http().delete(runner.url("/config")).bearer_auth(&learner).send().await.unwrap();
    assert_eq!(reset.status(), StatusCode::FORBIDDEN);
    let put = http().put(runner.url("/config")).bearer_auth(&learner).json(&json!({})).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN);
    let config: Value =
        http().get(runner.url("/config")).bearer_auth(&learner).send().await.unwrap().json().await.unwrap();
    assert_eq!((config["revision"].as_u64(), config["values"]["load"]["rate"].as_f64()), (Some(2), Some(40.0)));
}

#[tokio::test]
async fn an_instructor_may_change_the_runners_load() {
    let runner = TestRunner::start("http://127.0.0.1:9").await;
    let resp = runner.patch_config_as(Role::Instructor, &json!({"load": {"rate": 5}})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!((body["revision"].as_u64(), body["values"]["load"]["rate"].as_f64()), (Some(2), Some(5.0)));
}

#[tokio::test]
async fn slis_have_the_agreed_shape_and_check_their_window() {
    let runner = TestRunner::start("http://127.0.0.1:9").await;
    let resp = http().get(runner.url("/slis")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let slis: Value = resp.json().await.unwrap();
    for key in ["at", "window_secs", "offered_rps", "running", "all", "journeys"] {
        assert!(slis.get(key).is_some(), "missing {key}: {slis}");
    }
    assert_eq!(slis["window_secs"], 10.0, "the default window comes from /config");
    for key in ["completed", "failed", "success_ratio", "p50_ms", "p95_ms", "p99_ms", "rps", "orders_per_minute"] {
        assert!(slis["all"].get(key).is_some(), "missing all.{key}: {slis}");
    }
    let parsed: scenario::sli::SliSnapshot = serde_json::from_value(slis).unwrap();
    assert_eq!((parsed.all.completed, parsed.all.success_ratio), (0, 1.0));

    runner.configure(json!({"slis": {"window_secs": 30}})).await;
    assert_eq!(runner.slis(60).await["window_secs"], 60.0);
    let slis: Value = http().get(runner.url("/slis")).send().await.unwrap().json().await.unwrap();
    assert_eq!(slis["window_secs"], 30.0);

    for (query, rule) in [("window_secs=0", "range"), ("window_secs=301", "range"), ("window_secs=ten", "type")] {
        let resp = http().get(runner.url(&format!("/slis?{query}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(details(&body), [("window_secs".to_owned(), rule.to_owned())], "{query}: {body}");
    }
    let resp = http().get(runner.url("/slis?window=5")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
