//! `observastack up`: the native launch. Checks PostgreSQL, creates the stack's database and
//! token keys, starts the facts lake, shop, the three gateway roles, the scenario runner and the orchestrator as
//! supervised child processes (restarting a crashed one), prints the URLs and a login token, and
//! stops everything on Ctrl-C/SIGTERM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use service_kit::auth::{ENV_JWT_PRIVATE_KEY, ENV_JWT_PUBLIC_KEYS};
use service_kit::facts::ENV_SERVICE_TOKEN;
use service_kit::{JwtSigner, Role};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::{state, ui};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// PostgreSQL URL of the stack's database; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/observastack")]
    pub database_url: String,
    /// Added to every default port, to run a second stack beside the first.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Directory holding the service binaries (default: this binary's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// OTLP/HTTP endpoint the services export traces to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Products seeded into an empty shop database.
    #[arg(long, default_value_t = 10_000)]
    pub seed_products: u32,
    /// Past orders seeded into an empty shop database.
    #[arg(long, default_value_t = 100_000)]
    pub seed_orders: u32,
    /// A folder of scenario files for the orchestrator; repeat for extra packs.
    #[arg(long = "scenarios", value_name = "DIR", default_value = "scenarios")]
    pub scenarios: Vec<PathBuf>,
    /// The console's built assets, served by the orchestrator (`scripts/up.sh` builds them).
    #[arg(long, env = "OBSERVASTACK_CONSOLE_DIR", default_value = "console/dist")]
    pub console_dir: PathBuf,
    /// Seconds to wait for each service to become ready.
    #[arg(long, default_value_t = 180)]
    pub ready_timeout_secs: u64,
}

/// Default ports (DESIGN §6); `--port-offset` shifts all of them.
pub mod ports {
    pub const USER: u16 = 8080;
    pub const CONTROL: u16 = 8081;
    pub const OBSERVABILITY: u16 = 8082;
    pub const SHOP: u16 = 8101;
    pub const ORCHESTRATOR: u16 = 8102;
    pub const RUNNER: u16 = 8103;
    pub const FACTS: u16 = 8104;
    pub const USER_ADMIN: u16 = 8111;
    pub const CONTROL_ADMIN: u16 = 8112;
    pub const OBSERVABILITY_ADMIN: u16 = 8113;
}

/// How often a crashed service is restarted within [`RESTART_WINDOW`] before `up` gives up.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long children get to drain after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
struct ServiceSpec {
    name: &'static str,
    binary: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    ready_url: String,
}

fn addr(port: u16, offset: u16) -> String {
    format!("127.0.0.1:{}", port.saturating_add(offset))
}

/// How long the `service` tokens `up` hands the fact emitters last; each start mints new ones.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The stack's keys as the services get them: every service the public keys' path, the
/// orchestrator alone the private key's path, the emitters a `service` token each.
struct KeyPlan<'a> {
    public_keys: PathBuf,
    private_key: PathBuf,
    signer: &'a JwtSigner,
}

impl KeyPlan<'_> {
    fn service_token(&self, service: &str) -> anyhow::Result<String> {
        Ok(self.signer.mint(service, Role::Service, SERVICE_TOKEN_TTL)?)
    }
}

