//! PostgreSQL goes away under steady checkout load and comes back: the shop answers fast 503s
//! with `Retry-After` while it is down (never hanging past its own timeouts), serves again
//! within 10 s of the database returning without being restarted itself, and no committed
//! order is lost or duplicated.
//!
//! The database is a cluster of its own (`pg_createcluster` on a free port), stopped and
//! started with `pg_ctlcluster`: restarting the machine's shared cluster would fail every
//! other test running at the same time.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::Application;
use sqlx::{Connection, PgConnection};
use test_support::public_keys;
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

use crate::helpers::Options;

/// A PostgreSQL cluster of this test's own, dropped with it.
struct Cluster {
    version: String,
    name: String,
    port: u16,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn create() -> Self {
        // The installed major version, as `pg_lsclusters` lists it for the machine's cluster.
        let out = Command::new("pg_lsclusters").arg("--no-header").output().expect("pg_lsclusters (postgresql-common)");
        let listing = String::from_utf8_lossy(&out.stdout);
        let version = listing.split_whitespace().next().expect("a PostgreSQL cluster is installed").to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let name = format!("restart_{}", &Uuid::new_v4().simple().to_string()[..8]);
        run(Command::new("pg_createcluster").args([&version, &name, "-p", &port.to_string(), "--", "--auth=trust"]));
        let cluster = Self { version, name, port };
        cluster.ctl("start");
        cluster
    }

    fn ctl(&self, action: &str) {
        run(Command::new("pg_ctlcluster").args([&self.version, &self.name, action, "-m", "fast"]));
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster").args(["--stop", &self.version, &self.name]).output();
    }
}

/// What one checkout attempt saw.
#[derive(Debug, Clone)]
struct Attempt {
    key: String,
    cart: Option<String>,
    status: Option<StatusCode>,
    order_id: Option<i64>,
    started: Instant,
    took: Duration,
    retry_after: bool,
}

