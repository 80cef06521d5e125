//! `/config` through the shop's real router: role rules, range checks naming the field and
//! rule, unknown fields and fault keys, and that a rejected change changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Role;

use crate::helpers::{details, spawn_app};

#[tokio::test]
async fn learner_cannot_set_faults_but_the_instructor_can() {
    let app = spawn_app().await;
    let fault = json!({"faults": {"POST /api/checkout": {"error_rate": 1.0}}});
    let resp = app.patch_config(Role::Learner, fault.clone()).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    let found = details(&body);
    assert_eq!(found.len(), 1, "{body}");
    assert!(found[0].0.starts_with("faults."), "{body}");
    assert_eq!(found[0].1, "role");
    assert_eq!(app.config().await["values"]["faults"], json!({}));

    app.configure(fault).await;
    let id = app.product_ids(1).await[0];
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, id, 1).await;
    assert_eq!(app.checkout(&cart_id, None).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.get("/api/products").await.status(), StatusCode::OK, "other routes are untouched");
}

#[tokio::test]
async fn out_of_range_pool_size_is_rejected_naming_the_field_and_rule_and_nothing_changes() {
    let app = spawn_app().await;
    let before = app.config().await;
    for (value, rule) in [(101, "maximum"), (0, "minimum")] {
        let resp = app.patch_config(Role::Learner, json!({"db": {"pool_size": value}})).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(details(&body), vec![("db.pool_size".to_owned(), rule.to_owned())], "{body}");
    }
    // A change with one bad field is rejected whole.
    let resp =
        app.patch_config(Role::Learner, json!({"workers": {"max_concurrent": 2}, "db": {"pool_size": 1000}})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let after = app.config().await;
    assert_eq!(after["revision"], before["revision"]);
    assert_eq!(after["values"], before["values"]);
    assert_eq!(app.metric("shop_db_pool_size", &[]).await, 10.0);
    assert_eq!(app.metric("shop_worker_pool_limit", &[]).await, 64.0);
}

#[tokio::test]
async fn unknown_config_fields_and_values_are_rejected() {
    let app = spawn_app().await;
    let cases = [
        (json!({"db": {"pool_sise": 5}}), "db.pool_sise", "unknown_field"),
        (json!({"turbo": true}), "turbo", "unknown_field"),
        (json!({"pricing": {"algorithm": "cubic"}}), "pricing.algorithm", "enum"),
        (json!({"release": {"version": "9.9.9"}}), "release.version", "enum"),
        (json!({"workers": {"queue_timeout_ms": "fast"}}), "workers.queue_timeout_ms", "type"),
    ];
    for (patch, field, rule) in cases {
        let resp = app.patch_config(Role::Learner, patch.clone()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{patch}");
        let body: Value = resp.json().await.unwrap();
        let found = details(&body);
        assert_eq!(found.len(), 1, "{patch}: {body}");
        assert_eq!(found[0].0, field, "{patch}: {body}");
        assert_eq!(found[0].1, rule, "{patch}: {body}");
    }
}

#[tokio::test]
async fn unknown_fault_route_keys_are_rejected() {
    let app = spawn_app().await;
    let resp =
        app.patch_config(Role::Instructor, json!({"faults": {"GET /api/product/{id}": {"latency_ms": 10}}})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(details(&body), vec![("faults.GET /api/product/{id}".to_owned(), "known_route".to_owned())]);
    for route in shop::ROUTES {
        let resp = app.patch_config(Role::Instructor, json!({"faults": {*route: {"latency_ms": 1}}})).await;
        assert_eq!(resp.status(), StatusCode::OK, "{route}");
    }
}

#[tokio::test]
async fn config_needs_a_token_and_the_schema_describes_the_knobs() {
    let app = spawn_app().await;
    assert_eq!(app.get("/config").await.status(), StatusCode::UNAUTHORIZED);
    let resp = app.http.get(app.url("/config/schema")).bearer_auth(app.token(Role::Learner)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let schema = resp.text().await.unwrap();
    for needle in
        ["max_concurrent", "queue_limit", "pool_size", "acquire_timeout_ms", "full_scan", "quadratic", "2.4.1"]
    {
        assert!(schema.contains(needle), "{needle} missing from the schema");
    }
}
