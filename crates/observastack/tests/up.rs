//! End-to-end: `observastack up` as a child process against the real PostgreSQL, with the
//! real shop and gateway binaries built beside it.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const PORTS: [u16; 10] = [8080, 8081, 8082, 8101, 8102, 8103, 8104, 8111, 8112, 8113];

fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// An offset at which every port of the stack is free right now.
fn free_port_offset() -> u16 {
    for _ in 0..200 {
        let offset = 20_000 + fastrand_u16() % 20_000;
        if PORTS.iter().all(|p| TcpListener::bind(("127.0.0.1", p + offset)).is_ok()) {
            return offset;
        }
    }
    panic!("no free port range found");
}

fn fastrand_u16() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (nanos ^ std::process::id().rotate_left(7)) as u16
}

fn observastack() -> Command {
    Command::new(env!("CARGO_BIN_EXE_observastack"))
}

async fn drop_database(name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await.unwrap();
}

fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

#[test]
fn up_exits_nonzero_with_a_clear_message_when_postgres_is_unreachable() {
    let state = tempfile::tempdir().unwrap();
    let out = observastack()
        .args([
            "--state-dir",
            state.path().to_str().unwrap(),
            "up",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PostgreSQL is unreachable at 127.0.0.1:1"), "{stderr}");
}

struct Stack {
    child: Child,
    lines: mpsc::Receiver<String>,
    offset: u16,
    token: String,
}

impl Stack {
    fn url(&self, port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", port + self.offset)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn start_stack(state: &std::path::Path, db: &str) -> Stack {
    let offset = free_port_offset();
    let mut child = observastack()
        .args(["--state-dir", state.to_str().unwrap(), "up", "--database-url", &database_url(db)])
        .args(["--port-offset", &offset.to_string(), "--seed-products", "300", "--seed-orders", "500"])
        .args(["--scenarios", concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut token = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    while token.is_none() {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("stack did not come up; output so far:\n{}", seen.join("\n")));
        if seen.last().is_some_and(|prev: &String| prev.contains("learner token")) {
            token = Some(line.trim().to_owned());
        }
        seen.push(line);
    }
    assert!(seen.iter().any(|l| l.contains("ObservaStack is up.")), "{}", seen.join("\n"));
    assert!(seen.iter().any(|l| l.contains("starting shop") && l.contains("ready in")), "progress shown: {seen:?}");
    Stack { child, lines, offset, token: token.unwrap() }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_starts_the_stack_and_a_checkout_completes_through_the_user_gateway() {
    let state = tempfile::tempdir().unwrap();
    let db = format!("observastack_up_{}", std::process::id());
    drop_database(&db).await;
    let mut stack = start_stack(state.path(), &db);
    let http = reqwest::Client::new();

    // A user lists products and checks out through the user gateway.
    let products: Value =
        http.get(stack.url(8080, "/api/products?limit=5")).send().await.unwrap().json().await.unwrap();
    let items = products["items"].as_array().expect("product list");
    assert!(!items.is_empty(), "{products}");
    let product_id = items[0]["id"].as_i64().unwrap();
    let cart: Value = http.post(stack.url(8080, "/api/carts")).send().await.unwrap().json().await.unwrap();
    let cart_id = cart["cart_id"].as_str().unwrap().to_owned();
    let added = http
        .post(stack.url(8080, &format!("/api/carts/{cart_id}/items")))
        .json(&json!({"product_id": product_id, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success(), "{}", added.text().await.unwrap());
    let order = http
        .post(stack.url(8080, "/api/checkout"))
        .json(&json!({"cart_id": cart_id, "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 201, "{}", order.text().await.unwrap());

    // The control surface is not reachable through the user gateway.
    for path in ["/config", "/config/schema", "/metrics", "/api/services/shop/config"] {
        let resp = http.get(stack.url(8080, path)).bearer_auth(&stack.token).send().await.unwrap();
        assert!(resp.status() == 404 || resp.status() == 403, "{path} answered {}", resp.status());
    }

    // The control gateway wants the printed token, and then fronts the shop's /config.
    let anonymous = http.get(stack.url(8081, "/api/services/shop/config")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let config = http.get(stack.url(8081, "/api/services/shop/config")).bearer_auth(&stack.token).send().await.unwrap();
    assert_eq!(config.status(), 200);
    let config: Value = config.json().await.unwrap();
    assert_eq!(config["service"], "shop");

    // The same secret mints working tokens from the CLI.
    let minted = observastack().args(["--state-dir", state.path().to_str().unwrap(), "token"]).output().unwrap();
    let minted = String::from_utf8(minted.stdout).unwrap();
    let resp =
        http.get(stack.url(8081, "/api/services/gateway-user/config")).bearer_auth(minted.trim()).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // The orchestrator's scenario catalog is reachable through the control gateway only.
    let scenarios = http.get(stack.url(8081, "/api/scenarios")).bearer_auth(&stack.token).send().await.unwrap();
    assert_eq!(scenarios.status(), 200);
    let scenarios: Value = scenarios.json().await.unwrap();
    let ids: Vec<&str> = scenarios.as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert!(ids.contains(&"bad-release-checkout"), "{scenarios}");
    assert_eq!(http.get(stack.url(8080, "/api/scenarios")).send().await.unwrap().status(), 404);

    // Every service reports its requests to the fact lake: the checkout shows up on the
    // Service Health API under its route template, from the shop and from the user gateway.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let board: Value =
            http.get(stack.url(8104, "/api/v1/dashboard?group_by=service")).send().await.unwrap().json().await.unwrap();
        let services: Vec<&str> = board["series"]
            .as_array()
            .map(|s| s.iter().filter_map(|x| x["group"].as_str()).collect())
            .unwrap_or_default();
        if services.contains(&"shop") && services.contains(&"gateway-user") {
            break;
        }
        assert!(Instant::now() < deadline, "no RequestFacts from shop and gateway-user: {board}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let checkout: Value = http
        .get(stack.url(8104, "/api/v1/dashboard?service=shop&group_by=path_template"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(checkout["series"].as_array().unwrap().iter().any(|s| s["group"] == "/api/checkout"), "{checkout}");

    // Ctrl-C (SIGINT) stops everything and frees the ports.
    kill(Pid::from_raw(stack.child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = stack.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "up did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");
    while stack.lines.try_recv().is_ok() {}
    for port in PORTS {
        assert!(
            TcpListener::bind(("127.0.0.1", port + stack.offset)).is_ok(),
            "port {} still bound",
            port + stack.offset
        );
    }
    drop_database(&db).await;
}
