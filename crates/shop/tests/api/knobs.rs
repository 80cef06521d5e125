//! Every scenario knob changes behaviour measurably: pricing CPU, worker pool queueing and
//! shedding, database pool waits, the search plan, and the bad release.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Role;
use sqlx::Connection as _;

use crate::helpers::{Options, TestApp, metric_value, spawn_app, spawn_app_with, wait_for};

/// Thread CPU seconds and lines priced by `algorithm`, from `/metrics`.
async fn pricing_counters(app: &TestApp, algorithm: &str) -> (f64, f64) {
    let text = app.metrics().await;
    (
        metric_value(&text, "shop_pricing_cpu_seconds_total", &[("algorithm", algorithm)]),
        metric_value(&text, "shop_pricing_lines_total", &[("algorithm", algorithm)]),
    )
}

#[tokio::test]
async fn quadratic_pricing_burns_at_least_twenty_times_the_cpu_per_request() {
    // 200 products per category, so the rank table is big enough to cost something.
    let app = spawn_app_with(Options { products: 2400, orders: 0, ..Options::default() }).await;
    let ids = app.product_ids(20).await;
    let mut prices = Vec::new();
    for id in &ids {
        prices.push(app.get_json(&format!("/api/products/{id}")).await["price_cents"].clone());
    }
    let (efficient_cpu, efficient_lines) = pricing_counters(&app, "efficient").await;
    assert_eq!(efficient_lines, 20.0);

    app.configure(json!({"pricing": {"algorithm": "quadratic"}})).await;
    for (id, price) in ids.iter().zip(&prices) {
        let product = app.get_json(&format!("/api/products/{id}")).await;
        assert_eq!(&product["price_cents"], price, "same prices, only slower");
    }
    let (quadratic_cpu, quadratic_lines) = pricing_counters(&app, "quadratic").await;
    assert_eq!(quadratic_lines, 20.0);
    assert!(quadratic_cpu > 0.0);
    assert!(
        quadratic_cpu >= 20.0 * efficient_cpu,
        "quadratic {quadratic_cpu:.6}s vs efficient {efficient_cpu:.6}s of CPU for 20 requests each"
    );
    // The efficient counter did not move while quadratic was in force.
    assert_eq!(pricing_counters(&app, "efficient").await.1, 20.0);
}

/// Makes every product page take at least `ms` of a worker's time.
async fn slow_product_pages(app: &TestApp, ms: u32) {
    app.configure(json!({"faults": {"GET /api/products/{id}": {"latency_ms": ms}}})).await;
}

