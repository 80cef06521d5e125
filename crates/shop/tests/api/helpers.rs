//! Test scaffolding: the shop started in-process on port 0 on a fresh database per test
//! (`test_support::TestDb`), tokens, and a reader for the Prometheus text format.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::{JwtSigner, Role};
use shop::config::ShopConfig;
use shop::{Application, Settings};
use test_support::{TestDb, public_keys, signer};
pub use test_support::{details, metric_value, wait_for};
use tokio::sync::oneshot;

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub keys: &'static JwtSigner,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Last, so the server is told to stop before its database goes.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub struct Options {
    pub products: u32,
    pub orders: u32,
    pub config: ShopConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self { products: 300, orders: 500, config: ShopConfig::default() }
    }
}

pub fn settings(db: &TestDb, options: &Options) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone().into(),
        jwt_keys: public_keys(),
        seed_products: options.products,
        seed_orders: options.orders,
        initial_config: options.config.clone(),
        connect_timeout: Duration::from_secs(5),
        drain: Duration::from_secs(1),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let db = TestDb::create("shop_test").await;
    let app = Application::build(settings(&db, &options)).await.expect("the shop builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp { address, http: reqwest::Client::new(), keys: signer(), shutdown: Some(tx), server: Some(server), db }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub fn token(&self, role: Role) -> String {
        self.keys.mint("shop-test", role, Duration::from_secs(600)).unwrap()
    }

    pub async fn patch_config(&self, role: Role, patch: Value) -> Response {
        self.http.patch(self.url("/config")).bearer_auth(self.token(role)).json(&patch).send().await.unwrap()
    }

    /// Applies `patch` as the instructor and insists it is accepted.
    pub async fn configure(&self, patch: Value) {
        let resp = self.patch_config(Role::Instructor, patch.clone()).await;
        let status = resp.status();
        assert_eq!(status, StatusCode::OK, "PATCH /config {patch}: {}", resp.text().await.unwrap());
    }

    pub async fn config(&self) -> Value {
        let resp = self.http.get(self.url("/config")).bearer_auth(self.token(Role::Learner)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// A product id from the catalog.
    pub async fn product_ids(&self, limit: u32) -> Vec<i64> {
        let page = self.get_json(&format!("/api/products?limit={limit}")).await;
        page["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
    }

    pub async fn new_cart(&self) -> String {
        let resp = self.http.post(self.url("/api/carts")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: Value = resp.json().await.unwrap();
        body["cart_id"].as_str().unwrap().to_owned()
    }

    pub async fn add_item(&self, cart_id: &str, product_id: i64, quantity: u32) -> Response {
        self.post_json(&format!("/api/carts/{cart_id}/items"), &json!({"product_id": product_id, "quantity": quantity}))
            .await
    }

    pub async fn checkout(&self, cart_id: &str, key: Option<&str>) -> Response {
        let mut req =
            self.http.post(self.url("/api/checkout")).json(&json!({"cart_id": cart_id, "email": "ada@example.com"}));
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.unwrap()
    }

    pub async fn stock(&self, product_id: i64) -> i64 {
        let product = self.get_json(&format!("/api/products/{product_id}")).await;
        product["stock"].as_i64().unwrap()
    }
}