/// `facts_dir`: data dir of the facts lake; `None` when its binary is missing (no lake, no
/// RequestFact emitters).
fn plan(args: &UpArgs, keys: &KeyPlan<'_>, facts_dir: Option<&Path>) -> anyhow::Result<Vec<ServiceSpec>> {
    let o = args.port_offset;
    let facts_url = format!("http://{}", addr(ports::FACTS, o));
    let shop_url = format!("http://{}", addr(ports::SHOP, o));
    let orchestrator_url = format!("http://{}", addr(ports::ORCHESTRATOR, o));
    let runner_url = format!("http://{}", addr(ports::RUNNER, o));
    let user_admin_url = format!("http://{}", addr(ports::USER_ADMIN, o));
    let control_admin_url = format!("http://{}", addr(ports::CONTROL_ADMIN, o));
    let mut fronted = vec![
        format!("shop={shop_url}"),
        format!("orchestrator={orchestrator_url}"),
        format!("runner={runner_url}"),
        format!("gateway-user={user_admin_url}"),
        format!("gateway-control={control_admin_url}"),
        format!("gateway-observability=http://{}", addr(ports::OBSERVABILITY_ADMIN, o)),
    ];
    if facts_dir.is_some() {
        // Its `/metrics` on the observability path, like every other service's.
        fronted.push(format!("facts={facts_url}"));
    }
    // Paths, not the keys themselves, so no key material sits in any process's environment.
    let mut common = vec![(ENV_JWT_PUBLIC_KEYS, keys.public_keys.display().to_string())];
    if let Some(endpoint) = &args.otlp_endpoint {
        common.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()));
    }
    let gateway = |role: &str, public: u16, admin: u16| {
        let mut a = vec![
            "--role".to_owned(),
            role.to_owned(),
            "--listen".to_owned(),
            addr(public, o),
            "--admin-listen".to_owned(),
            addr(admin, o),
            "--shop-url".to_owned(),
            shop_url.clone(),
        ];
        if role != "user" {
            for f in &fronted {
                a.push("--service".to_owned());
                a.push(f.clone());
            }
        }
        a
    };
    // The facts lake starts first and every other service reports its RequestFacts to it.
    let mut facts_env = common.clone();
    facts_env.push(("DATABASE_URL", args.database_url.clone()));
    let facts = facts_dir.map(|dir| ServiceSpec {
        name: "facts",
        binary: "facts",
        args: vec!["--listen".to_owned(), addr(ports::FACTS, o), "--data-dir".to_owned(), dir.display().to_string()],
        env: facts_env,
        ready_url: format!("{facts_url}/readyz"),
    });
    if facts.is_some() {
        common.push((service_kit::facts::ENV_FACTS_URL, facts_url.clone()));
    }
    let mut shop_env = common.clone();
    shop_env.push(("DATABASE_URL", args.database_url.clone()));
    let mut orchestrator_args = vec![
        "--listen".to_owned(),
        addr(ports::ORCHESTRATOR, o),
        "--service".to_owned(),
        format!("shop={shop_url}"),
        "--service".to_owned(),
        format!("gateway={user_admin_url}"),
        "--service".to_owned(),
        format!("runner={runner_url}"),
        // So `POST /api/reset` restores the control gateway too and its changes reach the run
        // timeline.
        "--service".to_owned(),
        format!("gateway-control={control_admin_url}"),
    ];
    orchestrator_args.push("--console-dir".to_owned());
    orchestrator_args.push(
        std::path::absolute(&args.console_dir).unwrap_or_else(|_| args.console_dir.clone()).display().to_string(),
    );
    if facts_dir.is_some() {
        // The console's Observability tab embeds the lake's Service Health page, read through
        // the observability gateway (read-only) as under Compose, not from the lake's own port.
        orchestrator_args.push("--service-health-url".to_owned());
        orchestrator_args.push(format!("http://{}/facts/dashboard", addr(ports::OBSERVABILITY, o)));
    }
    for dir in &args.scenarios {
        orchestrator_args.push("--scenarios".to_owned());
        // Absolute, so the orchestrator's log and `ps` say which folder it reads.
        orchestrator_args.push(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()).display().to_string());
    }
    let mut specs: Vec<ServiceSpec> = facts.into_iter().collect();
    specs.extend([
        ServiceSpec {
            name: "shop",
            binary: "shop",
            args: vec![
                "--listen".to_owned(),
                addr(ports::SHOP, o),
                "--seed-products".to_owned(),
                args.seed_products.to_string(),
                "--seed-orders".to_owned(),
                args.seed_orders.to_string(),
            ],
            env: shop_env,
            ready_url: format!("{shop_url}/readyz"),
        },
        ServiceSpec {
            name: "gateway-user",
            binary: "gateway",
            args: gateway("user", ports::USER, ports::USER_ADMIN),
            env: common.clone(),
            ready_url: format!("http://{}/readyz", addr(ports::USER_ADMIN, o)),
        },
        ServiceSpec {
            name: "gateway-control",
            binary: "gateway",
            args: gateway("control", ports::CONTROL, ports::CONTROL_ADMIN),
            env: common.clone(),
            ready_url: format!("http://{}/readyz", addr(ports::CONTROL_ADMIN, o)),
        },
        ServiceSpec {
            name: "gateway-observability",
            binary: "gateway",
            args: gateway("observability", ports::OBSERVABILITY, ports::OBSERVABILITY_ADMIN),
            env: common.clone(),
            ready_url: format!("http://{}/readyz", addr(ports::OBSERVABILITY_ADMIN, o)),
        },
        ServiceSpec {
            name: "runner",
            binary: "runner",
            args: vec![
                "--listen".to_owned(),
                addr(ports::RUNNER, o),
                "--target".to_owned(),
                format!("http://{}", addr(ports::USER, o)),
            ],
            env: common.clone(),
            ready_url: format!("{runner_url}/readyz"),
        },
        ServiceSpec {
            name: "orchestrator",
            binary: "orchestrator",
            args: orchestrator_args,
            env: {
                let mut env = common;
                env.push(("DATABASE_URL", args.database_url.clone()));
                // The one service that mints tokens (console logins, its own instructor token).
                env.push((ENV_JWT_PRIVATE_KEY, keys.private_key.display().to_string()));
                env
            },
            ready_url: format!("{orchestrator_url}/readyz"),
        },
    ]);
    if facts_dir.is_some() {
        // What each emitter presents to the lake's ingest; it opens nothing else.
        for spec in specs.iter_mut().filter(|s| s.name != "facts") {
            spec.env.push((ENV_SERVICE_TOKEN, keys.service_token(spec.name)?));
        }
    }
    Ok(specs)
}

