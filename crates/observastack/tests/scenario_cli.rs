//! `observastack scenario list|show|start|status|stop|give-up|reset|watch` as a learner types them: the
//! real CLI binary against a real control gateway in front of a real orchestrator, with the
//! shop, user gateway and runner a run needs, all in-process on port 0 against a fresh
//! PostgreSQL database per test, and a state dir holding the stack's keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use gateway::{Gateway, GatewayRole, ServiceTarget};
use serde_json::Value;
use test_support::TestDb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest a compressed run's phase (baseline, fault, recovery) may take on a busy machine.
const PHASE: Duration = Duration::from_secs(120);

/// A service running in-process until stopped.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (shutdown, rx) = oneshot::channel();
        Self { shutdown, task: tokio::spawn(run(rx)) }
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}

async fn until(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

fn shipped_scenarios() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// The stack a learner's CLI talks to, and a state dir holding its keys.
struct Stack {
    control_url: String,
    state: tempfile::TempDir,
    control: Option<Running>,
    /// The control gateway's settings, bound to its address, for a restart in place.
    control_settings: gateway::Settings,
    /// In stop order: the orchestrator first, the shop last.
    services: Vec<Running>,
    _db: TestDb,
}

impl Stack {
    async fn start() -> Self {
        // The state dir's key pair, as `observastack up` makes it: the CLI mints with the
        // private key, the services verify with the public ones.
        let state = tempfile::tempdir().unwrap();
        let (signer, _) = observastack::state::ensure_keys(state.path()).unwrap();
        let public_keys = signer.verifier();
        let db = TestDb::create("scenario_cli_test").await;
        let shop_app = shop::Application::build(shop::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone().into(),
            jwt_keys: public_keys.clone(),
            seed_products: 200,
            seed_orders: 200,
            initial_config: shop::ShopConfig::default(),
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
        })
        .await
        .expect("the shop builds");
        let shop_url = format!("http://127.0.0.1:{}", shop_app.port());
        let shop = Running::spawn(|rx| shop_app.run_until(until(rx)));

        let mut user = gateway::Settings::new(GatewayRole::User, public_keys.clone());
        user.listen = "127.0.0.1:0".parse().unwrap();
        user.admin_listen = "127.0.0.1:0".parse().unwrap();
        user.shop_url = shop_url.parse().unwrap();
        user.threads = 1;
        user.drain = Duration::from_secs(1);
        let user_app = Gateway::build(user).expect("the user gateway builds");
        let user_public = format!("http://{}", user_app.public_addr());
        let user_admin = format!("http://{}", user_app.admin_addr());
        let user_gateway = Running::spawn(|rx| user_app.run_until(until(rx)));

        let runner_app = runner::Application::build(runner::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            target: user_public,
            jwt_keys: public_keys.clone(),
            threads: 1,
            connections: 16,
            max_in_flight: 1_000,
            initial_config: runner::RunnerConfig::default(),
            drain: Duration::from_secs(1),
        })
        .await
        .expect("the runner builds");
        let runner_url = format!("http://127.0.0.1:{}", runner_app.port());
        let runner = Running::spawn(|rx| runner_app.run_until(until(rx)));

        let orchestrator_app = orchestrator::Application::build(orchestrator::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone().into(),
            jwt_keys: public_keys.clone(),
            jwt_signer: Some(std::sync::Arc::new(signer)),
            scenario_dirs: vec![shipped_scenarios()],
            services: [("shop", &shop_url), ("gateway", &user_admin), ("runner", &runner_url)]
                .into_iter()
                .map(|(name, url)| (name.to_owned(), url.clone()))
                .collect(),
            tick: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
            ..orchestrator::Settings::default()
        })
        .await
        .expect("the orchestrator builds");
        let orchestrator_url = format!("http://127.0.0.1:{}", orchestrator_app.port());
        let orchestrator = Running::spawn(|rx| orchestrator_app.run_until(until(rx)));

        let mut control = gateway::Settings::new(GatewayRole::Control, public_keys.clone());
        control.listen = "127.0.0.1:0".parse().unwrap();
        control.admin_listen = "127.0.0.1:0".parse().unwrap();
        control.shop_url = shop_url.parse().unwrap();
        control.threads = 1;
        control.drain = Duration::from_secs(1);
        control.services = [
            ("shop", &shop_url),
            ("orchestrator", &orchestrator_url),
            ("runner", &runner_url),
            ("gateway-user", &user_admin),
        ]
        .into_iter()
        .map(|(name, url)| format!("{name}={url}").parse::<ServiceTarget>().unwrap())
        .collect();
        let control_app = Gateway::build(control.clone()).expect("the control gateway builds");
        control.listen = control_app.public_addr();
        let control_url = format!("http://{}", control_app.public_addr());
        let control_gateway = Running::spawn(|rx| control_app.run_until(until(rx)));

        Self {
            control_url,
            state,
            control: Some(control_gateway),
            control_settings: control,
            services: vec![orchestrator, runner, user_gateway, shop],
            _db: db,
        }
    }

    /// Stops the control gateway (its tunnels close with it), and starts it again on the
    /// same address once `down` resolves.
    async fn restart_control_gateway(&mut self, down: impl std::future::Future<Output = ()>) {
        if let Some(control) = self.control.take() {
            control.stop().await;
        }
        down.await;
        let app = Gateway::build(self.control_settings.clone()).expect("the control gateway binds its address again");
        self.control = Some(Running::spawn(|rx| app.run_until(until(rx))));
    }

    async fn stop(self) {
        let Stack { control, services, _db, .. } = self;
        if let Some(control) = control {
            control.stop().await;
        }
        for service in services {
            service.stop().await;
        }
    }

    /// `observastack --state-dir STATE <args…> --control-url URL`.
    fn command(&self, args: &[&str]) -> Command {
        self.command_in(self.state.path(), args)
    }

    fn command_in(&self, state_dir: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_observastack"));
        cmd.env_remove("OBSERVASTACK_CONTROL_URL")
            .env_remove("OBSERVASTACK_STATE_DIR")
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .args(["--control-url", &self.control_url])
            .kill_on_drop(true);
        cmd
    }

    async fn cli(&self, args: &[&str]) -> Run {
        Run(self.command(args).output().await.expect("the CLI runs"))
    }

    /// `args`, insisting on exit 0.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.cli(args).await;
        assert_eq!(run.code(), 0, "observastack {}: {run:?}", args.join(" "));
        run.stdout()
    }

    /// `observastack scenario watch …` running in the background, its stdout read line by line.
    fn watch(&self, extra: &[&str]) -> Watch {
        let mut args = vec!["scenario", "watch"];
        args.extend_from_slice(extra);
        let mut child = self.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        let (err_tx, err_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(forward_lines(stdout, out_tx));
        tokio::spawn(forward_lines(stderr, err_tx));
        Watch { child, out: Lines::new(out_rx), err: Lines::new(err_rx) }
    }
}