async fn checkout_once(http: &reqwest::Client, base: &str, product: i64, key: String) -> Attempt {
    let started = Instant::now();
    let mut attempt = Attempt {
        key: key.clone(),
        cart: None,
        status: None,
        order_id: None,
        started,
        took: Duration::ZERO,
        retry_after: false,
    };
    let steps = async {
        let resp = http.post(format!("{base}/api/carts")).send().await?;
        if resp.status() != StatusCode::CREATED {
            return Ok::<_, reqwest::Error>(resp);
        }
        let cart: Value = resp.json().await?;
        let cart = cart["cart_id"].as_str().unwrap_or_default().to_owned();
        attempt.cart = Some(cart.clone());
        let resp = http
            .post(format!("{base}/api/carts/{cart}/items"))
            .json(&json!({"product_id": product, "quantity": 1}))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Ok(resp);
        }
        http.post(format!("{base}/api/checkout"))
            .header("Idempotency-Key", &key)
            .json(&json!({"cart_id": cart, "email": "ada@example.com"}))
            .send()
            .await
    };
    if let Ok(resp) = steps.await {
        attempt.status = Some(resp.status());
        attempt.retry_after = resp.headers().contains_key("retry-after");
        if resp.status() == StatusCode::CREATED {
            let order: Value = resp.json().await.unwrap_or_default();
            attempt.order_id = order["id"].as_i64();
        }
    }
    attempt.took = started.elapsed();
    attempt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_gives_fast_503s_then_recovers_and_loses_no_order() {
    let cluster = Cluster::create();
    let mut admin = PgConnection::connect(&cluster.url("postgres")).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE shop").execute(&mut admin).await.unwrap();
    drop(admin);
    let options = Options { products: 50, orders: 0, ..Options::default() };
    let settings = shop::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: cluster.url("shop").into(),
        jwt_keys: public_keys(),
        seed_products: options.products,
        seed_orders: options.orders,
        initial_config: options.config.clone(),
        connect_timeout: Duration::from_secs(5),
        drain: Duration::from_secs(1),
    };
    let config = settings.initial_config.clone();
    let app = Application::build(settings).await.expect("the shop builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    // Orders spread over the catalog, so stock (20–500 a product) does not run out.
    let page: Value = http.get(format!("{base}/api/products?limit=50")).send().await.unwrap().json().await.unwrap();
    let products: Arc<Vec<i64>> =
        Arc::new(page["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect());

    // Steady load: four clients checking out back to back.
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, base, attempts, running) = (http.clone(), base.clone(), attempts.clone(), running.clone());
        let products = products.clone();
        clients.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let product = products[fastrand::usize(..products.len())];
                let attempt = checkout_once(&http, &base, product, Uuid::new_v4().to_string()).await;
                let failed = attempt.status != Some(StatusCode::CREATED);
                attempts.lock().await.push(attempt);
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.ctl("stop");
    // After `stop` returns: a fast shutdown first waits for the server to finish.
    let down_at = Instant::now();
    // Long enough for every client to see several whole attempts fail (each waits up to the
    // pool's acquire timeout, 2 s) even on a busy machine.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // PostgreSQL accepts connections a little before `start` returns: the down window ends
    // when the start begins, the recovery clock when it has returned.
    let start_at = Instant::now();
    cluster.ctl("start");
    let up_at = Instant::now();
    // Serving again: a whole checkout succeeds.
    let recovered_at = loop {
        let since = attempts
            .lock()
            .await
            .iter()
            .filter(|a| a.started >= up_at && a.status == Some(StatusCode::CREATED))
            .count();
        if since > 0 || up_at.elapsed() > Duration::from_secs(30) {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let attempts = attempts.lock().await.clone();

    // While the database was down: 503s with Retry-After, each within the shop's own bound.
    let bound = Duration::from_millis(u64::from(config.db.acquire_timeout_ms)) + Duration::from_secs(1);
    let during: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= down_at + Duration::from_millis(500) && a.started + a.took < start_at)
        .collect();
    assert!(during.len() >= 4, "requests kept flowing while the database was down: {}", during.len());
    for a in &during {
        assert_eq!(a.status, Some(StatusCode::SERVICE_UNAVAILABLE), "{a:?}");
        assert!(a.retry_after, "a 503 says when to retry: {a:?}");
        assert!(a.took <= bound, "answered within {bound:?}: {a:?}");
    }
    let recovery = recovered_at.saturating_duration_since(up_at);
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    let summary = format!(
        "{} attempts while down, slowest {slowest:?}; serving again {recovery:?} after the start",
        during.len()
    );
    assert!(recovery <= Duration::from_secs(10), "{summary}");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "ready again without a restart");

    // No order lost or duplicated. Retrying every attempt whose outcome the client did not
    // see as 201 with its key settles it: the shop either replays the committed order or
    // places it now, never twice.
    let mut confirmed: Vec<(String, i64)> = attempts
        .iter()
        .filter(|a| a.status == Some(StatusCode::CREATED))
        .map(|a| (a.key.clone(), a.order_id.expect("a 201 names its order")))
        .collect();
    assert!(confirmed.len() >= 10, "load placed orders: {}", confirmed.len());
    for a in attempts.iter().filter(|a| a.status != Some(StatusCode::CREATED)) {
        let Some(cart) = &a.cart else { continue };
        let resp = http
            .post(format!("{base}/api/checkout"))
            .header("Idempotency-Key", &a.key)
            .json(&json!({"cart_id": cart, "email": "ada@example.com"}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "retrying {a:?} after recovery: {status} {body}"
        );
        if status == StatusCode::CREATED {
            confirmed.push((a.key.clone(), body["id"].as_i64().unwrap()));
        }
    }
    let mut db = PgConnection::connect(&cluster.url("shop")).await.unwrap();
    let rows: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, idempotency_key FROM orders").fetch_all(&mut db).await.unwrap();
    let keys: Vec<&String> = confirmed.iter().map(|(k, _)| k).collect();
    for (key, id) in &confirmed {
        let matching: Vec<_> = rows.iter().filter(|(_, k)| k.as_deref() == Some(key.as_str())).collect();
        assert_eq!(matching.len(), 1, "order for key {key}: {matching:?}");
        assert_eq!(matching[0].0, *id, "the order the client was told about is the one stored");
    }
    let unconfirmed: Vec<_> = rows.iter().filter(|(_, k)| k.as_ref().is_none_or(|k| !keys.contains(&k))).collect();
    assert!(unconfirmed.is_empty(), "orders nobody was told about: {unconfirmed:?}");
    drop(db);

    let _ = stop_tx.send(());
    let _ = server.await;
}
