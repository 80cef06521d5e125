//! Test scaffolding: the whole path a scenario needs, started in-process on port 0 against a
//! fresh PostgreSQL database per test (`test_support::TestDb`): the shop, the user gateway in front of it, the runner
//! driving journeys through the gateway, and the orchestrator over all three. Plus tokens, a
//! WebSocket client and polling helpers.

#![allow(dead_code)] // Each test module uses a different part.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use gateway::{Gateway, GatewayRole};
use orchestrator::Settings;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::{JwtSigner, Role};
use test_support::{TestDb, public_keys, signer};
pub use test_support::{details, wait_for};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The user gateway's header read timeout in these tests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The evaluation period tests run with: fast enough for short windows, light on 2 cores.
pub const TICK: Duration = Duration::from_millis(200);

/// A service running in-process until stopped or dropped.
pub struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn spawn<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Self { shutdown: Some(tx), task: Some(tokio::spawn(run(rx))) }
    }

    /// Asks for shutdown and waits until the service has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn until(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// This crate's test scenarios (light on purpose; the shipped ones are proven by `scenario verify`).
pub fn fixture_scenarios() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub struct Stack {
    pub orchestrator_url: String,
    pub shop_url: String,
    /// The user gateway's public listener (in front of the shop).
    pub gateway_url: String,
    pub gateway_admin_url: String,
    pub runner_url: String,
    pub http: reqwest::Client,
    pub keys: &'static JwtSigner,
    pub hub: std::sync::Arc<orchestrator::Hub>,
    settings: Settings,
    orchestrator: Option<Running>,
    runner: Running,
    gateway: Running,
    shop: Running,
    // Last, so every service has been told to stop before the database goes.
    pub db: TestDb,
}

impl Stack {
    /// Everything up, with the scenarios of `dir` and a small catalog.
    pub async fn start(dir: PathBuf) -> Self {
        Self::start_with(dir, |_| {}).await
    }

    pub async fn start_with(dir: PathBuf, adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start_full(dir, 300, adjust).await
    }

    pub async fn start_full(dir: PathBuf, products: u32, adjust: impl FnOnce(&mut Settings)) -> Self {
        let db = TestDb::create("orchestrator_test").await;
        let shop_app = shop::Application::build(shop::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone().into(),
            jwt_keys: public_keys(),
            seed_products: products,
            seed_orders: 300,
            initial_config: shop::ShopConfig::default(),
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
        })
        .await
        .expect("the shop builds");
        let shop_url = format!("http://127.0.0.1:{}", shop_app.port());
        let shop = Running::spawn(|rx| shop_app.run_until(until(rx)));

        let mut gw = gateway::Settings::new(GatewayRole::User, public_keys());
        gw.listen = "127.0.0.1:0".parse().unwrap();
        gw.admin_listen = "127.0.0.1:0".parse().unwrap();
        gw.shop_url = shop_url.parse().unwrap();
        gw.threads = 1;
        gw.drain = Duration::from_secs(1);
        // Short, so the slow-loris test sees the cut quickly.
        gw.header_read_timeout = HEADER_READ_TIMEOUT;
        let gateway_app = Gateway::build(gw).expect("the gateway builds");
        let gateway_public = format!("http://{}", gateway_app.public_addr());
        let gateway_admin_url = format!("http://{}", gateway_app.admin_addr());
        let gateway = Running::spawn(|rx| gateway_app.run_until(until(rx)));