async fn forward_lines(from: impl tokio::io::AsyncRead + Unpin, to: tokio::sync::mpsc::UnboundedSender<String>) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to.send(line).is_err() {
            break;
        }
    }
}

struct Run(Output);

impl Run {
    fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code(), self.stdout(), self.stderr())
    }
}

/// `scenario watch` in the background: its stdout and stderr, line by line.
struct Watch {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Watch {
    /// Reads stdout until a line contains `needle`.
    async fn until(&mut self, needle: &str, within: Duration) -> String {
        self.out.until(needle, within).await
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

struct Lines {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(lines: tokio::sync::mpsc::UnboundedReceiver<String>) -> Self {
        Self { lines, seen: Vec::new() }
    }

    /// Reads lines until one contains `needle`; panics with everything seen after `within`.
    async fn until(&mut self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!("watch ended before printing {needle:?}; it printed:\n{}", self.seen.join("\n")),
                Err(_) => panic!("watch printed no {needle:?} in {within:?}; it printed:\n{}", self.seen.join("\n")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_browse_the_catalog_and_bad_requests_are_named() {
    let stack = Stack::start().await;

    let list = stack.ok(&["scenario", "list"]).await;
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ID") && header.contains("DIFFICULTY") && header.contains("TITLE"), "{list}");
    let ids: Vec<&str> = lines.filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        ids,
        [
            "bad-release-checkout",
            "cpu-regression",
            "database-bottleneck",
            "gateway-pool-lowered",
            "worker-pool-saturation"
        ]
    );
    assert!(list.contains("beginner") && list.contains("Checkout broke after release 2.4.1"), "{list}");
    let json: Value = serde_json::from_str(&stack.ok(&["scenario", "list", "--json"]).await).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(5));

    // A learner sees the story, objectives, load and success conditions, no spoilers.
    let show = stack.ok(&["scenario", "show", "bad-release-checkout"]).await;
    for expected in [
        "Checkout broke after release 2.4.1  (bad-release-checkout, beginner)",
        "Learning objectives",
        "Start from user impact: tell which journey fails before opening a single log line",
        "constant 20 journeys/s",
        "checkout.success_ratio >= 0.99",
        "Hints: 4",
    ] {
        assert!(show.contains(expected), "missing {expected:?} in:\n{show}");
    }
    for spoiler in ["Solution", "2.4.0", "Why"] {
        assert!(!show.contains(spoiler), "a learner must not see {spoiler:?}:\n{show}");
    }
    // An instructor sees all of it.
    let full = stack.ok(&["scenario", "show", "bad-release-checkout", "--role", "instructor"]).await;
    for expected in ["Faults", "Solution: Roll the shop back from release 2.4.1 to 2.4.0", "What broke", "Lessons"] {
        assert!(full.contains(expected), "missing {expected:?} in:\n{full}");
    }

    // Unknown ids and bad parameters exit 1 naming what was wrong.
    let unknown = stack.cli(&["scenario", "show", "no-such-scenario"]).await;
    assert_eq!(unknown.code(), 1, "{unknown:?}");
    assert!(unknown.stderr().contains("no-such-scenario"), "{unknown:?}");
    let unknown = stack.cli(&["scenario", "start", "no-such-scenario"]).await;
    assert_eq!(unknown.code(), 1, "{unknown:?}");
    assert!(unknown.stderr().contains("no scenario `no-such-scenario`"), "{unknown:?}");
    let too_slow = stack.cli(&["scenario", "start", "bad-release-checkout", "--time-scale", "5"]).await;
    assert_eq!(too_slow.code(), 1, "{too_slow:?}");
    assert!(too_slow.stderr().contains("time_scale: time_scale must be between 0.01 and 1"), "{too_slow:?}");
    assert!(too_slow.stderr().contains("(rule: range)"), "{too_slow:?}");

    let status = stack.ok(&["scenario", "status"]).await;
    assert_eq!(status.trim(), "no active run");

    // A token from another stack's key is refused, and the CLI says which key it signed with.
    let other = tempfile::tempdir().unwrap();
    observastack::state::ensure_keys(other.path()).unwrap();
    for args in [["scenario", "list"], ["scenario", "watch"]] {
        let refused = Run(stack.command_in(other.path(), &args).output().await.unwrap());
        assert_eq!(refused.code(), 1, "{refused:?}");
        assert!(refused.stderr().contains("(401 unauthorized)"), "{refused:?}");
        assert!(refused.stderr().contains("jwt-private.pem"), "{refused:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_starts_watches_and_stops_a_run() {
    let stack = Stack::start().await;

    let started = stack.ok(&["scenario", "start", "bad-release-checkout", "--time-scale", "0.5"]).await;
    assert!(started.contains("started run") && started.contains("bad-release-checkout"), "{started}");
    assert!(
        started.contains("baseline 30 s, then the incident; follow with `observastack scenario watch`"),
        "{started}"
    );
    let run_id = started.split_whitespace().nth(2).unwrap().to_owned();

    let status = stack.ok(&["scenario", "status"]).await;
    assert!(status.contains(&format!("run       {run_id}")), "{status}");
    assert!(status.contains("scenario  bad-release-checkout — Checkout broke after release 2.4.1"), "{status}");
    assert!(status.contains("state     setup") || status.contains("state     baseline"), "{status}");
    assert!(status.contains("hints     0 of 4 delivered"), "{status}");
    assert!(status.contains("checkout.success_ratio >= 0.99"), "{status}");

    let second = stack.cli(&["scenario", "start", "cpu-regression"]).await;
    assert_eq!(second.code(), 1, "{second:?}");
    assert_eq!(
        second.stderr().trim(),
        "error: a run of bad-release-checkout is already active; stop it with `observastack scenario stop`"
    );

    // The feed starts with the run's state; --json prints the raw messages.
    let mut raw = stack.watch(&["--json"]);
    let first: Value = serde_json::from_str(&raw.until("{", PHASE).await).unwrap();
    assert_eq!(first["type"], "state", "{first}");
    assert_eq!(first["run"]["id"], run_id.as_str());
    assert_eq!(first["run"]["scenario_id"], "bad-release-checkout");
    raw.kill().await;
    let mut human = stack.watch(&[]);
    let intro = human.until(&run_id, PHASE).await;
    assert!(intro.contains("run") && intro.contains("Checkout broke after release 2.4.1"), "{intro}");
    human.kill().await;

    let stopped = stack.ok(&["scenario", "stop"]).await;
    assert!(stopped.contains(&format!("stopped run {run_id} of bad-release-checkout: abandoned")), "{stopped}");
    let status = stack.ok(&["scenario", "status"]).await;
    assert!(status.starts_with("no active run"), "{status}");
    assert!(status.contains("was abandoned"), "{status}");
    let again = stack.cli(&["scenario", "stop"]).await;
    assert_eq!(again.code(), 1, "{again:?}");
    assert!(again.stderr().contains("no active run to stop"), "{again:?}");

    let reset = stack.ok(&["scenario", "reset"]).await;
    assert!(reset.contains("back at their defaults: gateway, runner, shop"), "{reset}");

    // Giving up ends the run with the debrief and the solution; a stop showed neither.
    let started = stack.ok(&["scenario", "start", "bad-release-checkout", "--time-scale", "0.5"]).await;
    let run_id = started.split_whitespace().nth(2).unwrap().to_owned();
    let gave_up = stack.ok(&["scenario", "give-up"]).await;
    assert!(gave_up.contains(&format!("gave up run {run_id} of bad-release-checkout")), "{gave_up}");
    assert!(gave_up.contains("gave up: not graded"), "{gave_up}");
    assert!(gave_up.contains(r#"`shop` release.version = "2.4.0""#), "the targeted fix: {gave_up}");
    assert!(gave_up.contains("Solution") && gave_up.contains("Roll the shop back"), "{gave_up}");
    let status = stack.ok(&["scenario", "status"]).await;
    assert!(status.contains("was given up"), "{status}");
    let again = stack.cli(&["scenario", "give-up"]).await;
    assert_eq!(again.code(), 1, "{again:?}");
    assert!(again.stderr().contains("no active run to give up"), "{again:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_with_the_debrief_once_the_learner_rolls_back() {
    let stack = Stack::start().await;
    stack.ok(&["scenario", "start", "bad-release-checkout", "--time-scale", "0.1"]).await;
    let mut watch = stack.watch(&[]);
    watch.until("state     incident", PHASE).await;
    let fault = watch.until("config    shop release.version: 2.4.0 → 2.4.1", PHASE).await;
    assert!(fault.contains("(instructor, scenario)"), "{fault}");
    // Repairing before the fault was seen to bite would prove nothing; the orchestrator waits too.
    watch.until("milestone incident observed", PHASE).await;

    // `config` takes the gateway from before its subcommand; the env var works for both.
    let rollback = Run(Command::new(env!("CARGO_BIN_EXE_observastack"))
        .env("OBSERVASTACK_CONTROL_URL", &stack.control_url)
        .arg("--state-dir")
        .arg(stack.state.path())
        .args(["config", "set", "shop", "release.version=2.4.0"])
        .output()
        .await
        .unwrap());
    assert_eq!(rollback.code(), 0, "{rollback:?}");
    let rollback = watch.until("config    shop release.version: 2.4.1 → 2.4.0", PHASE).await;
    assert!(rollback.contains("by cli (learner)"), "{rollback}");
    let completed = watch.until("completed", PHASE).await;
    assert!(completed.contains("resolved · graded TARGETED"), "{completed}");
    let times = watch.until("detect", PHASE).await;
    assert!(times.contains("mitigate") && times.contains("repair"), "{times}");
    let change = watch.until("[targeted] shop patch release.version 2.4.1 → 2.4.0", PHASE).await;
    assert!(change.contains("(cli, through control-gateway)"), "{change}");
    watch.until("What broke", PHASE).await;
    watch.until("Lessons", PHASE).await;
    let status = tokio::time::timeout(PHASE, watch.child.wait()).await.expect("watch exits").unwrap();
    assert!(status.success(), "watch exits 0 after the result; it printed:\n{}", watch.out.seen.join("\n"));

    let status = stack.ok(&["scenario", "status"]).await;
    assert!(status.contains("was resolved"), "{status}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_when_the_connection_drops() {
    let mut stack = Stack::start().await;
    let started = stack.ok(&["scenario", "start", "bad-release-checkout"]).await;
    let run_id = started.split_whitespace().nth(2).unwrap().to_owned();
    let mut watch = stack.watch(&[]);
    watch.until(&run_id, PHASE).await;

    // The gateway goes away under the open connection, and comes back on the same address.
    let err = &mut watch.err;
    stack
        .restart_control_gateway(async {
            err.until("reconnecting in", PHASE).await;
        })
        .await;
    watch.err.until("reconnected", PHASE).await;
    assert!(watch.child.try_wait().unwrap().is_none(), "watch keeps running");
    // The state the new connection replays was printed already: the run is introduced once.
    stack.ok(&["scenario", "stop"]).await;
    watch.until("state     abandoned", PHASE).await;
    assert_eq!(watch.out.seen.iter().filter(|l| l.contains(&run_id)).count(), 1, "{:#?}", watch.out.seen);
    watch.kill().await;
    stack.stop().await;
}
