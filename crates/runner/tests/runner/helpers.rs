//! Test scaffolding: the shop (on a fresh `test_support::TestDb`), the user gateway and the
//! runner started in-process on port 0, a slow target we control, tokens and pollers.

#![allow(dead_code)] // Each test module uses a different part of this file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use gateway::{Gateway, GatewayRole};
use reqwest::{Response, StatusCode};
use runner::{Application, RunnerConfig, Settings};
use serde_json::Value;
use service_kit::Role;
use test_support::{TestDb, public_keys, signer};
pub use test_support::{details, metric_value, wait_for};
use tokio::sync::oneshot;

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap()
}

pub fn token(role: Role) -> String {
    signer().mint("runner-test", role, Duration::from_secs(600)).unwrap()
}

/// Stops a server task when dropped.
struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The shop and the user gateway in front of it, on a fresh database.
pub struct Shop {
    pub gateway_url: String,
    pub shop_url: String,
    _gateway: Running,
    _shop: Running,
    // Last, so the servers stop before their database goes.
    pub db: TestDb,
}

impl Shop {
    pub async fn start() -> Self {
        let db = TestDb::create("runner_test").await;
        let settings = shop::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone().into(),
            jwt_keys: public_keys(),
            seed_products: 300,
            seed_orders: 100,
            initial_config: shop::ShopConfig::default(),
            connect_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(1),
        };
        let app = shop::Application::build(settings).await.expect("the shop builds");
        let shop_url = format!("http://127.0.0.1:{}", app.port());
        let (tx, rx) = oneshot::channel::<()>();
        let shop = Running {
            shutdown: Some(tx),
            task: Some(tokio::spawn(app.run_until(async move {
                let _ = rx.await;
            }))),
        };

        let mut settings = gateway::Settings::new(GatewayRole::User, public_keys());
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.admin_listen = "127.0.0.1:0".parse().unwrap();
        settings.shop_url = shop_url.parse().unwrap();
        settings.threads = 1;
        settings.drain = Duration::from_secs(1);
        let gw = Gateway::build(settings).unwrap();
        let gateway_url = format!("http://{}", gw.public_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let gateway = Running {
            shutdown: Some(tx),
            task: Some(tokio::spawn(gw.run_until(async move {
                let _ = rx.await;
            }))),
        };
        Self { gateway_url, shop_url, _gateway: gateway, _shop: shop, db }
    }

    /// Merge-patches the shop's `/config` as the instructor.
    pub async fn configure(&self, patch: Value) {
        let resp = http()
            .patch(format!("{}/config", self.shop_url))
            .bearer_auth(token(Role::Instructor))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    }
}

/// The runner, in-process on port 0, aimed at `target`.
pub struct TestRunner {
    pub address: String,
    _running: Running,
}

impl TestRunner {
    pub async fn start(target: &str) -> Self {
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            target: target.to_owned(),
            jwt_keys: public_keys(),
            threads: 1,
            connections: 32,
            max_in_flight: 1000,
            initial_config: RunnerConfig::default(),
            drain: Duration::from_secs(2),
        };
        let app = Application::build(settings).await.expect("the runner builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let (tx, rx) = oneshot::channel::<()>();
        let running = Running {
            shutdown: Some(tx),
            task: Some(tokio::spawn(app.run_until(async move {
                let _ = rx.await;
            }))),
        };
        Self { address, _running: running }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Patches `/config` as the orchestrator does: every runner field is instructor-only.
    pub async fn patch_config(&self, patch: &Value) -> Response {
        self.patch_config_as(Role::Instructor, patch).await
    }

    pub async fn patch_config_as(&self, role: Role, patch: &Value) -> Response {
        http().patch(self.url("/config")).bearer_auth(token(role)).json(patch).send().await.unwrap()
    }

    /// Applies `patch` as the instructor and insists it is accepted.
    pub async fn configure(&self, patch: Value) {
        let resp = self.patch_config(&patch).await;
        let status = resp.status();
        assert_eq!(status, StatusCode::OK, "PATCH /config {patch}: {}", resp.text().await.unwrap());
    }

    pub async fn slis(&self, window_secs: u32) -> Value {
        let resp = http().get(self.url(&format!("/slis?window_secs={window_secs}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        http().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// A target that answers every request after `delay`, counting requests and the most that
/// were in progress at once.
pub struct SlowTarget {
    pub url: String,
    pub state: Arc<TargetState>,
}

#[derive(Default)]
pub struct TargetState {
    pub delay_ms: AtomicUsize,
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl SlowTarget {
    pub async fn start(delay: Duration) -> Self {
        let state = Arc::new(TargetState::default());
        state.delay_ms.store(usize::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn answer(State(state): State<Arc<TargetState>>) -> &'static str {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(u64::try_from(delay).unwrap())).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    "ok"
}