        let runner_app = runner::Application::build(runner::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            target: gateway_public.clone(),
            jwt_keys: public_keys(),
            threads: 1,
            connections: 32,
            max_in_flight: 2_000,
            initial_config: runner::RunnerConfig::default(),
            drain: Duration::from_secs(1),
        })
        .await
        .expect("the runner builds");
        let runner_url = format!("http://127.0.0.1:{}", runner_app.port());
        let runner = Running::spawn(|rx| runner_app.run_until(until(rx)));

        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone().into(),
            jwt_keys: public_keys(),
            jwt_signer: Some(signer().clone()),
            scenario_dirs: vec![dir],
            services: [("shop", &shop_url), ("gateway", &gateway_admin_url), ("runner", &runner_url)]
                .into_iter()
                .map(|(name, url)| (name.to_owned(), url.clone()))
                .collect(),
            tick: TICK,
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
            ..Settings::default()
        };
        adjust(&mut settings);
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        let mut stack = Self {
            orchestrator_url: String::new(),
            shop_url,
            gateway_url: gateway_public,
            gateway_admin_url,
            runner_url,
            http,
            keys: signer(),
            hub: orchestrator::Hub::new(1, orchestrator::metrics::OrchestratorMetrics::unregistered()),
            settings,
            orchestrator: None,
            runner,
            gateway,
            shop,
            db,
        };
        stack.start_orchestrator().await;
        stack
    }

    async fn start_orchestrator(&mut self) {
        let app = orchestrator::Application::build(self.settings.clone()).await.expect("the orchestrator builds");
        self.orchestrator_url = format!("http://127.0.0.1:{}", app.port());
        self.hub = app.hub();
        self.orchestrator = Some(Running::spawn(|rx| app.run_until(until(rx))));
    }

    /// Stops the orchestrator (its run stays active in the database) and starts a new one on
    /// the same database and services.
    pub async fn restart_orchestrator(&mut self) {
        if let Some(running) = self.orchestrator.take() {
            running.stop().await;
        }
        self.start_orchestrator().await;
    }

    /// Stops everything in order.
    pub async fn stop(mut self) {
        if let Some(running) = self.orchestrator.take() {
            running.stop().await;
        }
        let Stack { runner, gateway, shop, .. } = self;
        runner.stop().await;
        gateway.stop().await;
        shop.stop().await;
    }

    pub fn token(&self, role: Role) -> String {
        let subject = match role {
            Role::Learner => "ada",
            Role::Instructor => "grace",
            Role::Service => "shop",
        };
        self.keys.mint(subject, role, Duration::from_secs(3600)).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.orchestrator_url)
    }

    pub async fn get(&self, path: &str, role: Role) -> Response {
        self.http.get(self.url(path)).bearer_auth(self.token(role)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path, Role::Learner).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Option<Value>, role: Role) -> Response {
        let mut req = self.http.post(self.url(path)).bearer_auth(self.token(role));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Starts `scenario` as the learner and insists on 201.
    pub async fn start_run(&self, scenario: &str, time_scale: f64) -> Value {
        let resp =
            self.post("/api/runs", Some(json!({"scenario": scenario, "time_scale": time_scale})), Role::Learner).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::CREATED, "POST /api/runs: {body}");
        body
    }

    /// Base URL of a service by its orchestrator name.
    pub fn service_url(&self, service: &str) -> &str {
        match service {
            "shop" => &self.shop_url,
            "gateway" => &self.gateway_admin_url,
            "runner" => &self.runner_url,
            other => panic!("unknown service {other}"),
        }
    }

    /// `PATCH {service}/config` with `role`'s token.
    pub async fn patch_config(&self, service: &str, role: Role, patch: &Value) -> Response {
        self.http
            .patch(format!("{}/config", self.service_url(service)))
            .bearer_auth(self.token(role))
            .json(patch)
            .send()
            .await
            .unwrap()
    }

    pub async fn config(&self, service: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}/config", self.service_url(service)))
            .bearer_auth(self.token(Role::Learner))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()["values"].take()
    }

    /// The runner's SLIs over `window_secs`.
    pub async fn slis(&self, window_secs: u32) -> Value {
        let resp = self.http.get(format!("{}/slis?window_secs={window_secs}", self.runner_url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// A WebSocket client on `/api/ws` with a bearer token.
    pub async fn ws(&self, role: Role) -> Ws {
        let url = self.orchestrator_url.replacen("http://", "ws://", 1) + "/api/ws";
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {}", self.token(role)).parse().unwrap());
        let (stream, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket connects");
        assert_eq!(resp.status(), 101);
        Ws { stream, seen: Vec::new() }
    }

    /// Polls `GET /api/runs/{id}` until the run is in `state`.
    pub async fn wait_for_state(&self, run_id: &str, state: &str, within: Duration) -> Value {
        wait_for(&format!("run {run_id} to be {state}"), within, || async {
            let run = self.get_json(&format!("/api/runs/{run_id}")).await;
            (run["state"] == state).then_some(run)
        })
        .await
    }
}

/// A WebSocket client that keeps every message it read.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub seen: Vec<Value>,
}

impl Ws {
    /// The next text message as JSON; `None` when the connection closed. Panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        match tokio::time::timeout(within, self.read()).await {
            Ok(msg) => msg,
            Err(_) => panic!("no websocket message within {within:?}; seen: {:#?}", self.types()),
        }
    }

    pub async fn read(&mut self) -> Option<Value> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("messages are JSON");
                    self.seen.push(value.clone());
                    return Some(value);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads until a message matches `pred`, failing after `within`.
    pub async fn until(&mut self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Ok(Some(msg)) if pred(&msg) => return msg,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the websocket closed while waiting for {what}; seen: {:#?}", self.types()),
                Err(_) => {
                    let last_slis = self.seen.iter().rev().find(|m| m["type"] == "slis");
                    panic!("timed out waiting for {what}; seen: {:#?}\nlast slis: {last_slis:#?}", self.types())
                }
            }
        }
    }

    /// A short digest of what was seen: type plus state/kind.
    pub fn types(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|m| m["type"] != "slis")
            .map(|m| {
                let detail = m.get("state").or_else(|| m.get("milestone")).or_else(|| m.get("field"));
                format!("{} {}", m["type"].as_str().unwrap_or("?"), detail.map(Value::to_string).unwrap_or_default())
            })
            .collect()
    }
}

/// The value of the sample of `name` whose labels include every `labels` pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        let all = labels.iter().all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        (series_name == name && all).then(|| value.parse().ok()).flatten()
    })
}