#[tokio::test]
async fn one_worker_makes_concurrent_requests_queue_behind_each_other() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    app.configure(json!({"workers": {"max_concurrent": 1}})).await;
    slow_product_pages(&app, 300).await;
    assert_eq!(app.metric("shop_worker_pool_limit", &[]).await, 1.0);

    let started = Instant::now();
    let path = format!("/api/products/{id}");
    let requests = futures_util::future::join_all((0..4).map(|_| app.get(&path)));
    let sampler = async {
        // Sample the queue gauge while the requests run; /metrics is outside the pool.
        let mut max_queued: f64 = 0.0;
        while started.elapsed() < Duration::from_millis(1000) {
            max_queued = max_queued.max(app.metric("shop_worker_pool_queued", &[]).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max_queued
    };
    let (responses, max_queued) = tokio::join!(requests, sampler);
    let elapsed = started.elapsed();
    for resp in responses {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(elapsed >= Duration::from_millis(1200), "4 × 300 ms through one worker took only {elapsed:?}");
    assert!(max_queued > 0.0, "the queue gauge never showed a waiting request");
    assert!(app.metric("shop_worker_pool_queued_total", &[]).await >= 1.0);
    assert_eq!(app.metric("shop_worker_pool_rejected_total", &[]).await, 0.0);
    assert_eq!(app.metric("shop_worker_pool_in_flight", &[]).await, 0.0);

    // Ping stays outside the pool: it is what the proxy benchmark measures.
    let (_, ping) = tokio::join!(app.get(&path), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.get("/api/ping").await.status()
    });
    assert_eq!(ping, StatusCode::OK);
}

#[tokio::test]
async fn a_full_or_slow_queue_sheds_requests_with_503_and_retry_after() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    let path = format!("/api/products/{id}");
    app.configure(json!({"workers": {"max_concurrent": 1, "queue_limit": 0}})).await;
    slow_product_pages(&app, 300).await;

    let responses = futures_util::future::join_all((0..3).map(|_| app.get(&path))).await;
    let ok = responses.iter().filter(|r| r.status() == StatusCode::OK).count();
    let shed: Vec<_> = responses.iter().filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert!(ok >= 1, "someone got the worker");
    assert!(!shed.is_empty(), "with no queue, concurrent requests beyond the worker are refused");
    assert_eq!(ok + shed.len(), 3);
    for resp in &shed {
        assert_eq!(resp.headers()["retry-after"], "1");
    }
    assert_eq!(app.metric("shop_worker_pool_rejected_total", &[("reason", "queue_full")]).await, shed.len() as f64);

    // A queue whose wait runs out sheds too.
    app.configure(json!({"workers": {"queue_limit": 10, "queue_timeout_ms": 50}})).await;
    let responses = futures_util::future::join_all((0..3).map(|_| app.get(&path))).await;
    let timed_out = responses.iter().filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE).count();
    assert!(timed_out >= 1);
    assert_eq!(app.metric("shop_worker_pool_rejected_total", &[("reason", "queue_timeout")]).await, timed_out as f64);

    // Raising the limit repairs it.
    app.configure(json!({"workers": {"max_concurrent": 8}})).await;
    let responses = futures_util::future::join_all((0..3).map(|_| app.get(&path))).await;
    assert!(responses.iter().all(|r| r.status() == StatusCode::OK));
}