/// Verifies PostgreSQL answers and creates the stack's database if it does not exist.
pub async fn prepare_database(url: &str) -> anyhow::Result<()> {
    let target = PgConnectOptions::from_str(url).with_context(|| format!("invalid DATABASE_URL `{url}`"))?;
    let database = target.get_database().unwrap_or("observastack").to_owned();
    if database.is_empty() || !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("database name `{database}` must be letters, digits and underscores");
    }
    let where_ = format!("{}:{}", target.get_host(), target.get_port());
    let admin = target.clone().database("postgres").disable_statement_logging();
    let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect_with(&admin))
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL at {where_} did not answer within 5 s"))?
        .map_err(|e| {
            anyhow::anyhow!(
                "PostgreSQL is unreachable at {where_}: {e}\n  start it (e.g. `pg_ctlcluster 15 main start`) or point --database-url / DATABASE_URL at a running server"
            )
        })?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        // The name was checked above to be a plain identifier; CREATE DATABASE takes no binds.
        let created = sqlx::raw_sql(&format!("CREATE DATABASE \"{database}\"")).execute(&mut conn).await;
        if let Err(err) = created {
            // A concurrent `up` may have created it in between; only a real failure counts.
            let again: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&database)
                .fetch_optional(&mut conn)
                .await?;
            if again.is_none() {
                return Err(err).with_context(|| format!("cannot create database `{database}`"));
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

fn bin_dir(args: &UpArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("cannot locate the observastack binary")?;
    exe.parent().map(Path::to_path_buf).context("the observastack binary has no parent directory")
}

struct Running {
    spec: ServiceSpec,
    pid: Option<u32>,
    restarts: Vec<Instant>,
}

/// A started stack: its child processes and their exit reports. `up` supervises it until
/// Ctrl-C; `scenario verify` runs scenarios against it. Stop it with [`Stack::stop`]; dropped
/// without, its children are killed (`kill_on_drop`).
pub struct Stack {
    bins: PathBuf,
    logs: PathBuf,
    running: Vec<Running>,
    exit_tx: mpsc::UnboundedSender<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
    exit_rx: mpsc::UnboundedReceiver<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("logs", &self.logs).finish_non_exhaustive()
    }
}

/// Whether [`Stack::start`] starts the fact lake (when its binary is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactLake {
    IfBuilt,
    Without,
}

