//! Start-up: seeding (sizes, shape, idempotence, two shops at once), a clear failure when the
//! database is unreachable, and the OpenAPI document.

use std::time::Duration;

use shop::{Application, Settings};
use test_support::{TestDb, public_keys};

use crate::helpers::{Options, settings, spawn_app};

async fn counts(db: &TestDb) -> (i64, i64, i64, i64) {
    let mut conn = db.connect().await;
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM orders), \
                (SELECT count(*) FROM order_items), (SELECT count(DISTINCT category) FROM products)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn default_seed_creates_ten_thousand_products_and_a_hundred_thousand_orders() {
    let db = TestDb::create("shop_test").await;
    let defaults = Settings::default();
    let options = Options { products: defaults.seed_products, orders: defaults.seed_orders, ..Options::default() };
    let app = Application::build(settings(&db, &options)).await.unwrap();
    let (products, orders, items, categories) = counts(&db).await;
    assert_eq!((products, orders, categories), (10_000, 100_000, 12));
    let per_order = items as f64 / orders as f64;
    assert!((2.4..=2.6).contains(&per_order), "{per_order} items per order");

    let mut conn = db.connect().await;
    let (min_price, max_price, min_stock, distinct_names): (i64, i64, i32, i64) = sqlx::query_as(
        "SELECT min(base_price_cents), max(base_price_cents), min(stock), count(DISTINCT name) FROM products",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(min_price > 0 && max_price > 10 * min_price, "{min_price}..{max_price}");
    assert!(min_stock > 0);
    assert!(distinct_names > 5_000, "{distinct_names} distinct names");
    let unpriced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o WHERE total_cents <> \
         (SELECT sum(quantity * unit_price_cents) FROM order_items WHERE order_id = o.id)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(unpriced, 0, "order totals match their lines");
    drop(app);
}

#[tokio::test]
async fn seeding_is_idempotent_even_when_two_shops_start_together() {
    let db = TestDb::create("shop_test").await;
    let options = Options { products: 240, orders: 100, ..Options::default() };
    let (a, b) = tokio::join!(Application::build(settings(&db, &options)), Application::build(settings(&db, &options)));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (products, orders, _, _) = counts(&db).await;
    assert_eq!((products, orders), (240, 100));
    drop((a, b));

    // A restart with bigger seed sizes leaves existing data alone.
    let bigger = Options { products: 500, orders: 500, ..Options::default() };
    let again = Application::build(settings(&db, &bigger)).await.unwrap();
    let (products, orders, _, _) = counts(&db).await;
    assert_eq!((products, orders), (240, 100));
    drop(again);
}

#[tokio::test]
async fn unreachable_database_fails_start_up_with_a_message_naming_host_and_database() {
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: "postgres://postgres:hunter2@127.0.0.1:1/shop_nowhere".to_owned().into(),
        jwt_keys: public_keys(),
        connect_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let err = Application::build(settings).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("127.0.0.1:1/shop_nowhere"), "{message}");
    assert!(!message.contains("hunter2"), "the password never appears: {message}");
}

#[tokio::test]
async fn no_public_keys_are_refused_before_anything_starts() {
    let settings = Settings { listen: "127.0.0.1:0".parse().unwrap(), ..Settings::default() };
    let err = Application::build(settings).await.unwrap_err();
    assert!(format!("{err:#}").contains("OBSERVASTACK_JWT_PUBLIC_KEYS"), "{err:#}");
}

#[test]
fn openapi_documents_every_business_route() {
    let doc = serde_json::to_value(shop::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for route in shop::ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} undocumented"))[method.to_lowercase()];
        assert!(operation.is_object(), "{route} undocumented");
        assert!(operation["responses"]["200"].is_object() || operation["responses"]["201"].is_object(), "{route}");
    }
    assert_eq!(paths.len(), 9, "only business routes: {:?}", paths.keys().collect::<Vec<_>>());
    for schema in ["Product", "Cart", "Order", "AddItem", "CheckoutRequest", "ErrorBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} schema missing");
    }
}

/// `shop::ROUTES` keys the faults, is the user gateway's allow-list and is documented above; here
/// it is tied to the router: every listed route reaches a handler (no router 404 or 405).
#[tokio::test]
async fn the_router_serves_every_listed_route() {
    let app = spawn_app().await;
    for route in shop::ROUTES {
        let (method, template) = route.split_once(' ').unwrap();
        let path = template.replace("{id}", "1").replace("{cart_id}", "00000000-0000-0000-0000-000000000000");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app.http.request(method, app.url(&path)).json(&serde_json::json!({})).send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_ne!(status, 405, "{route}: {body}");
        assert!(!body.contains("no route for"), "{route} is not routed: {status} {body}");
    }
}
