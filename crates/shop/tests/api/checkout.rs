//! Carts, checkout and orders: pricing of lines, one-transaction checkout, idempotency, stock.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{details, spawn_app};

#[tokio::test]
async fn cart_lines_are_priced_and_totalled() {
    let app = spawn_app().await;
    let ids = app.product_ids(2).await;
    let resp = app.http.post(app.url("/api/carts")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let cart_id = resp.json::<Value>().await.unwrap()["cart_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/carts/{cart_id}"));

    let empty = app.get_json(&location).await;
    assert_eq!(empty["lines"], json!([]));
    assert_eq!(empty["total_cents"], 0);

    assert_eq!(app.add_item(&cart_id, ids[0], 2).await.status(), StatusCode::OK);
    assert_eq!(app.add_item(&cart_id, ids[1], 1).await.status(), StatusCode::OK);
    let resp = app.add_item(&cart_id, ids[0], 3).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cart: Value = resp.json().await.unwrap();
    assert_eq!(cart, app.get_json(&location).await, "add answers with the cart as GET shows it");

    let lines = cart["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["product_id"], ids[0]);
    assert_eq!(lines[0]["quantity"], 5, "adding a product again adds to its line");
    let mut total = 0;
    for line in lines {
        let product = app.get_json(&format!("/api/products/{}", line["product_id"])).await;
        assert_eq!(line["unit_price_cents"], product["price_cents"], "cart and product page agree");
        assert_eq!(line["name"], product["name"]);
        let line_total = line["unit_price_cents"].as_i64().unwrap() * line["quantity"].as_i64().unwrap();
        assert_eq!(line["line_total_cents"], line_total);
        total += line_total;
    }
    assert_eq!(cart["total_cents"], total);
    assert_eq!(cart["item_count"], 6);
}

#[tokio::test]
async fn adding_items_validates_the_request_and_names_the_field() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    let cart_id = app.new_cart().await;
    let path = format!("/api/carts/{cart_id}/items");
    for (body, field, rule) in [
        (json!({"product_id": id, "quantity": 0}), "quantity", "minimum"),
        (json!({"product_id": id, "quantity": 21}), "quantity", "maximum"),
        (json!({"product_id": id, "quantity": -1}), "quantity", "type"),
        (json!({"product_id": id}), "quantity", "required"),
        (json!({"product_id": "x", "quantity": 1}), "product_id", "type"),
        (json!({"product_id": 0, "quantity": 1}), "product_id", "minimum"),
        (json!({"product_id": id, "quantity": 1, "gift": true}), "gift", "unknown_field"),
    ] {
        let resp = app.post_json(&path, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(details(&error), vec![(field.to_owned(), rule.to_owned())], "{body}: {error}");
    }
    let resp = app.post_json("/api/carts/not-a-uuid/items", &json!({"product_id": id, "quantity": 1})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap()), vec![("cart_id".to_owned(), "format".to_owned())]);

    let unknown_cart = uuid::Uuid::new_v4();
    let resp = app.add_item(&unknown_cart.to_string(), id, 1).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app.add_item(&cart_id, 999_999, 1).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.text().await.unwrap().contains("product 999999"));

    let resp = app.http.post(app.url(&path)).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "JSON bodies need their content type");

    for _ in 0..4 {
        assert_eq!(app.add_item(&cart_id, id, 20).await.status(), StatusCode::OK);
    }
    assert_eq!(app.add_item(&cart_id, id, 20).await.status(), StatusCode::CONFLICT, "a line holds at most 99");
}

#[tokio::test]
async fn checkout_places_an_order_decrements_stock_and_empties_the_cart() {
    let app = spawn_app().await;
    let ids = app.product_ids(2).await;
    let before = [app.stock(ids[0]).await, app.stock(ids[1]).await];
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, ids[0], 2).await;
    app.add_item(&cart_id, ids[1], 1).await;
    let cart = app.get_json(&format!("/api/carts/{cart_id}")).await;

    let resp = app.checkout(&cart_id, None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let order: Value = resp.json().await.unwrap();
    assert_eq!(order["status"], "placed");
    assert_eq!(order["email"], "ada@example.com");
    assert_eq!(order["cart_id"], cart_id.as_str());
    assert_eq!(order["total_cents"], cart["total_cents"]);
    assert_eq!(order["item_count"], 3);
    assert_eq!(order["items"], cart["lines"]);

    assert_eq!(app.stock(ids[0]).await, before[0] - 2);
    assert_eq!(app.stock(ids[1]).await, before[1] - 1);
    assert_eq!(app.get_json(&format!("/api/carts/{cart_id}")).await["lines"], json!([]));

    let fetched = app.get_json(&format!("/api/orders/{}", order["id"])).await;
    assert_eq!(fetched, order);
    assert_eq!(app.metric("shop_orders_created_total", &[]).await, 1.0);
}