impl Stack {
    /// Starts every service in order, each once the previous one is ready, with the stack's
    /// keys from `state_dir` (created on first use). PostgreSQL must be prepared already
    /// ([`prepare_database`]).
    pub async fn start(state_dir: &Path, args: &UpArgs, lake: FactLake) -> anyhow::Result<Self> {
        let bins = bin_dir(args)?;
        for binary in ["shop", "gateway"] {
            if !bins.join(binary).is_file() {
                bail!(
                    "`{binary}` binary not found in {}; build the workspace first (`cargo build --release`) or pass --bin-dir",
                    bins.display()
                );
            }
        }

        let (signer, origin) = state::ensure_keys(state_dir)?;
        if origin == state::KeysOrigin::MigratedFromSecret {
            ui::progress(&format!(
                "note: replaced the shared HS256 secret in {} with an Ed25519 key pair; tokens minted before no longer work",
                state_dir.display()
            ));
        }
        let key_plan = KeyPlan {
            public_keys: std::path::absolute(state::public_keys_path(state_dir))?,
            private_key: std::path::absolute(state::private_key_path(state_dir))?,
            signer: &signer,
        };
        let logs = state::logs_dir(state_dir);
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

        let (exit_tx, mut exit_rx) =
            mpsc::unbounded_channel::<(usize, u32, std::io::Result<std::process::ExitStatus>)>();
        let mut running: Vec<Running> = Vec::new();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;

        let facts_dir = state_dir.join("facts");
        let with_facts = lake == FactLake::IfBuilt && bins.join("facts").is_file();
        if lake == FactLake::IfBuilt && !with_facts {
            ui::progress(&format!("note: no `facts` binary in {}; starting without the fact lake", bins.display()));
        }
        let specs = plan(args, &key_plan, with_facts.then_some(facts_dir.as_path()))?;
        for (index, spec) in specs.into_iter().enumerate() {
            let what = if spec.name == "shop" { "starting shop (migrations, seed data)" } else { "starting " };
            ui::step(&if spec.name == "shop" { what.to_owned() } else { format!("{what}{}", spec.name) });
            let started = Instant::now();
            let child = spawn(&bins, &logs, &spec)?;
            let pid = child.id();
            watch_exit(index, child, exit_tx.clone());
            running.push(Running { spec: spec.clone(), pid, restarts: Vec::new() });
            let deadline = Duration::from_secs(args.ready_timeout_secs);
            if let Err(err) = wait_ready(&http, &spec, deadline, &mut exit_rx).await {
                ui::done("failed");
                stop_all(&mut running, &mut exit_rx).await;
                let tail = log_tail(&logs, spec.name);
                bail!("{err}\n--- last lines of {}/{}.log ---\n{tail}", logs.display(), spec.name);
            }
            ui::done(&format!("ready in {:.1} s", started.elapsed().as_secs_f64()));
        }
        Ok(Self { bins, logs, running, exit_tx, exit_rx })
    }

    /// Where the services write their logs.
    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// A service that exited since the stack started, its status and the last lines of its
    /// log; `None` while every service runs.
    pub fn exited(&mut self) -> Option<String> {
        let (index, pid, status) = self.exit_rx.try_recv().ok()?;
        let service = self.running.get_mut(index).filter(|s| s.pid == Some(pid))?;
        service.pid = None;
        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        let name = service.spec.name;
        let tail = log_tail(&self.logs, name);
        Some(format!("{name} exited ({status})\n--- last lines of {}/{name}.log ---\n{tail}", self.logs.display()))
    }

    pub async fn stop(&mut self) {
        stop_all(&mut self.running, &mut self.exit_rx).await;
    }
}

pub async fn run(state_dir: &Path, args: UpArgs) -> anyhow::Result<ExitCode> {
    ui::step("checking PostgreSQL");
    if let Err(err) = prepare_database(&args.database_url).await {
        ui::done("failed");
        return Err(err);
    }
    ui::done("ok");

    let mut stack = Stack::start(state_dir, &args, FactLake::IfBuilt).await?;
    let keys = state::load_keys(state_dir)?;
    let token = keys.mint("learner", Role::Learner, Duration::from_secs(12 * 3600))?;
    let login_code = orchestrator::console::mint_login_code(&keys, "learner", orchestrator::console::LOGIN_CODE_TTL)?;
    print_summary(&args, &token, &login_code, &stack.logs);

    let Stack { bins, logs, running, exit_tx, exit_rx } = &mut stack;
    let outcome = supervise(bins, logs, running, exit_tx, exit_rx).await;
    ui::step("stopping");
    stack.stop().await;
    ui::done("stopped");
    outcome
}

