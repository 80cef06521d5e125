//! Catalog routes: ping, browsing, search, the product page, and precise 4xx answers.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{details, spawn_app};

#[tokio::test]
async fn ping_answers_ok() {
    let app = spawn_app().await;
    let body = app.get_json("/api/ping").await;
    assert_eq!(body, serde_json::json!({"ok": true}));
}

#[tokio::test]
async fn products_page_through_the_catalog_and_filter_by_category() {
    let app = spawn_app().await;
    let first = app.get_json("/api/products").await;
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 20, "default page size");
    assert_eq!(first["next_offset"], 20);
    let second = app.get_json("/api/products?limit=20&offset=20").await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    let last = app.get_json("/api/products?limit=100&offset=250").await;
    assert_eq!(last["items"].as_array().unwrap().len(), 50);
    assert!(last.get("next_offset").is_none());

    let books = app.get_json("/api/products?category=Books&limit=100").await;
    let books = books["items"].as_array().unwrap();
    assert_eq!(books.len(), 25, "300 products over 12 categories");
    assert!(books.iter().all(|p| p["category"] == "Books"));
    let categories: std::collections::BTreeSet<String> = app.get_json("/api/products?limit=100").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["category"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(categories.len(), 12, "{categories:?}");
}

#[tokio::test]
async fn product_listing_rejects_bad_parameters_naming_them() {
    let app = spawn_app().await;
    for (query, field, rule) in [
        ("limit=0", "limit", "minimum"),
        ("limit=101", "limit", "maximum"),
        ("limit=ten", "limit", "type"),
        ("offset=-1", "offset", "minimum"),
        ("category=Spaceships", "category", "enum"),
        ("sort=price", "sort", "unknown_field"),
    ] {
        let resp = app.get(&format!("/api/products?{query}")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(details(&body), vec![(field.to_owned(), rule.to_owned())], "{query}: {body}");
    }
}

#[tokio::test]
async fn product_page_includes_the_computed_price() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    let product = app.get_json(&format!("/api/products/{id}")).await;
    assert_eq!(product["id"], id);
    for field in ["sku", "name", "description", "category"] {
        assert!(!product[field].as_str().unwrap().is_empty(), "{field}: {product}");
    }
    let list = product["list_price_cents"].as_i64().unwrap();
    let price = product["price_cents"].as_i64().unwrap();
    assert!(price >= list * 9 / 10 - 100 && price <= list * 105 / 100 + 100, "{product}");
    if price >= 100 {
        assert_eq!(price % 100, 99, "charm pricing: {product}");
    }
    assert_eq!(product["currency"], "EUR");
    assert_eq!(product["in_stock"], product["stock"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn product_ids_are_validated_and_unknown_products_are_404() {
    let app = spawn_app().await;
    for (path, rule) in [("/api/products/abc", "type"), ("/api/products/0", "minimum"), ("/api/products/1.5", "type")] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(details(&body), vec![("id".to_owned(), rule.to_owned())], "{path}: {body}");
    }
    let resp = app.get("/api/products/999999").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn search_finds_products_by_name_prefix_case_insensitively() {
    let app = spawn_app().await;
    let body = app.get_json("/api/products/search?q=WIRELESS&limit=50").await;
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{body}");
    assert!(items.iter().all(|p| p["name"].as_str().unwrap().starts_with("Wireless ")), "{body}");
    let limited = app.get_json("/api/products/search?q=w&limit=2").await;
    assert_eq!(limited["items"].as_array().unwrap().len(), 2);
    let none = app.get_json("/api/products/search?q=%25").await;
    assert!(none["items"].as_array().unwrap().is_empty(), "`%` is matched literally: {none}");
}

#[tokio::test]
async fn search_rejects_missing_empty_and_overlong_queries() {
    let app = spawn_app().await;
    let long = "a".repeat(65);
    // `q=a%00` was a 500 (PostgreSQL takes no NUL in text), found by the contract run.
    for (query, rule) in [
        ("", "required"),
        ("q=", "minLength"),
        ("q=%20%20", "minLength"),
        (&format!("q={long}") as &str, "maxLength"),
        ("q=a%00", "pattern"),
    ] {
        let resp = app.get(&format!("/api/products/search?{query}")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(details(&body), vec![("q".to_owned(), rule.to_owned())], "{query}: {body}");
    }
}

#[tokio::test]
async fn unknown_routes_get_a_json_404_and_health_routes_answer() {
    let app = spawn_app().await;
    let resp = app.get("/api/nope").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    assert_eq!(app.get_json("/readyz").await["status"], "ready");
}

#[tokio::test]
async fn business_requests_are_measured_by_route_template() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    app.get_json(&format!("/api/products/{id}")).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("http_route=\"/api/products/{id}\""), "{metrics}");
    assert!(!metrics.contains(&format!("/api/products/{id}\"")), "raw paths must not become labels");
}
