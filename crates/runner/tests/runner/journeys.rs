//! Every journey against the real shop behind the real user gateway.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Shop, TestRunner, metric_value, wait_for};

const BUSINESS: [&str; 5] = ["browse", "search", "product", "cart", "checkout"];

fn every_journey(rate: f64) -> Value {
    json!({
        "enabled": true,
        "load": {
            "rate": rate,
            "think_time_ms": 10,
            "mix": {"browse": 1, "search": 1, "product": 1, "cart": 1, "checkout": 1}
        }
    })
}

fn completed(slis: &Value, journey: &str) -> u64 {
    slis["journeys"][journey]["completed"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn every_journey_succeeds_against_the_shop_and_checkout_places_orders() {
    let shop = Shop::start().await;
    let runner = TestRunner::start(&shop.gateway_url).await;
    runner.configure(every_journey(20.0)).await;
    let slis = wait_for("five of each journey", Duration::from_secs(60), || async {
        let slis = runner.slis(300).await;
        BUSINESS.iter().all(|j| completed(&slis, j) >= 5).then_some(slis)
    })
    .await;
    for journey in BUSINESS {
        let s = &slis["journeys"][journey];
        assert_eq!(s["failed"], 0, "{journey}: {s}");
        assert_eq!(s["success_ratio"], 1.0, "{journey}: {s}");
        assert!(s["p50_ms"].as_f64().unwrap() > 0.0, "{journey}: {s}");
    }
    assert!(slis["journeys"]["checkout"]["orders_per_minute"].as_f64().unwrap() > 0.0);
    runner.configure(json!({"enabled": false})).await;

    // Every successful checkout is an order in the shop's database, from a cart.
    let metrics = runner.metrics().await;
    let orders = wait_for("the runner's order count to settle", Duration::from_secs(10), || async {
        let metrics = runner.metrics().await;
        let in_flight = metric_value(&metrics, "runner_in_flight_journeys", &[]);
        (in_flight == 0.0).then(|| metric_value(&metrics, "runner_orders_total", &[]))
    })
    .await;
    assert!(orders >= 5.0, "{orders} orders; metrics:\n{metrics}");
    let placed = shop.db.scalar("SELECT count(*) FROM orders WHERE cart_id IS NOT NULL").await;
    assert!(placed as f64 >= orders, "shop has {placed} orders from carts, runner counted {orders}");
    assert!(metric_value(&metrics, "runner_journeys_total", &[("journey", "checkout"), ("outcome", "ok")]) >= 5.0);
}

#[tokio::test]
async fn a_failing_step_fails_its_journey() {
    // Release 2.4.1 breaks POST /api/checkout only: checkout journeys fail at their last step,
    // cart journeys (the same steps but the checkout) still succeed.
    let shop = Shop::start().await;
    shop.configure(json!({"release": {"version": "2.4.1"}})).await;
    let runner = TestRunner::start(&shop.gateway_url).await;
    runner
        .configure(json!({
            "enabled": true,
            "load": {
                "rate": 20,
                "think_time_ms": 5,
                "mix": {"browse": 0, "search": 0, "product": 0, "cart": 1, "checkout": 1}
            }
        }))
        .await;
    let slis = wait_for("cart and checkout journeys", Duration::from_secs(60), || async {
        let slis = runner.slis(300).await;
        (completed(&slis, "cart") >= 5 && completed(&slis, "checkout") >= 5).then_some(slis)
    })
    .await;
    let checkout = &slis["journeys"]["checkout"];
    assert_eq!(checkout["failed"], checkout["completed"], "{checkout}");
    assert_eq!(checkout["success_ratio"], 0.0);
    assert_eq!(checkout["orders_per_minute"], 0.0);
    assert_eq!(slis["journeys"]["cart"]["failed"], 0);
    assert!(slis["journeys"].get("browse").is_none(), "only the mixed journeys run: {slis}");
    let metrics = runner.metrics().await;
    assert!(
        metric_value(&metrics, "runner_journey_failures_total", &[("journey", "checkout"), ("reason", "status_5xx")])
            >= 5.0
    );
    assert_eq!(metric_value(&metrics, "runner_orders_total", &[]), 0.0);
}