fn spawn(bins: &Path, logs: &Path, spec: &ServiceSpec) -> anyhow::Result<Child> {
    let log_path = logs.join(format!("{}.log", spec.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = Command::new(bins.join(spec.binary));
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env(service_kit::server::ENV_SUPERVISOR_PID, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("cannot start {}", spec.name))
}

fn watch_exit(
    index: usize,
    mut child: Child,
    tx: mpsc::UnboundedSender<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
) {
    let pid = child.id().unwrap_or_default();
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = tx.send((index, pid, status));
    });
}

async fn wait_ready(
    http: &reqwest::Client,
    spec: &ServiceSpec,
    deadline: Duration,
    exits: &mut mpsc::UnboundedReceiver<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok((_, _, status)) = exits.try_recv() {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            bail!("{} exited during start-up ({status})", spec.name);
        }
        if let Ok(resp) = http.get(&spec.ready_url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if start.elapsed() > deadline {
            bail!("{} was not ready within {} s ({})", spec.name, deadline.as_secs(), spec.ready_url);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The console's one-time login address on the control gateway.
pub fn console_login_url(port_offset: u16, code: &str) -> String {
    format!("http://{}{}?code={code}", addr(ports::CONTROL, port_offset), orchestrator::console::LOGIN_PATH)
}

fn print_summary(args: &UpArgs, token: &str, login_code: &str, logs: &Path) {
    let o = args.port_offset;
    let user = format!("http://{}", addr(ports::USER, o));
    let control = format!("http://{}", addr(ports::CONTROL, o));
    let observability = format!("http://{}", addr(ports::OBSERVABILITY, o));
    let lines = [
        String::new(),
        "ObservaStack is up.".to_owned(),
        String::new(),
        "  console (one-time login link; it works once, then the browser keeps a cookie):".to_owned(),
        format!("  {}", console_login_url(o, login_code)),
        String::new(),
        format!("  user gateway           {user}            try: curl {user}/api/products"),
        format!("  control gateway        {control}            JWT required (token below)"),
        format!("  observability gateway  {observability}            e.g. {observability}/api/services/shop/metrics"),
        format!(
            "  service health         {observability}/facts/dashboard   (the lake, through the observability gateway)"
        ),
        String::new(),
        "  learner token (valid 12 h; mint more with `observastack token`):".to_owned(),
        format!("  {token}"),
        format!("  e.g. curl -H \"Authorization: Bearer $TOKEN\" {control}/api/services/shop/config"),
        format!("       curl -H \"Authorization: Bearer $TOKEN\" {control}/api/scenarios"),
        String::new(),
        format!("  logs: {}/*.log    stop: Ctrl-C", logs.display()),
    ];
    for line in lines {
        ui::progress(&line);
    }
}

async fn supervise(
    bins: &Path,
    logs: &Path,
    running: &mut [Running],
    exit_tx: &mpsc::UnboundedSender<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
    exit_rx: &mut mpsc::UnboundedReceiver<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
) -> anyhow::Result<ExitCode> {
    let shutdown = service_kit::server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(ExitCode::SUCCESS),
            Some((index, pid, status)) = exit_rx.recv() => {
                let Some(service) = running.get_mut(index) else { continue };
                if service.pid != Some(pid) {
                    continue;
                }
                service.pid = None;
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let now = Instant::now();
                service.restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                if service.restarts.len() >= MAX_RESTARTS {
                    ui::error(&format!(
                        "{} keeps crashing ({status}); giving up. See {}/{}.log",
                        service.spec.name, logs.display(), service.spec.name
                    ));
                    return Ok(ExitCode::FAILURE);
                }
                service.restarts.push(now);
                ui::error(&format!("{} exited ({status}); restarting", service.spec.name));
                tokio::time::sleep(Duration::from_millis(500 * service.restarts.len() as u64)).await;
                let child = spawn(bins, logs, &service.spec)?;
                service.pid = child.id();
                watch_exit(index, child, exit_tx.clone());
            }
        }
    }
}

/// SIGTERM to every child (gateways first, so no new traffic reaches shop), then SIGKILL to
/// whatever has not exited after the grace period.
async fn stop_all(
    running: &mut [Running],
    exits: &mut mpsc::UnboundedReceiver<(usize, u32, std::io::Result<std::process::ExitStatus>)>,
) {
    let mut alive: HashMap<u32, usize> = HashMap::new();
    for (index, service) in running.iter().enumerate().rev() {
        if let Some(pid) = service.pid {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            alive.insert(pid, index);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while !alive.is_empty() {
        match tokio::time::timeout_at(deadline, exits.recv()).await {
            Ok(Some((_, pid, _))) => {
                alive.remove(&pid);
            }
            Ok(None) | Err(_) => break,
        }
    }
    for pid in alive.keys() {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    for service in running.iter_mut() {
        service.pid = None;
    }
}

fn log_tail(logs: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_login_url_is_on_the_control_gateway_with_the_port_offset() {
        assert_eq!(console_login_url(0, "abc"), "http://127.0.0.1:8081/console/login?code=abc");
        assert_eq!(console_login_url(400, "abc"), "http://127.0.0.1:8481/console/login?code=abc");
    }

    #[test]
    fn the_orchestrator_is_pointed_at_the_console_assets() {
        let args = UpArgs {
            database_url: "postgres://postgres@127.0.0.1:5432/observastack".to_owned(),
            port_offset: 0,
            bin_dir: None,
            otlp_endpoint: None,
            seed_products: 1,
            seed_orders: 1,
            scenarios: vec![PathBuf::from("/scenarios")],
            console_dir: PathBuf::from("/srv/console/dist"),
            ready_timeout_secs: 1,
        };
        let signer = JwtSigner::generate().unwrap();
        let keys = KeyPlan {
            public_keys: PathBuf::from("/state/jwt-public.pem"),
            private_key: PathBuf::from("/state/jwt-private.pem"),
            signer: &signer,
        };
        let specs = plan(&args, &keys, None).unwrap();
        let orchestrator = specs.iter().find(|s| s.name == "orchestrator").map(|s| s.args.join(" "));
        assert!(orchestrator.is_some_and(|a| a.contains("--console-dir /srv/console/dist")));
        assert!(!specs.iter().any(|s| s.name == "facts"));

        let specs = plan(&args, &keys, Some(Path::new("/state/facts"))).unwrap();
        let orchestrator = specs.iter().find(|s| s.name == "orchestrator").map(|s| s.args.join(" ")).unwrap();
        assert!(orchestrator.contains("--service-health-url http://127.0.0.1:8082/facts/dashboard"), "{orchestrator}");
        assert!(orchestrator.contains("--service gateway-control=http://127.0.0.1:8112"), "{orchestrator}");
        let observability = specs.iter().find(|s| s.name == "gateway-observability").map(|s| s.args.join(" ")).unwrap();
        assert!(observability.contains("--service facts=http://127.0.0.1:8104"), "{observability}");
        assert_eq!(specs[0].name, "facts", "the lake starts first");
    }

    #[test]
    fn only_the_orchestrator_is_given_the_private_key_and_every_emitter_a_service_token() {
        let args = UpArgs {
            database_url: "postgres://postgres@127.0.0.1:5432/observastack".to_owned(),
            port_offset: 0,
            bin_dir: None,
            otlp_endpoint: None,
            seed_products: 1,
            seed_orders: 1,
            scenarios: vec![],
            console_dir: PathBuf::from("/console"),
            ready_timeout_secs: 1,
        };
        let signer = JwtSigner::generate().unwrap();
        let keys = KeyPlan {
            public_keys: PathBuf::from("/state/jwt-public.pem"),
            private_key: PathBuf::from("/state/jwt-private.pem"),
            signer: &signer,
        };
        let specs = plan(&args, &keys, Some(Path::new("/state/facts"))).unwrap();
        let env = |spec: &ServiceSpec, key: &str| spec.env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        let verifier = signer.verifier();
        for spec in &specs {
            assert_eq!(env(spec, ENV_JWT_PUBLIC_KEYS).as_deref(), Some("/state/jwt-public.pem"), "{}", spec.name);
            let private = env(spec, ENV_JWT_PRIVATE_KEY);
            assert_eq!(private.is_some(), spec.name == "orchestrator", "{}: {private:?}", spec.name);
            match env(spec, ENV_SERVICE_TOKEN) {
                None => assert_eq!(spec.name, "facts", "every emitter has a service token"),
                Some(token) => {
                    let caller = verifier.verify(&token).unwrap();
                    assert_eq!((caller.subject.as_str(), caller.role), (spec.name, Role::Service));
                }
            }
        }
    }
}
