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

use test_support::{database_url, drop_database};

const PORTS: [u16; 10] = [8080, 8081, 8082, 8101, 8102, 8103, 8104, 8111, 8112, 8113];

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
    drop_database(&db).await.unwrap();
    let mut stack = start_stack(state.path(), &db);
    let http = reqwest::Client::new();

    // Least privilege: only the orchestrator is given the private key (as a path to the 0600
    // file); the user gateway, the shop and every other service get the public keys only, and
    // no process environment holds key material at all.
    let private_pem = std::fs::read_to_string(state.path().join("jwt-private.pem")).unwrap();
    let private_body: String = private_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let children = children_of(stack.child.id());
    let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
    for service in ["shop", "gateway-user", "gateway-control", "orchestrator", "facts"] {
        assert!(names.contains(&service), "{service} among the children: {names:?}");
    }
    for child in &children {
        let env = &child.environ;
        assert!(env.contains("OBSERVASTACK_JWT_PUBLIC_KEYS="), "{} has the public keys", child.name);
        assert!(!env.contains(&private_body) && !env.contains("PRIVATE KEY"), "{}: key material in env", child.name);
        let holds_private = env.contains("OBSERVASTACK_JWT_PRIVATE_KEY=");
        assert_eq!(holds_private, child.name == "orchestrator", "{}: private key given: {holds_private}", child.name);
    }

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

    // Every error on every service is JSON with a code and a message, never an empty body:
    // a path no route serves, a method a path does not take, and a control-gateway sub-path
    // the service behind it does not have.
    let mut probes: Vec<(String, reqwest::Method, u16)> = Vec::new();
    for port in [8080, 8081, 8082, 8101, 8102, 8103, 8104, 8111, 8112, 8113] {
        probes.push((stack.url(port, "/no/such/route"), reqwest::Method::GET, 404));
        probes.push((stack.url(port, "/healthz"), reqwest::Method::DELETE, 405));
    }
    for service in ["shop", "orchestrator", "runner", "facts", "gateway-user"] {
        probes.push((stack.url(8081, &format!("/api/services/{service}/config/nope")), reqwest::Method::GET, 404));
    }
    for (url, method, status) in probes {
        let resp = http.request(method.clone(), &url).bearer_auth(&stack.token).send().await.unwrap();
        assert_eq!(resp.status(), status, "{method} {url}");
        let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(kind.starts_with("application/json"), "{method} {url}: content type {kind:?}");
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{method} {url}: {body}");
    }
    let facts_config =
        http.get(stack.url(8081, "/api/services/facts/config")).bearer_auth(&stack.token).send().await.unwrap();
    assert_eq!(facts_config.status(), 200, "every service has /config, the lake included");

    // The control path cannot be cut from itself: a learner may not touch the control
    // gateway's knobs (`upstream.timeout_ms=1` would time out every control request, the one
    // that undoes it included), and `POST /api/reset` restores it like every other service.
    let control_config = stack.url(8081, "/api/services/gateway-control/config");
    let refused = http
        .patch(&control_config)
        .bearer_auth(&stack.token)
        .json(&json!({"upstream": {"timeout_ms": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert!(refused["error"]["message"].as_str().unwrap().contains("control path"), "{refused}");
    assert_eq!(refused["error"]["details"][0]["field"], "upstream.timeout_ms", "{refused}");
    let instructor = observastack()
        .args(["--state-dir", state.path().to_str().unwrap(), "token", "--role", "instructor"])
        .output()
        .unwrap();
    let instructor = String::from_utf8(instructor.stdout).unwrap();
    let changed = http
        .patch(&control_config)
        .bearer_auth(instructor.trim())
        .json(&json!({"upstream": {"pool_size": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "{}", changed.text().await.unwrap());
    let reset = http.post(stack.url(8081, "/api/reset")).bearer_auth(&stack.token).send().await.unwrap();
    assert_eq!(reset.status(), 200);
    let reset: Value = reset.json().await.unwrap();
    assert!(reset["reset"].as_array().unwrap().iter().any(|s| s == "gateway-control"), "{reset}");
    let after: Value = http.get(&control_config).bearer_auth(&stack.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(after["values"]["upstream"]["pool_size"], 256, "reset restores the control gateway: {after}");

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
    // Emitters send a batch a second: the checkout's fact may trail the first ones.
    loop {
        let board: Value = http
            .get(stack.url(8104, "/api/v1/dashboard?service=shop&group_by=path_template"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if board["series"].as_array().is_some_and(|s| s.iter().any(|s| s["group"] == "/api/checkout")) {
            break;
        }
        let groups: Vec<&Value> = board["series"].as_array().into_iter().flatten().map(|s| &s["group"]).collect();
        assert!(Instant::now() < deadline, "no /api/checkout fact from the shop; groups: {groups:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

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
    drop_database(&db).await.unwrap();
}

/// A child process of `up`: its service name (the gateway's role told apart by `--role`) and
/// its environment as one string.
struct ChildProcess {
    name: String,
    environ: String,
}

fn children_of(parent: u32) -> Vec<ChildProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let (_, comm) = head.split_once(" (")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            if ppid != parent {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let name = match args.iter().position(|a| a == "--role") {
                Some(i) if comm == "gateway" => format!("gateway-{}", args.get(i + 1)?),
                _ => comm.to_owned(),
            };
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            Some(ChildProcess { name, environ: String::from_utf8_lossy(&environ).replace('\0', "\n") })
        })
        .collect()
}

/// The pid of `parent`'s child process named `name` (its `comm`), from /proc.
fn child_pid(parent: u32, name: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may hold spaces, so split at the last ')'.
        let (head, rest) = stat.rsplit_once(')')?;
        let (pid, comm) = head.split_once(" (")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm == name).then(|| pid.parse().ok())?
    })
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn console(stack: &Stack) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://127.0.0.1:{}/api/ws", 8081 + stack.offset);
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {}", stack.token).parse().unwrap());
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// The next JSON message, `None` once the connection is gone.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_killed_mid_run_comes_back_resumes_the_run_and_consoles_catch_up() {
    let state = tempfile::tempdir().unwrap();
    let db = format!("observastack_kill_{}", std::process::id());
    drop_database(&db).await.unwrap();
    let stack = start_stack(state.path(), &db);
    let http = reqwest::Client::new();
    let control = |path: &str| stack.url(8081, path);

    let resp = http
        .post(control("/api/runs"))
        .bearer_auth(&stack.token)
        .json(&json!({"scenario": "bad-release-checkout", "time_scale": 0.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let run: Value = resp.json().await.unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current: Value = http
            .get(control("/api/runs/current"))
            .bearer_auth(&stack.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if current["state"] == "incident" {
            break;
        }
        assert!(Instant::now() < deadline, "the run never reached its incident: {current}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ws = console(&stack).await.expect("the console connects");
    let first = tokio::time::timeout(Duration::from_secs(5), next_json(&mut ws)).await.unwrap().unwrap();
    assert_eq!(first["run"]["id"], run_id.as_str(), "{first}");

    let orchestrator = child_pid(stack.child.id(), "orchestrator").expect("up runs an orchestrator");
    kill(Pid::from_raw(orchestrator), Signal::SIGKILL).unwrap();

    // The console notices: its connection ends (no close frame from a killed process).
    let ended =
        tokio::time::timeout(Duration::from_secs(15), async { while next_json(&mut ws).await.is_some() {} }).await;
    assert!(ended.is_ok(), "the console's connection ended");

    // `up` restarts the orchestrator; a reconnecting console gets the same run's state first.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ws, state) = loop {
        if let Ok(mut ws) = console(&stack).await
            && let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), next_json(&mut ws)).await
            && msg["type"] == "state"
            && msg["run"]["id"] == run_id.as_str()
        {
            break (ws, msg);
        }
        assert!(Instant::now() < deadline, "no console could reconnect to the run within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(matches!(state["state"].as_str(), Some("incident" | "recovering")), "{state}");
    assert_ne!(child_pid(stack.child.id(), "orchestrator"), Some(orchestrator), "a new process");
    let run: Value = http
        .get(control(&format!("/api/runs/{run_id}")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resumed = run["events"].as_array().unwrap().iter().filter(|e| e["milestone"] == "resumed").count();
    assert_eq!(resumed, 1, "{run}");

    // The learner rolls the release back; the resumed run completes on the new console.
    let fix = http
        .patch(control("/api/services/shop/config"))
        .bearer_auth(&stack.token)
        .json(&json!({"release": {"version": "2.4.0"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(fix.status(), 200, "{}", fix.text().await.unwrap());
    let completed = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match next_json(&mut ws).await {
                Some(msg) if msg["type"] == "completed" => return Some(msg),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .expect("completed within 120 s")
    .expect("the console stayed connected");
    assert_eq!(completed["run_id"], run_id.as_str());

    // `up` itself killed with SIGKILL: its services follow it (PR_SET_PDEATHSIG) and free
    // every port, instead of living on as orphans.
    let offset = stack.offset;
    drop(stack);
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in PORTS {
        while TcpListener::bind(("127.0.0.1", port + offset)).is_err() {
            assert!(Instant::now() < deadline, "port {} still bound after up was killed", port + offset);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop_database(&db).await.unwrap();
}