#[tokio::test]
async fn checkout_retried_with_the_same_idempotency_key_returns_the_same_order() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    let before = app.stock(id).await;
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, id, 1).await;

    // Two attempts at once, and one more afterwards: one order, stock taken once.
    let (a, b) = tokio::join!(app.checkout(&cart_id, Some("retry-7")), app.checkout(&cart_id, Some("retry-7")));
    let third = app.checkout(&cart_id, Some("retry-7")).await;
    let mut orders = Vec::new();
    for resp in [a, b, third] {
        assert_eq!(resp.status(), StatusCode::CREATED);
        orders.push(resp.json::<Value>().await.unwrap());
    }
    assert_eq!(orders[0]["id"], orders[1]["id"]);
    assert_eq!(orders[0]["id"], orders[2]["id"]);
    assert_eq!(orders[0], orders[2]);
    assert_eq!(app.stock(id).await, before - 1);
    assert_eq!(app.metric("shop_orders_created_total", &[]).await, 1.0);

    // The same key for another cart is a client bug, not a retry.
    let other = app.new_cart().await;
    app.add_item(&other, id, 1).await;
    let resp = app.checkout(&other, Some("retry-7")).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(app.metric("shop_checkout_failures_total", &[("reason", "idempotency_conflict")]).await, 1.0);

    let resp = app
        .http
        .post(app.url("/api/checkout"))
        .header("Idempotency-Key", "")
        .json(&json!({"cart_id": other, "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap()), vec![("Idempotency-Key".to_owned(), "format".to_owned())]);
}

#[tokio::test]
async fn checkout_with_insufficient_stock_is_a_409_and_changes_nothing() {
    let app = spawn_app().await;
    let ids = app.product_ids(2).await;
    let mut conn = app.db.connect().await;
    sqlx::query("UPDATE products SET stock = 1 WHERE id = $1").bind(ids[1]).execute(&mut conn).await.unwrap();
    let before = app.stock(ids[0]).await;
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, ids[0], 1).await;
    app.add_item(&cart_id, ids[1], 2).await;

    let resp = app.checkout(&cart_id, None).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(&format!("product {}", ids[1])), "{body}");
    assert_eq!(app.stock(ids[0]).await, before);
    assert_eq!(app.stock(ids[1]).await, 1);
    assert_eq!(app.get_json(&format!("/api/carts/{cart_id}")).await["lines"].as_array().unwrap().len(), 2);
    assert_eq!(app.metric("shop_checkout_failures_total", &[("reason", "insufficient_stock")]).await, 1.0);
}

#[tokio::test]
async fn checkout_of_an_empty_or_unknown_cart_or_with_a_bad_email_fails_precisely() {
    let app = spawn_app().await;
    let cart_id = app.new_cart().await;
    let resp = app.checkout(&cart_id, None).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = app.checkout(&uuid::Uuid::new_v4().to_string(), None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app.post_json("/api/checkout", &json!({"cart_id": cart_id, "email": "not-an-email"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap()), vec![("email".to_owned(), "format".to_owned())]);
    let resp = app.post_json("/api/checkout", &json!({"cart_id": "nope", "email": "ada@example.com"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap())[0].0, "cart_id");
    assert_eq!(app.metric("shop_checkout_failures_total", &[("reason", "empty_cart")]).await, 1.0);
    assert_eq!(app.metric("shop_checkout_failures_total", &[("reason", "cart_not_found")]).await, 1.0);
    assert_eq!(app.metric("shop_checkout_failures_total", &[("reason", "invalid_request")]).await, 2.0);
}

#[tokio::test]
async fn seeded_order_history_is_readable_and_order_ids_are_validated() {
    let app = spawn_app().await;
    let order = app.get_json("/api/orders/1").await;
    assert_eq!(order["id"], 1);
    let items = order["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 4, "{order}");
    let total: i64 = items.iter().map(|i| i["line_total_cents"].as_i64().unwrap()).sum();
    assert_eq!(order["total_cents"], total);
    assert!(order.get("cart_id").is_none());

    let resp = app.get("/api/orders/abc").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap()), vec![("id".to_owned(), "type".to_owned())]);
    assert_eq!(app.get("/api/orders/999999").await.status(), StatusCode::NOT_FOUND);

    // New orders continue after the seeded history.
    let id = app.product_ids(1).await[0];
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, id, 1).await;
    let placed: Value = app.checkout(&cart_id, None).await.json().await.unwrap();
    assert_eq!(placed["id"], 501);
}