#[tokio::test]
async fn a_database_pool_of_one_makes_acquires_wait_and_the_size_metric_follows_config() {
    let app = spawn_app().await;
    assert_eq!(app.metric("shop_db_pool_size", &[]).await, 10.0);
    app.configure(json!({"db": {"pool_size": 1}})).await;
    wait_for("pool size metric = 1", Duration::from_secs(5), || async {
        (app.metric("shop_db_pool_size", &[]).await == 1.0).then_some(())
    })
    .await;

    // A checkout blocks on a product row this test holds locked, keeping the only connection.
    let ids = app.product_ids(2).await;
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, ids[0], 1).await;
    let mut locker = app.db.connect().await;
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("SELECT id FROM products WHERE id = $1 FOR UPDATE").bind(ids[0]).execute(&mut *tx).await.unwrap();

    let count_before = app.metric("shop_db_pool_acquire_duration_seconds_count", &[]).await;
    let sum_before = app.metric("shop_db_pool_acquire_duration_seconds_sum", &[]).await;
    let held = Duration::from_millis(400);
    let checkout = app.checkout(&cart_id, None);
    let readers = async {
        // Let the checkout take the connection, then queue two readers behind it.
        wait_for("checkout holding the connection", Duration::from_secs(5), || async {
            (app.metric("shop_db_pool_in_use", &[]).await >= 1.0).then_some(())
        })
        .await;
        let app = &app;
        let product_pages = futures_util::future::join_all(
            ids.iter().map(|id| async move { app.get(&format!("/api/products/{id}")).await.status() }),
        );
        let observe_and_release = async {
            wait_for("two waiting acquires", Duration::from_secs(5), || async {
                (app.metric("shop_db_pool_waiting", &[]).await >= 2.0).then_some(())
            })
            .await;
            tokio::time::sleep(held).await;
            tx.commit().await.unwrap();
        };
        tokio::join!(product_pages, observe_and_release).0
    };
    let (checkout, pages) = tokio::join!(checkout, readers);
    assert_eq!(checkout.status(), StatusCode::CREATED);
    assert!(pages.iter().all(|s| *s == StatusCode::OK), "{pages:?}");
    let waited = app.metric("shop_db_pool_acquire_duration_seconds_sum", &[]).await - sum_before;
    assert!(app.metric("shop_db_pool_acquire_duration_seconds_count", &[]).await >= count_before + 3.0);
    assert!(waited >= 2.0 * held.as_secs_f64(), "two readers waited ≥ {held:?} each, histogram sum grew {waited}s");
    assert_eq!(app.metric("shop_db_pool_waiting", &[]).await, 0.0);

    // With a short acquire timeout, a held connection means a fast 503, not a hang.
    app.configure(json!({"db": {"acquire_timeout_ms": 100}})).await;
    let cart_id = app.new_cart().await;
    app.add_item(&cart_id, ids[0], 1).await;
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("SELECT id FROM products WHERE id = $1 FOR UPDATE").bind(ids[0]).execute(&mut *tx).await.unwrap();
    let checkout = app.checkout(&cart_id, None);
    let reader = async {
        wait_for("checkout holding the connection", Duration::from_secs(5), || async {
            (app.metric("shop_db_pool_in_use", &[]).await >= 1.0).then_some(())
        })
        .await;
        let resp = app.get(&format!("/api/products/{}", ids[1])).await;
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").cloned();
        tx.commit().await.unwrap();
        (status, retry_after)
    };
    let (checkout, (status, retry_after)) = tokio::join!(checkout, reader);
    assert_eq!(checkout.status(), StatusCode::CREATED);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.unwrap(), "1");
    assert!(app.metric("shop_db_pool_acquire_timeouts_total", &[]).await >= 1.0);

    app.configure(json!({"db": {"pool_size": 7}})).await;
    wait_for("pool size metric = 7", Duration::from_secs(5), || async {
        (app.metric("shop_db_pool_size", &[]).await == 7.0).then_some(())
    })
    .await;
    // The new pool opens its connections on demand; under a loaded machine the first one can
    // take longer than the 100 ms acquire timeout set above, so the page may need a retry.
    wait_for("a product page from the bigger pool", Duration::from_secs(10), || async {
        (app.get(&format!("/api/products/{}", ids[1])).await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// `(seq_scan, idx_scan)` of `products` as PostgreSQL's statistics show them.
async fn scan_counters(app: &TestApp) -> (i64, i64) {
    let mut conn = app.db.connect().await;
    sqlx::query_as("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'products'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Closes the shop's connections (by resizing its pool), which makes their backends flush the
/// statistics they still hold, and waits until they are gone: then the counters are final.
async fn flush_statistics(app: &TestApp, pool_size: u32) {
    app.configure(json!({"db": {"pool_size": pool_size}})).await;
    wait_for("the shop's old connections to close", Duration::from_secs(20), || async {
        let mut conn = app.db.connect().await;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'observastack-shop'",
        )
        .bind(&app.db.name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
}

async fn explain(app: &TestApp, strategy: shop::config::SearchStrategy, q: &str) -> String {
    let (sql, pattern) = shop::routes::catalog::search_statement(strategy, q);
    let mut conn = app.db.connect().await;
    let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}"))
        .bind(pattern)
        .bind(20_i64)
        .persistent(false)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.into_iter().map(|(line,)| line).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn full_scan_search_reads_the_whole_table_while_indexed_search_uses_the_index() {
    let app = spawn_app_with(Options { products: 3000, orders: 0, ..Options::default() }).await;
    use shop::config::SearchStrategy::{FullScan, Indexed};

    let indexed_plan = explain(&app, Indexed, "wireless").await;
    assert!(indexed_plan.contains("products_name_prefix_idx"), "{indexed_plan}");
    assert!(!indexed_plan.contains("Seq Scan"), "{indexed_plan}");
    let full_plan = explain(&app, FullScan, "wireless").await;
    assert!(full_plan.contains("Seq Scan on products"), "{full_plan}");

    // Both find what they promise: the brand lives only in descriptions.
    let by_name = app.get_json("/api/products/search?q=wireless&limit=100").await;
    let by_name = by_name["items"].as_array().unwrap().len();
    assert!(by_name > 0);
    let brand = app.get_json("/api/products/search?q=northwind&limit=100").await;
    assert!(brand["items"].as_array().unwrap().is_empty(), "indexed search matches name prefixes only");

    flush_statistics(&app, 11).await;
    let (seq_before, idx_before) = scan_counters(&app).await;
    for _ in 0..5 {
        app.get_json("/api/products/search?q=wireless").await;
    }
    flush_statistics(&app, 9).await;
    let (seq_mid, idx_mid) = scan_counters(&app).await;
    assert_eq!(seq_mid, seq_before, "indexed searches never scan the table");
    assert!(idx_mid >= idx_before + 5, "each indexed search used an index ({idx_before} → {idx_mid})");

    app.configure(json!({"search": {"strategy": "full_scan"}})).await;
    let brand = app.get_json("/api/products/search?q=northwind&limit=100").await;
    let brand = brand["items"].as_array().unwrap();
    assert!(!brand.is_empty(), "full scan matches descriptions");
    let wireless = app.get_json("/api/products/search?q=wireless&limit=100").await;
    assert!(wireless["items"].as_array().unwrap().len() >= by_name);
    for _ in 0..3 {
        app.get_json("/api/products/search?q=wireless").await;
    }
    flush_statistics(&app, 8).await;
    let (seq_after, _) = scan_counters(&app).await;
    assert!(
        seq_after >= seq_mid + 5,
        "each of the 5 full-scan searches read the whole table ({seq_mid} → {seq_after})"
    );
    assert_eq!(app.metric("shop_search_queries_total", &[("strategy", "full_scan")]).await, 5.0);
}

#[tokio::test]
async fn release_2_4_1_breaks_only_checkout_and_rolling_back_repairs_it() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    app.configure(json!({"release": {"version": "2.4.1"}})).await;

    let cart_id = app.new_cart().await;
    assert_eq!(app.add_item(&cart_id, id, 1).await.status(), StatusCode::OK);
    let resp = app.checkout(&cart_id, None).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "internal error", "nothing internal leaks: {body}");
    assert_eq!(app.metric("shop_checkout_failures_total", &[("reason", "internal")]).await, 1.0);

    // Everything else stays healthy.
    for path in
        ["/api/ping", "/api/products", "/api/products/search?q=w", &format!("/api/products/{id}"), "/api/orders/1"]
    {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(app.get(&format!("/api/carts/{cart_id}")).await.status(), StatusCode::OK);
    assert_eq!(app.get_json(&format!("/api/carts/{cart_id}")).await["lines"].as_array().unwrap().len(), 1);

    // The learner rolls back.
    let resp = app.patch_config(Role::Learner, json!({"release": {"version": "2.4.0"}})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app.checkout(&cart_id, None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let order: Value = resp.json().await.unwrap();
    assert_eq!(order["items"][0]["product_id"], id);
    let mut conn = app.db.connect().await;
    let release: String = sqlx::query_scalar("SELECT release FROM orders WHERE id = $1")
        .bind(order["id"].as_i64().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(release, "2.4.0");
}

#[tokio::test]
async fn a_database_that_refuses_connections_gets_503_with_retry_after_and_recovery_is_automatic() {
    let app = spawn_app().await;
    let id = app.product_ids(1).await[0];
    app.configure(json!({"db": {"acquire_timeout_ms": 300}})).await;
    let mut admin = sqlx::PgConnection::connect(&test_support::admin_url()).await.unwrap();
    let outage = |allow: bool| format!("ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS {allow}", app.db.name);
    sqlx::raw_sql(&outage(false)).execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&app.db.name)
        .execute(&mut admin)
        .await
        .unwrap();

    for path in [format!("/api/products/{id}"), "/api/products".to_owned()] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(resp.headers()["retry-after"], "1");
    }
    assert_eq!(app.get("/readyz").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/api/ping").await.status(), StatusCode::OK, "no database needed");

    sqlx::raw_sql(&outage(true)).execute(&mut admin).await.unwrap();
    wait_for("the shop to reconnect", Duration::from_secs(10), || async {
        (app.get(&format!("/api/products/{id}")).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}
