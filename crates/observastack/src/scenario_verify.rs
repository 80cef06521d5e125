//! `observastack scenario verify FILE…`: an instructor's self-check of scenario files against a
//! real stack. Each file is linted, then run twice with time compressed, on a stack started with
//! `up`'s machinery (its own state dir, database and port range) or on `--control-url`'s. The
//! first run proves the baseline is healthy, the fault bites, and that doing nothing, cutting the
//! load or a blind reset never earn a targeted completion; the second proves the `[solution]`,
//! applied through the control gateway with a learner token, completes graded `targeted`. One
//! table per file on stdout, progress on stderr, exit 1 when any file fails.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use scenario::sli::{Journey, JourneySlis, SliSnapshot};
use scenario::{Condition, Diagnostic, Scenario};
use serde_json::{Value, json};
use service_kit::{JwtSigner, Role};
use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::control_client::Refusal;
use crate::scenario_run_cmd::table;
use crate::text::{clock, secs_text};
use crate::up::{self, FactLake, Stack, UpArgs, ports};
use crate::watch::{sli_text, ws_url};
use crate::{state, ui};

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Scenario files, or folders of them.
    #[arg(required = true, value_name = "FILE")]
    pub paths: Vec<PathBuf>,
    /// Multiplies every duration of the runs, 0.01..=1 (0.1: a 60 s baseline takes 6 s).
    #[arg(long, value_name = "S", default_value_t = 0.1)]
    pub time_scale: f64,
    /// Verify on this running stack (its catalog must hold the same scenarios; tokens are
    /// signed with the private key in --state-dir) instead of starting one.
    #[arg(long, value_name = "URL")]
    pub control_url: Option<String>,
    /// The PostgreSQL server on which the started stack creates its own throwaway database (the
    /// database named in the URL is left alone).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Directory holding the service binaries (default: this binary's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Subject of verify's tokens: its runs and changes carry this name on timelines.
const SUBJECT: &str = "verify";
/// What verify's requests name as their client in config history (it is the CLI).
const CLIENT: &str = "cli";
const CLIENT_HEADER: &str = "x-observastack-client";
/// Products in the started stack's shop: the shipped scenarios' faults (the quadratic pricing
/// path, the full-scan search) are sized for the full catalog.
const SEED_PRODUCTS: u32 = 10_000;
/// Past orders: no scenario reads them, so few, for a quick seed.
const SEED_ORDERS: u32 = 300;
/// Load starts cold (connections, caches): the first second of a baseline is not judged.
const WARM_UP_SECS: f64 = 1.0;
/// The orchestrator's default evaluation period under `up`: a state change can trail what
/// caused it by this much.
const TICK_SECS: f64 = 1.0;
/// The contract's margin for a solution: it completes within the success window plus this.
const SOLVE_MARGIN_SECS: f64 = 10.0;
/// Snapshots shown when a check fails.
const LAST_SLIS: usize = 6;

/// How one check of a file came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Worth the instructor's attention, but not a failure.
    Note,
    Failed,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Note => "note",
            Self::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// Everything verify found out about one file.
#[derive(Debug)]
pub struct Report {
    pub file: PathBuf,
    pub id: String,
    pub rows: Vec<Row>,
    /// Why the file failed, with the last SLI snapshots of the run that showed it.
    pub failure: Option<(String, Vec<String>)>,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The file's table: a header with the time it took, one line per check, and on failure
    /// the reason and the run's last SLIs.
    pub fn lines(&self) -> Vec<String> {
        let outcome = if self.passed() { "verified" } else { "FAILED" };
        let mut out = vec![format!(
            "{} ({}): {outcome} in {}",
            self.id,
            self.file.display(),
            secs_text(self.elapsed.as_secs_f64())
        )];
        let rows: Vec<[String; 3]> =
            self.rows.iter().map(|r| [r.check.to_owned(), r.verdict.as_str().to_owned(), r.detail.clone()]).collect();
        out.extend(table(["CHECK", "RESULT", "DETAIL"], &rows).into_iter().map(|l| format!("  {l}")));
        if let Some((reason, slis)) = &self.failure {
            out.push(format!("  reason: {reason}"));
            if !slis.is_empty() {
                out.push("  last SLI snapshots of the run, oldest first:".to_owned());
                out.extend(slis.iter().map(|l| format!("    {l}")));
            }
        }
        out
    }
}

/// A failed check: which, and why.
#[derive(Debug)]
struct Failed {
    check: &'static str,
    reason: String,
}

fn fail<T>(check: &'static str, reason: impl Into<String>) -> Result<T, Failed> {
    Err(Failed { check, reason: reason.into() })
}

pub async fn run(state_dir: &Path, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if !(scenario::TIME_SCALE_MIN..=scenario::TIME_SCALE_MAX).contains(&args.time_scale) {
        anyhow::bail!(
            "--time-scale must be between {} and {}; got {}",
            scenario::TIME_SCALE_MIN,
            scenario::TIME_SCALE_MAX,
            args.time_scale
        );
    }
    let started = std::time::Instant::now();
    let (scenarios, mut reports) = lint(&args.paths)?;
    for line in reports.iter().flat_map(Report::lines) {
        ui::stdout_line(&line);
    }
    if scenarios.is_empty() {
        if reports.is_empty() {
            ui::error("no scenario file to verify (a folder is searched for `*.toml` files)");
            return Ok(ExitCode::FAILURE);
        }
        return Ok(finish(&reports, started.elapsed()));
    }
    let mut target = match &args.control_url {
        Some(url) => {
            Target::Remote { base: url.trim_end_matches('/').to_owned(), keys: Arc::new(state::load_keys(state_dir)?) }
        }
        None => Target::start(&args, &scenarios).await?,
    };
    let outcome = tokio::select! {
        found = verify_all(&mut target, &scenarios, args.time_scale) => Some(found),
        () = service_kit::server::shutdown_signal() => None,
    };
    let failed = match &outcome {
        Some(found) => reports.iter().chain(found).any(|r| !r.passed()),
        None => true,
    };
    target.clean_up(failed).await;
    match outcome {
        Some(found) => {
            reports.extend(found);
            Ok(finish(&reports, started.elapsed()))
        }
        None => {
            ui::error("interrupted; the stack is stopped");
            Ok(ExitCode::from(130))
        }
    }
}

/// Prints the totals and chooses the exit code.
fn finish(reports: &[Report], elapsed: Duration) -> ExitCode {
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let plural = if reports.len() == 1 { "" } else { "s" };
    ui::stdout_line(&format!(
        "{} scenario file{plural} verified in {}: {} passed, {failed} failed",
        reports.len(),
        secs_text(elapsed.as_secs_f64()),
        reports.len() - failed
    ));
    if failed > 0 {
        ui::error(&format!("{failed} of {} scenario file{plural} failed verification", reports.len()));
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Scenario files that passed lint, with what they hold.
type Linted = Vec<(PathBuf, Scenario)>;

/// Lints every file as `scenario lint` does and prints the diagnostics. Returns the files that
/// have no error, and a failed report for each one that has.
fn lint(paths: &[PathBuf]) -> anyhow::Result<(Linted, Vec<Report>)> {
    let services = stack_config::service_catalog()?;
    let (files, mut diagnostics) = scenario::find_files(paths);
    let (loaded, found) = scenario::load_files(&files, &services);
    diagnostics.extend(found);
    for diagnostic in &diagnostics {
        ui::stdout_line(&diagnostic.to_string());
    }
    let errors = |file: &Path| diagnostics.iter().filter(|d| d.is_error() && d.file == file).count();
    let mut reports = Vec::new();
    for d in diagnostics.iter().filter(|d| d.is_error() && !files.contains(&d.file)) {
        reports.push(lint_failure(&d.file, 1, d));
    }
    let mut good = Vec::new();
    for file in &files {
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // Lint holds every id to its file's stem, so the stem finds the file's scenario.
        match loaded.iter().find(|s| s.id == stem) {
            Some(scenario) if errors(file) == 0 => good.push((file.clone(), scenario.clone())),
            _ => {
                let first = diagnostics.iter().find(|d| d.is_error() && &d.file == file);
                match first {
                    Some(d) => reports.push(lint_failure(file, errors(file), d)),
                    None => reports.push(Report {
                        file: file.clone(),
                        id: stem,
                        rows: vec![Row { check: "lint", verdict: Verdict::Failed, detail: "not loaded".into() }],
                        failure: Some(("the file did not load".into(), Vec::new())),
                        elapsed: Duration::ZERO,
                    }),
                }
            }
        }
    }
    Ok((good, reports))
}

fn lint_failure(file: &Path, errors: usize, first: &Diagnostic) -> Report {
    let id = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let plural = if errors == 1 { "" } else { "s" };
    Report {
        file: file.to_owned(),
        id,
        rows: vec![Row { check: "lint", verdict: Verdict::Failed, detail: format!("{errors} error{plural}") }],
        failure: Some((format!("lint: {first}"), Vec::new())),
        elapsed: Duration::ZERO,
    }
}

/// Where the scenarios run: a stack verify started (and stops), or one already running.
enum Target {
    Own {
        stack: Box<Stack>,
        state: Option<tempfile::TempDir>,
        keys: Arc<JwtSigner>,
        offset: u16,
        /// The server's URL as given, and the database verify made on it.
        server: String,
        database: String,
    },
    Remote {
        base: String,
        keys: Arc<JwtSigner>,
    },
}

impl Target {
    /// Starts a stack on a free port range, with its own state dir (keys, logs), its own
    /// database and a scenario folder holding exactly the files to verify.
    async fn start(args: &VerifyArgs, scenarios: &[(PathBuf, Scenario)]) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new().prefix("observastack-verify-").tempdir()?;
        let folder = state.path().join("scenarios");
        std::fs::create_dir_all(&folder)?;
        for (file, _) in scenarios {
            let name = file.file_name().context("a scenario file has no name")?;
            std::fs::copy(file, folder.join(name)).with_context(|| format!("cannot copy {}", file.display()))?;
        }
        let database = format!("observastack_verify_{}", random_hex(6)?);
        let url = with_database(&args.database_url, &database)?;
        ui::step(&format!("creating database {database}"));
        if let Err(err) = up::prepare_database(&url).await {
            ui::done("failed");
            return Err(err);
        }
        ui::done("ok");
        let offset = free_port_offset()?;
        let up_args = UpArgs {
            database_url: url,
            port_offset: offset,
            bin_dir: args.bin_dir.clone(),
            otlp_endpoint: None,
            seed_products: SEED_PRODUCTS,
            seed_orders: SEED_ORDERS,
            scenarios: vec![folder],
            // Nothing here serves a browser.
            console_dir: state.path().join("no-console"),
            ready_timeout_secs: 180,
        };
        ui::progress(&format!("starting a stack at port offset {offset}, state in {}", state.path().display()));
        // The lake is left out: scenarios are judged on the runner's SLIs, and on two cores its
        // CPU would only blur the latencies they are judged on.
        let stack = match Stack::start(state.path(), &up_args, FactLake::Without).await {
            Ok(stack) => stack,
            Err(err) => {
                drop_database(&args.database_url, &database).await;
                let kept = state.keep();
                return Err(err.context(format!("the stack did not start (its logs: {})", kept.join("logs").display())));
            }
        };
        let keys = Arc::new(state::load_keys(state.path())?);
        Ok(Self::Own {
            stack: Box::new(stack),
            state: Some(state),
            keys,
            offset,
            server: args.database_url.clone(),
            database,
        })
    }

    fn api(&self) -> anyhow::Result<Api> {
        match self {
            Self::Own { keys, offset, .. } => {
                Api::new(format!("http://127.0.0.1:{}", ports::CONTROL.saturating_add(*offset)), keys.clone())
            }
            Self::Remote { base, keys } => Api::new(base.clone(), keys.clone()),
        }
    }

    /// A service of a started stack that exited, with its log's last lines.
    fn crashed(&mut self) -> Option<String> {
        match self {
            Self::Own { stack, .. } => stack.exited(),
            Self::Remote { .. } => None,
        }
    }

    /// Stops a started stack and drops its database; its state dir (the services' logs) is
    /// kept when something failed.
    async fn clean_up(&mut self, failed: bool) {
        let Self::Own { stack, state, server, database, .. } = self else { return };
        ui::step("stopping the stack");
        stack.stop().await;
        ui::done("stopped");
        drop_database(server, database).await;
        if let Some(state) = state.take()
            && failed
        {
            let kept = state.keep();
            ui::progress(&format!("the services' logs are kept in {}", kept.join("logs").display()));
        }
    }
}

async fn verify_all(target: &mut Target, scenarios: &[(PathBuf, Scenario)], time_scale: f64) -> Vec<Report> {
    let api = match target.api() {
        Ok(api) => api,
        Err(err) => {
            return scenarios
                .iter()
                .map(|(file, sc)| Report {
                    file: file.clone(),
                    id: sc.id.clone(),
                    rows: Vec::new(),
                    failure: Some((format!("{err:#}"), Vec::new())),
                    elapsed: Duration::ZERO,
                })
                .collect();
        }
    };
    let mut reports = Vec::new();
    for (file, sc) in scenarios {
        let started = std::time::Instant::now();
        ui::progress(&format!("{}: verifying {} at time scale {time_scale}", sc.id, file.display()));
        let mut proof = Proof::new(&api, sc, time_scale);
        proof.own_stack = matches!(target, Target::Own { .. });
        let outcome = match target.crashed() {
            Some(crash) => fail("stack", crash),
            None => proof.prove().await,
        };
        let failure = match outcome {
            Ok(()) => None,
            Err(Failed { check, mut reason }) => {
                if let Some(crash) = target.crashed() {
                    let _ = write!(reason, "\n{crash}");
                }
                proof.rows.push(Row { check, verdict: Verdict::Failed, detail: first_line(&reason) });
                ui::progress(&format!("{}: {check} failed: {}", sc.id, first_line(&reason)));
                Some((format!("{check}: {reason}"), proof.last_slis()))
            }
        };
        // The next file starts from a quiet stack, whatever this one left behind.
        proof.stop_active_run().await;
        let report =
            Report { file: file.clone(), id: sc.id.clone(), rows: proof.rows, failure, elapsed: started.elapsed() };
        for line in report.lines() {
            ui::stdout_line(&line);
        }
        reports.push(report);
    }
    reports
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// The control gateway's routes with tokens of either role, minted with the stack's private
/// key.
struct Api {
    http: reqwest::Client,
    base: String,
    keys: Arc<JwtSigner>,
}

impl Api {
    fn new(base: String, keys: Arc<JwtSigner>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(CLIENT_HEADER, reqwest::header::HeaderValue::from_static(CLIENT));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build()?;
        Ok(Self { http, base, keys })
    }

    fn token(&self, role: Role) -> Result<String, Failed> {
        self.keys.mint(SUBJECT, role, Duration::from_secs(300)).or_else(|e| fail("token", e.to_string()))
    }

    /// The status and JSON body of `method path`; unreachable is a failure of `check`.
    async fn call(
        &self,
        check: &'static str,
        role: Role,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failed> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.token(role)?);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = match request.send().await {
            Ok(resp) => resp,
            Err(err) => return fail(check, format!("cannot reach the control gateway at {}: {err}", self.base)),
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// Like [`Api::call`], but anything other than 2xx fails `check` with the API's words.
    async fn ok(
        &self,
        check: &'static str,
        role: Role,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failed> {
        let what = format!("{method} {path}");
        let (status, body) = self.call(check, role, method, path, body).await?;
        if status.is_success() { Ok(body) } else { fail(check, format!("{what}: {}", refusal_text(status, &body))) }
    }

    async fn feed(&self) -> Result<Feed, Failed> {
        let check = "feed";
        let mut request = match ws_url(&self.base).into_client_request() {
            Ok(request) => request,
            Err(err) => return fail(check, format!("bad control URL {}: {err}", self.base)),
        };
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.token(Role::Instructor)?))
            .or_else(|e| fail(check, e.to_string()))?;
        request.headers_mut().insert("authorization", bearer);
        request.headers_mut().insert(CLIENT_HEADER, HeaderValue::from_static(CLIENT));
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Feed { socket: Box::new(socket) }),
            Err(err) => fail(check, format!("cannot open the orchestrator's WebSocket through {}: {err}", self.base)),
        }
    }
}

/// `message (status code)`, then `field: why (rule)` for each detail.
fn refusal_text(status: StatusCode, body: &Value) -> String {
    Refusal::from_body(status, body).lines().join("; ")
}

/// The orchestrator's live feed (`/api/ws` through the control gateway).
struct Feed {
    socket: Box<WebSocketStream<MaybeTlsStream<TcpStream>>>,
}

impl Feed {
    /// The next JSON message before `deadline`: `Ok(None)` when the deadline passes first.
    async fn next(&mut self, deadline: Instant) -> Result<Option<Value>, Failed> {
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Ok(None),
                Ok(frame) => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(message) = serde_json::from_str(text.as_str()) {
                        return Ok(Some(message));
                    }
                }
                Some(Ok(Message::Close(_))) | None => return fail("feed", "the orchestrator closed its WebSocket"),
                Some(Err(err)) => return fail("feed", format!("the orchestrator's WebSocket failed: {err}")),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// One run as the feed showed it.
#[derive(Debug, Default)]
struct RunView {
    id: String,
    state: String,
    end_reason: Option<String>,
    baseline_at: Option<DateTime<Utc>>,
    /// Every snapshot of the run, with the state it arrived in.
    slis: Vec<(String, SliSnapshot)>,
    faults_applied: usize,
    /// Server time of the last fault's milestone.
    last_fault_at: Option<DateTime<Utc>>,
    /// The note of the `incident_observed` milestone.
    observed: Option<String>,
    /// Milestones by name, with their notes, in order.
    milestones: Vec<(String, String)>,
    /// Delivered hints: index and the state they arrived in.
    hints: Vec<(u64, String)>,
    recovering: usize,
    completed: Option<Value>,
}

impl RunView {
    fn new(id: String) -> Self {
        Self { id, ..Self::default() }
    }

    fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "resolved" | "abandoned" | "gave_up")
    }

    /// Nothing more will happen: the result arrived (it follows the final state), or the run
    /// was abandoned, which has none.
    fn over(&self) -> bool {
        self.completed.is_some() || self.state == "abandoned"
    }

    fn apply(&mut self, message: &Value) {
        let mine = |v: &Value| v.as_str() == Some(self.id.as_str());
        match message["type"].as_str() {
            Some("state") if mine(&message["run"]["id"]) => {
                let state = message["state"].as_str().unwrap_or_default().to_owned();
                if state == "recovering" && self.state != "recovering" {
                    self.recovering += 1;
                }
                self.state = state;
                self.end_reason = message["run"]["end_reason"].as_str().map(str::to_owned);
                self.baseline_at = serde_json::from_value(message["run"]["baseline_at"].clone()).ok().flatten();
            }
            Some("slis") if mine(&message["run_id"]) => {
                if let Ok(snapshot) = serde_json::from_value::<SliSnapshot>(message["snapshot"].clone()) {
                    self.slis.push((self.state.clone(), snapshot));
                }
            }
            Some("event") if mine(&message["run_id"]) && message["kind"] == "milestone" => {
                let name = message["milestone"].as_str().unwrap_or_default().to_owned();
                let note = message["note"].as_str().unwrap_or_default().to_owned();
                match name.as_str() {
                    "fault_applied" => {
                        self.faults_applied += 1;
                        self.last_fault_at = serde_json::from_value(message["at"].clone()).ok();
                    }
                    "incident_observed" => self.observed = Some(note.clone()),
                    _ => {}
                }
                self.milestones.push((name, note));
            }
            Some("hint") if mine(&message["run_id"]) => {
                self.hints.push((message["index"].as_u64().unwrap_or_default(), self.state.clone()));
            }
            Some("completed") if mine(&message["run_id"]) => self.completed = Some(message.clone()),
            _ => {}
        }
    }

    /// Snapshots taken after the last fault was applied.
    fn after_faults(&self) -> impl Iterator<Item = &SliSnapshot> {
        let since = self.last_fault_at;
        self.slis.iter().map(|(_, s)| s).filter(move |s| since.is_some_and(|t| s.at > t))
    }

    fn milestone_since(&self, name: &str, from: usize) -> Option<&str> {
        self.milestones.iter().skip(from).find(|(n, _)| n == name).map(|(_, note)| note.as_str())
    }
}

/// The checks of one file, in order, with what they found so far.
struct Proof<'a> {
    api: &'a Api,
    sc: &'a Scenario,
    scale: f64,
    conditions: Vec<Condition>,
    rows: Vec<Row>,
    /// The run being followed, and its feed.
    run: Option<(Feed, RunView)>,
    /// The baseline snapshots the first run was judged on.
    baseline: Vec<SliSnapshot>,
    /// Verify started this stack, so it may reset every service (never on a shared one).
    own_stack: bool,
}

impl<'a> Proof<'a> {
    fn new(api: &'a Api, sc: &'a Scenario, scale: f64) -> Self {
        Self {
            api,
            sc,
            scale,
            conditions: sc.success.conditions.clone(),
            rows: Vec::new(),
            run: None,
            baseline: Vec::new(),
            own_stack: false,
        }
    }

    fn progress(&self, text: &str) {
        ui::progress(&format!("{}: {text}", self.sc.id));
    }

    fn pass(&mut self, check: &'static str, detail: String) {
        self.progress(&format!("{check}: {detail}"));
        self.rows.push(Row { check, verdict: Verdict::Ok, detail });
    }

    fn note(&mut self, check: &'static str, detail: String) {
        self.progress(&format!("{check} (note): {detail}"));
        self.rows.push(Row { check, verdict: Verdict::Note, detail });
    }

    /// The `when` conditions of the hints: what the scenario watches for as the fault's signal.
    fn signals(&self) -> Vec<Condition> {
        self.sc
            .hints
            .iter()
            .filter_map(|h| match &h.trigger {
                scenario::HintTrigger::When { when, .. } => Some(*when),
                scenario::HintTrigger::After { .. } => None,
            })
            .collect()
    }

    /// The SLI window the orchestrator judges a run at this scale on.
    fn sli_window(&self) -> f64 {
        f64::from(orchestrator::services::sli_window_secs(self.scale))
    }

    fn window(&self) -> f64 {
        self.sc.success.window_secs * self.scale
    }

    /// Long enough that a run which could complete would have: the SLIs forget the fault
    /// (their window), the conditions hold for the success window, and a few ticks.
    fn settle(&self) -> f64 {
        self.sli_window() + self.window() + 3.0 * TICK_SECS
    }

    fn view(&self) -> Option<&RunView> {
        self.run.as_ref().map(|(_, view)| view)
    }

    async fn prove(&mut self) -> Result<(), Failed> {
        self.same_scenario_in_catalog().await?;
        self.control_path().await?;
        self.stop_reveals_nothing().await?;
        self.calm_baseline().await?;
        self.fault_bites().await?;
        self.doing_nothing().await?;
        self.cutting_the_load().await?;
        self.blind_reset().await?;
        self.hints()?;
        self.stop_active_run().await;
        self.solution().await
    }

    /// The orchestrator runs what the file says only if its catalog loaded this very file.
    async fn same_scenario_in_catalog(&mut self) -> Result<(), Failed> {
        let check = "catalog";
        let path = format!("/api/scenarios/{}", self.sc.id);
        let (status, served) = self.api.call(check, Role::Instructor, Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return fail(
                check,
                format!(
                    "the stack's catalog has no scenario `{}` (the orchestrator skips files with errors; see its log)",
                    self.sc.id
                ),
            );
        }
        if !status.is_success() {
            return fail(check, format!("GET {path}: {}", refusal_text(status, &served)));
        }
        let local = serde_json::to_value(self.sc).or_else(|e| fail(check, e.to_string()))?;
        if let Some(at) = first_difference(&local, &served, "") {
            return fail(check, format!("the stack's `{}` differs from the file at `{at}`", self.sc.id));
        }
        Ok(())
    }

    /// The control path cannot be cut from itself: a learner's `upstream.timeout_ms=1` on the
    /// control gateway (which would time out every control request, the one undoing it
    /// included) is refused, and the control path still answers.
    async fn control_path(&mut self) -> Result<(), Failed> {
        let check = "control path";
        let path = "/api/services/gateway-control/config";
        let cut = json!({"upstream": {"timeout_ms": 1}});
        let (status, body) = self.api.call(check, Role::Learner, Method::PATCH, path, Some(&cut)).await?;
        if status != StatusCode::FORBIDDEN {
            if status.is_success() {
                // Undo it before reporting, if the path still carries the undo.
                let _ = self.api.call(check, Role::Instructor, Method::DELETE, path, None).await;
            }
            return fail(
                check,
                format!("a learner's PATCH upstream.timeout_ms=1 on gateway-control: {}", refusal_text(status, &body)),
            );
        }
        self.api.ok(check, Role::Learner, Method::GET, "/api/scenarios", None).await?;
        let mut detail = "a learner's upstream.timeout_ms=1 on gateway-control is refused (403)".to_owned();
        if self.own_stack {
            // What an instructor changed there, `POST /api/reset` puts back like any service.
            let changed = json!({"upstream": {"pool_size": 7}});
            self.api.ok(check, Role::Instructor, Method::PATCH, path, Some(&changed)).await?;
            self.api.ok(check, Role::Learner, Method::POST, "/api/reset", None).await?;
            let after = self.api.ok(check, Role::Learner, Method::GET, path, None).await?;
            let pool = &after["values"]["upstream"]["pool_size"];
            if pool == 7 {
                return fail(check, "POST /api/reset left gateway-control's upstream.pool_size at 7".to_owned());
            }
            detail.push_str(&format!("; POST /api/reset restores it (upstream.pool_size 7 → {pool})"));
        }
        self.pass(check, detail);
        Ok(())
    }

    /// Start, stop, read the answer must not work: after a stopped run the learner's view of
    /// the scenario still hides faults, cause, hints and solution.
    async fn stop_reveals_nothing(&mut self) -> Result<(), Failed> {
        let check = "stop reveals";
        let path = format!("/api/scenarios/{}", self.sc.id);
        let before = self.api.ok(check, Role::Learner, Method::GET, &path, None).await?;
        if before.get("solution").is_some() {
            self.note(check, "already revealed by an earlier resolved or given-up run on this stack".to_owned());
            return Ok(());
        }
        self.start_run(check).await?;
        self.api.ok(check, Role::Learner, Method::POST, "/api/runs/current/stop", None).await?;
        let after = self.api.ok(check, Role::Learner, Method::GET, &path, None).await?;
        self.run = None;
        let shown: Vec<&str> = ["faults", "cause", "hints", "solution", "debrief"]
            .into_iter()
            .filter(|k| after.get(*k).is_some())
            .collect();
        if !shown.is_empty() {
            return fail(check, format!("after a stopped run a learner sees {}", shown.join(", ")));
        }
        self.pass(check, "a stopped run reveals nothing to a learner".to_owned());
        Ok(())
    }

    /// Starts a run after making sure none is active, and follows it on a fresh feed.
    async fn start_run(&mut self, check: &'static str) -> Result<(), Failed> {
        let (status, current) = self.api.call(check, Role::Instructor, Method::GET, "/api/runs/current", None).await?;
        if status.is_success() {
            let scenario = current["scenario_id"].as_str().unwrap_or("a scenario");
            return fail(check, format!("a run of {scenario} is active on the stack; verify does not interrupt it"));
        }
        let feed = self.api.feed().await?;
        let body = json!({"scenario": self.sc.id, "time_scale": self.scale});
        let run = self.api.ok(check, Role::Instructor, Method::POST, "/api/runs", Some(&body)).await?;
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        self.progress(&format!("run {id} started"));
        self.run = Some((feed, RunView::new(id)));
        Ok(())
    }

    /// Reads the feed until `done` holds (true) or `within` seconds pass (false).
    async fn follow(&mut self, within: f64, done: impl Fn(&RunView) -> bool) -> Result<bool, Failed> {
        let deadline = Instant::now() + Duration::from_secs_f64(within.max(0.0));
        let Some((feed, view)) = self.run.as_mut() else { return fail("run", "no run is being followed") };
        while !done(view) {
            match feed.next(deadline).await? {
                Some(message) => view.apply(&message),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Abandons the active run, if any (verify's own or one it left behind).
    /// Abandons the active run if it is the one verify follows; a run someone else started
    /// on a shared stack is not verify's to end.
    async fn stop_active_run(&mut self) {
        let Some(ours) = self.view().map(|v| v.id.clone()) else { return };
        let current = self.api.call("stop", Role::Instructor, Method::GET, "/api/runs/current", None).await;
        if let Ok((status, run)) = current
            && status.is_success()
            && run["id"].as_str() == Some(ours.as_str())
        {
            let _ = self.api.call("stop", Role::Instructor, Method::POST, "/api/runs/current/stop", None).await;
        }
    }

    fn ended(&self, check: &'static str) -> Failed {
        let view = self.view();
        let state = view.map(|v| v.state.clone()).unwrap_or_default();
        let why = view.and_then(|v| v.end_reason.clone()).map(|r| format!(": {r}")).unwrap_or_default();
        Failed { check, reason: format!("the run ended ({state}{why})") }
    }

    /// Baseline healthy: most snapshots after the warm-up meet every success condition. A
    /// baseline that is not is tried once more, since a burst of contention from other work
    /// on the machine can spoil a few seconds of latency; a fault shows in every snapshot.
    async fn calm_baseline(&mut self) -> Result<(), Failed> {
        let check = "baseline healthy";
        let mut first_try = None;
        for _ in 0..2 {
            self.start_run(check).await?;
            let within = self.sc.baseline.duration_secs * self.scale + 60.0;
            if !self.follow(within, |v| v.state == "incident" || v.is_final()).await? {
                return fail(check, format!("the run did not reach its incident within {}", secs_text(within)));
            }
            let Some(view) = self.view() else { return fail(check, "no run") };
            if view.is_final() {
                return Err(self.ended(check));
            }
            match judge_baseline(&self.conditions, &self.signals(), view) {
                Ok((judged, detail)) => {
                    self.baseline = judged;
                    self.pass(check, detail);
                    return Ok(());
                }
                Err(why) if first_try.is_none() => {
                    self.progress(&format!("the baseline was not healthy ({why}); trying once more"));
                    first_try = Some(why);
                    self.stop_active_run().await;
                }
                Err(why) => {
                    return fail(check, format!("{why} (and on the first try: {})", first_try.unwrap_or_default()));
                }
            }
        }
        fail(check, "the baseline was never judged")
    }

    /// Fault bites: once every fault is applied, a success condition fails within the
    /// scenario's own window (plus the SLI window the snapshots trail the system by).
    async fn fault_bites(&mut self) -> Result<(), Failed> {
        let check = "fault bites";
        let faults = self.sc.faults.len();
        let due = self.sc.faults.iter().map(|f| f.at_secs).fold(0.0, f64::max) * self.scale + 10.0;
        if !self.follow(due, |v| v.faults_applied >= faults || v.is_final()).await? {
            let applied = self.view().map_or(0, |v| v.faults_applied);
            return fail(check, format!("{applied} of {faults} faults were applied within {}", secs_text(due)));
        }
        let within = self.window() + self.sli_window() + TICK_SECS;
        let conditions = self.conditions.clone();
        let bitten = |v: &RunView| v.after_faults().any(|s| conditions.iter().any(|c| c.holds(s) == Some(false)));
        self.follow(within, |v| bitten(v) || v.is_final()).await?;
        let Some(view) = self.view() else { return fail(check, "no run") };
        if view.is_final() {
            return Err(self.ended(check));
        }
        let last_fault = view.last_fault_at.unwrap_or_default();
        let first = view.after_faults().find_map(|s| {
            self.conditions.iter().find(|c| c.holds(s) == Some(false)).map(|c| {
                let value = s.value(c.subject, c.sli).unwrap_or_default();
                let after = (s.at - last_fault).as_seconds_f64();
                format!("`{c}` failed {} after the last fault ({})", secs_text(after), sli_number(c, value))
            })
        });
        match first {
            Some(detail) => {
                self.pass(check, detail);
                Ok(())
            }
            None => fail(check, why_no_bite(&self.baseline, view, &self.conditions, within)),
        }
    }

    /// Doing nothing never completes.
    async fn doing_nothing(&mut self) -> Result<(), Failed> {
        let check = "doing nothing";
        let settle = self.settle();
        let before = self.view().map_or(0, |v| v.recovering);
        self.follow(settle, |v| v.over()).await?;
        let Some(view) = self.view() else { return fail(check, "no run") };
        if let Some(done) = &view.completed {
            return fail(check, format!("the run completed while nobody changed anything: {}", result_text(done)));
        }
        if view.is_final() {
            return Err(self.ended(check));
        }
        let flips = view.recovering - before;
        let flips = if flips > 0 { format!(" (conditions held for a while {flips}×)") } else { String::new() };
        self.pass(check, format!("no completion in {}{flips}", secs_text(settle)));
        Ok(())
    }

    /// Cutting the load never completes: a learner may not change the runner's load (403
    /// naming the field); an instructor cut to a tenth does not let the run complete; then the
    /// load is restored to what the run set.
    async fn cutting_the_load(&mut self) -> Result<(), Failed> {
        let check = "cutting the load";
        let runner = "/api/services/runner/config";
        let config = self.api.ok(check, Role::Instructor, Method::GET, runner, None).await?;
        let saved = json!({"enabled": config["values"]["enabled"], "load": config["values"]["load"]});
        let cut = (self.sc.load.rate / 10.0).floor().max(1.0);
        let learner_cut = json!({"load": {"rate": cut}});
        let (status, body) = self.api.call(check, Role::Learner, Method::PATCH, runner, Some(&learner_cut)).await?;
        if status.is_success() {
            self.api.ok(check, Role::Instructor, Method::PATCH, runner, Some(&saved)).await?;
            return fail(
                check,
                format!(
                    "a learner token changed the runner's load.rate to {cut} ({status}); the offered load must be instructor-only"
                ),
            );
        }
        let refusal = Refusal::from_body(status, &body);
        let named: Vec<&str> = refusal
            .details
            .iter()
            .map(|d| d.field.as_str())
            .filter(|f| *f == "load" || f.starts_with("load."))
            .collect();
        if status != StatusCode::FORBIDDEN || named.is_empty() {
            return fail(
                check,
                format!(
                    "a learner's PATCH of the runner's load.rate must be refused with 403 naming the field; got {}",
                    refusal.lines().join("; ")
                ),
            );
        }
        let learner = format!("learner PATCH load.rate → 403 naming {}", named.join(", "));

        let marks = self.view().map_or(0, |v| v.milestones.len());
        let instructor_cut = json!({"load": {"pattern": "constant", "rate": cut}});
        self.api.ok(check, Role::Instructor, Method::PATCH, runner, Some(&instructor_cut)).await?;
        let settle = self.settle();
        self.follow(settle, |v| v.over()).await?;
        self.api.ok(check, Role::Instructor, Method::PATCH, runner, Some(&saved)).await?;
        let Some(view) = self.view() else { return fail(check, "no run") };
        if let Some(done) = &view.completed {
            return fail(check, format!("the run completed with the load cut to {cut}/s: {}", result_text(done)));
        }
        if view.is_final() {
            return Err(self.ended(check));
        }
        let gate =
            view.milestone_since("load_below_plan", marks)
                .map(|note| {
                    if note.is_empty() {
                        " (load_below_plan)".to_owned()
                    } else {
                        format!(" (load_below_plan: {note})")
                    }
                })
                .unwrap_or_default();
        // The load plan restarts with the restore; give the runner a window to show it again.
        let restored_by = self.sli_window() + 2.0 * TICK_SECS;
        self.follow(restored_by, |v| v.milestone_since("load_restored", marks).is_some() || v.is_final()).await?;
        self.pass(
            check,
            format!(
                "{learner}; instructor cut to {cut}/s: no completion in {}{gate}; load restored",
                secs_text(settle)
            ),
        );
        Ok(())
    }

    /// A blind reset (`DELETE /config` of each cause service, learner token, through the
    /// control gateway) is refused, does not heal, or completes graded `blanket`; never
    /// `targeted`.
    async fn blind_reset(&mut self) -> Result<(), Failed> {
        let check = "blind reset";
        let services: BTreeSet<&str> = self.sc.cause.iter().map(|c| c.service.as_str()).collect();
        let mut outcomes = Vec::new();
        let mut accepted = 0;
        for service in services {
            let path = format!("/api/services/{}/config", control_name(service));
            let (status, body) = self.api.call(check, Role::Learner, Method::DELETE, &path, None).await?;
            if status.is_success() {
                accepted += 1;
                outcomes.push(format!("DELETE {} accepted", control_name(service)));
            } else if status.is_client_error() && status != StatusCode::NOT_FOUND {
                let refusal = Refusal::from_body(status, &body);
                let fields: Vec<&str> = refusal.details.iter().map(|d| d.field.as_str()).collect();
                let naming = if fields.is_empty() { String::new() } else { format!(" naming {}", fields.join(", ")) };
                outcomes.push(format!("DELETE {} refused ({}{naming})", control_name(service), status.as_u16()));
            } else {
                return fail(check, format!("DELETE {path}: {}", refusal_text(status, &body)));
            }
        }
        let said = outcomes.join(", ");
        if accepted == 0 {
            self.pass(check, said);
            return Ok(());
        }
        let within = self.window() + self.sli_window() + SOLVE_MARGIN_SECS;
        self.follow(within, |v| v.over()).await?;
        let Some(view) = self.view() else { return fail(check, "no run") };
        match &view.completed {
            Some(done) => match done["grade"].as_str() {
                Some("blanket") => {
                    let detail = format!("{said}; resolved, graded blanket");
                    self.pass(check, detail);
                    Ok(())
                }
                Some(grade) => fail(check, format!("{said}, and the run was graded {grade}: {}", result_text(done))),
                None => fail(check, format!("{said}; the run completed without a grade: {done}")),
            },
            None if view.is_final() => Err(self.ended(check)),
            None => {
                let detail = format!("{said}; did not heal: no completion in {}", secs_text(within));
                self.pass(check, detail);
                Ok(())
            }
        }
    }

    /// Hints reach the learner: the first run's incident (a few minutes at full scale)
    /// delivered at least one, and none outside the incident. A `when` hint whose signal never
    /// showed is worth a look, not a failure: another fix may have come first.
    fn hints(&mut self) -> Result<(), Failed> {
        let check = "hints";
        let Some(view) = self.view() else { return fail(check, "no run") };
        let total = self.sc.hints.len();
        let delivered: BTreeSet<u64> = view.hints.iter().map(|(i, _)| *i).collect();
        let outside: Vec<u64> =
            view.hints.iter().filter(|(_, s)| !matches!(s.as_str(), "incident" | "recovering")).map(|h| h.0).collect();
        if !outside.is_empty() {
            return fail(check, format!("delivered outside the incident: {}", numbered(&outside)));
        }
        if delivered.is_empty() {
            return fail(check, format!("none of {total} hints was delivered during the first run's incident"));
        }
        let missed: Vec<u64> = (0..total as u64)
            .filter(|i| !delivered.contains(i))
            .filter(|i| matches!(self.sc.hints[*i as usize].trigger, scenario::HintTrigger::When { .. }))
            .collect();
        let detail = format!("{} of {total} delivered during the first run's incident", delivered.len());
        if missed.is_empty() {
            self.pass(check, detail);
        } else {
            self.note(check, format!("{detail}; the signal of {} never showed", numbered(&missed)));
        }
        Ok(())
    }

    /// The solution: a second run, the `[solution]` patches with a learner token through the
    /// control gateway once the incident is observed; it must complete within the success
    /// window (plus the SLI window, plus the contract's margin), graded `targeted`, and the
    /// load must stop with it.
    async fn solution(&mut self) -> Result<(), Failed> {
        let check = "solution";
        self.start_run(check).await?;
        let last_fault = self.sc.faults.iter().map(|f| f.at_secs).fold(0.0, f64::max);
        let within = (self.sc.baseline.duration_secs + last_fault) * self.scale + self.settle() + 60.0;
        if !self.follow(within, |v| v.observed.is_some() || v.is_final()).await? {
            return fail(check, format!("the second run's incident was not observed within {}", secs_text(within)));
        }
        if self.view().is_some_and(RunView::is_final) {
            return Err(self.ended(check));
        }
        for patch in &self.sc.solution.patches {
            let path = format!("/api/services/{}/config", control_name(&patch.service));
            let (status, body) = self.api.call(check, Role::Learner, Method::PATCH, &path, Some(&patch.patch)).await?;
            if !status.is_success() {
                return fail(
                    check,
                    format!("the solution's patch of {} was refused: {}", patch.service, refusal_text(status, &body)),
                );
            }
        }
        let patched = Instant::now();
        let within = self.window() + self.sli_window() + SOLVE_MARGIN_SECS;
        self.follow(within, |v| v.over()).await?;
        let took = patched.elapsed().as_secs_f64();
        let Some(view) = self.view() else { return fail(check, "no run") };
        let Some(done) = view.completed.clone() else {
            if view.is_final() {
                return Err(self.ended(check));
            }
            return fail(
                check,
                format!(
                    "the solution's patches did not complete the run within {} (state {})",
                    secs_text(within),
                    view.state
                ),
            );
        };
        if let Some(outcome) = done["outcome"].as_str().filter(|o| *o != "resolved") {
            return fail(check, format!("the run ended {outcome}: {}", result_text(&done)));
        }
        match done["grade"].as_str() {
            Some("targeted") => {}
            Some(grade) => return fail(check, format!("graded {grade}, not targeted: {}", result_text(&done))),
            None => return fail(check, format!("the run completed without a grade: {done}")),
        }
        let run_id = view.id.clone();
        let stored = self.api.ok(check, Role::Instructor, Method::GET, &format!("/api/runs/{run_id}"), None).await?;
        let mut sent = done.clone();
        if let Some(fields) = sent.as_object_mut() {
            fields.remove("type");
        }
        if stored["result"] != sent {
            return fail(
                check,
                format!("the run's stored result differs from its completed message: {}", stored["result"]),
            );
        }
        let runner = self.api.ok(check, Role::Instructor, Method::GET, "/api/services/runner/config", None).await?;
        if runner["values"]["enabled"] != false {
            return fail(check, "the load kept running after the run completed");
        }
        let detect = done["time_to_detect_secs"].as_f64().map(|s| format!(", time to detect {}", secs_text(s)));
        let detail =
            format!("resolved {} after the patches, graded targeted{}", secs_text(took), detect.unwrap_or_default());
        self.pass(check, detail);
        Ok(())
    }

    /// The last snapshots of the run being followed, each with every success condition.
    fn last_slis(&self) -> Vec<String> {
        let Some(view) = self.view() else { return Vec::new() };
        let from = view.slis.len().saturating_sub(LAST_SLIS);
        view.slis[from..].iter().map(|(state, s)| describe_snapshot(state, s, &self.conditions)).collect()
    }
}

/// `12:00:03 incident   ✗ checkout.success_ratio >= 0.99 (0.412) · ✓ all.p95_ms < 300 (45.2) · checkout …`
fn describe_snapshot(state: &str, s: &SliSnapshot, conditions: &[Condition]) -> String {
    let judged: Vec<String> = conditions
        .iter()
        .map(|c| {
            let mark = match c.holds(s) {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "?",
            };
            let value = s.value(c.subject, c.sli).map(|v| sli_number(c, v)).unwrap_or_else(|| "no traffic".into());
            format!("{mark} {c} ({value})")
        })
        .collect();
    let load = if s.running { format!("{:.0}/s offered", s.offered_rps) } else { "load off".to_owned() };
    format!("{} {state:<10} {} · {load} · {}", clock(s.at), judged.join(" · "), sli_text(s))
}

/// Ratios to three decimals (0.990 against 0.99 matters), the rest to one.
fn sli_number(c: &Condition, value: f64) -> String {
    match c.sli {
        scenario::sli::Sli::SuccessRatio | scenario::sli::Sli::ErrorRatio => format!("{value:.3}"),
        _ => format!("{value:.1}"),
    }
}

fn result_text(done: &Value) -> String {
    let grade = done["grade"].as_str().unwrap_or("no grade");
    let note = done["grade_note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
    let repair = done["time_to_repair_secs"].as_f64().map(|s| format!(", {} after the incident began", secs_text(s)));
    format!("{grade}{note}{}", repair.unwrap_or_default())
}

fn numbered(indexes: &[u64]) -> String {
    indexes.iter().map(|i| format!("hint {}", i + 1)).collect::<Vec<_>>().join(", ")
}

/// The baseline's judged snapshots (taken wholly after the warm-up) and what they showed, or
/// why the baseline is not healthy: most of them must meet every success condition, and in
/// most no fault signal (a hint's `when`) may hold. "Most", since a machine shared with other
/// work has latency bursts of its own, while a fault shows in every snapshot.
fn judge_baseline(
    conditions: &[Condition],
    signals: &[Condition],
    view: &RunView,
) -> Result<(Vec<SliSnapshot>, String), String> {
    let baseline_at = view.baseline_at.ok_or("the run never reported its baseline")?;
    let warm = baseline_at + TimeDelta::milliseconds((WARM_UP_SECS * 1000.0) as i64);
    let judged: Vec<SliSnapshot> = view
        .slis
        .iter()
        .filter(|(state, s)| state == "baseline" && s.all.completed > 0)
        .filter(|(_, s)| s.at - TimeDelta::milliseconds((s.window_secs * 1000.0) as i64) >= warm)
        .map(|(_, s)| s.clone())
        .collect();
    if judged.is_empty() {
        return Err("the baseline carried no traffic after its warm-up".to_owned());
    }
    let most = |count: usize| 2 * count > judged.len();
    let healthy = judged.iter().filter(|s| conditions.iter().all(|c| c.holds(s) == Some(true))).count();
    if !most(healthy) {
        let failing: BTreeSet<String> = judged
            .iter()
            .flat_map(|s| conditions.iter().filter(|c| c.holds(s) != Some(true)).map(|c| format!("`{c}`")))
            .collect();
        return Err(format!(
            "only {healthy} of {} baseline snapshots meet every success condition; failing: {}",
            judged.len(),
            failing.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for signal in signals {
        let showing = judged.iter().filter(|s| signal.holds(s) == Some(true)).count();
        if most(showing) {
            return Err(format!(
                "the fault signal `{signal}` (a hint's `when`) holds in {showing} of {} baseline snapshots, before any fault",
                judged.len()
            ));
        }
    }
    let detail = format!("{healthy} of {} snapshots after the warm-up meet every success condition", judged.len());
    Ok((judged, detail))
}

/// Why no success condition failed after the faults: either the SLIs did not move at all (the
/// fault does not bite), or they moved where no condition looks (the conditions hold under the
/// fault).
fn why_no_bite(baseline: &[SliSnapshot], view: &RunView, conditions: &[Condition], within: f64) -> String {
    let after: Vec<&SliSnapshot> = view.after_faults().collect();
    let moved = moved_slis(baseline, &after);
    let window = secs_text(within);
    if after.is_empty() {
        return format!("no SLI snapshot arrived within {window} of the last fault");
    }
    let listed: Vec<String> = conditions.iter().map(|c| format!("`{c}`")).collect();
    if moved.is_empty() {
        format!(
            "the fault does not bite: every success condition ({}) held for {window} after the last fault, and no SLI moved from the baseline",
            listed.join(", ")
        )
    } else {
        format!(
            "the success conditions hold under the fault: {} moved from the baseline, yet every success condition ({}) held for {window} after the last fault",
            moved.join(", "),
            listed.join(", ")
        )
    }
}

/// SLIs that clearly changed between the baseline and the incident: a success ratio down by
/// 0.05 or more, a p95 at least doubled and 50 ms slower.
fn moved_slis(baseline: &[SliSnapshot], incident: &[&SliSnapshot]) -> Vec<String> {
    let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    let pick = |s: &SliSnapshot, subject: Option<Journey>| -> Option<JourneySlis> {
        let slis = match subject {
            None => s.all.clone(),
            Some(j) => s.journeys.get(&j).cloned()?,
        };
        (slis.completed > 0).then_some(slis)
    };
    let subjects = std::iter::once(None).chain(Journey::ALL.into_iter().map(Some));
    let mut moved = Vec::new();
    for subject in subjects {
        let name = subject.map_or("all", Journey::as_str);
        let before: Vec<JourneySlis> = baseline.iter().filter_map(|s| pick(s, subject)).collect();
        let during: Vec<JourneySlis> = incident.iter().filter_map(|s| pick(s, subject)).collect();
        let ratio = |v: &[JourneySlis]| mean(v.iter().map(|s| s.success_ratio).collect());
        let p95 = |v: &[JourneySlis]| mean(v.iter().map(|s| s.p95_ms).collect());
        if let (Some(a), Some(b)) = (ratio(&before), ratio(&during))
            && a - b >= 0.05
        {
            moved.push(format!("{name}.success_ratio {a:.3} → {b:.3}"));
        }
        if let (Some(a), Some(b)) = (p95(&before), p95(&during))
            && b >= 2.0 * a
            && b - a >= 50.0
        {
            moved.push(format!("{name}.p95_ms {a:.0} → {b:.0}"));
        }
    }
    moved
}

/// The first path where two JSON documents differ, `None` when they are equal.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    let here = || if at.is_empty() { "(document)".to_owned() } else { at.to_owned() };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                first_difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &path)
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(here()),
    }
}

/// The control gateway's name for a service a scenario names: scenarios call the user gateway
/// `gateway`, the control gateway fronts it as `gateway-user`.
pub fn control_name(service: &str) -> &str {
    if service == "gateway" { "gateway-user" } else { service }
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A port offset at which every port of the stack is free right now.
fn free_port_offset() -> anyhow::Result<u16> {
    let all = [
        ports::USER,
        ports::CONTROL,
        ports::OBSERVABILITY,
        ports::SHOP,
        ports::ORCHESTRATOR,
        ports::RUNNER,
        ports::FACTS,
        ports::USER_ADMIN,
        ports::CONTROL_ADMIN,
        ports::OBSERVABILITY_ADMIN,
    ];
    for _ in 0..200 {
        let mut buf = [0u8; 2];
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        // 20 000..40 000 above the defaults: clear of them and below the ephemeral range.
        let offset = 20_000 + u16::from_le_bytes(buf) % 20_000;
        if all.iter().all(|p| std::net::TcpListener::bind(("127.0.0.1", p + offset)).is_ok()) {
            return Ok(offset);
        }
    }
    anyhow::bail!("no free range of ports for a stack found")
}

/// `url` pointed at database `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    PgConnectOptions::from_str(url).with_context(|| format!("invalid database URL `{url}`"))?;
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    Ok(match query {
        Some(query) => format!("{root}/{name}?{query}"),
        None => format!("{root}/{name}"),
    })
}

async fn drop_database(server: &str, name: &str) {
    use sqlx::Connection as _;
    let dropped = async {
        let admin = PgConnectOptions::from_str(server)?.database("postgres").disable_statement_logging();
        let mut conn = sqlx::PgConnection::connect_with(&admin).await?;
        // `name` is verify's own `observastack_verify_<hex>`; DROP DATABASE takes no binds.
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(())
    };
    if let Err(err) = dropped.await {
        ui::error(&format!("could not drop database {name}: {err}"));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
    }

    fn snapshot(secs: i64, checkout_ok: f64, p95: f64) -> SliSnapshot {
        let checkout = JourneySlis { completed: 10, success_ratio: checkout_ok, p95_ms: p95, ..Default::default() };
        let mut journeys = BTreeMap::new();
        journeys.insert(Journey::Checkout, checkout.clone());
        SliSnapshot { at: at(secs), window_secs: 3.0, offered_rps: 20.0, running: true, all: checkout, journeys }
    }

    fn conditions(texts: &[&str]) -> Vec<Condition> {
        texts.iter().filter_map(|t| Condition::parse(t).ok()).collect()
    }

    fn baseline_view(snapshots: Vec<SliSnapshot>) -> RunView {
        let mut view = RunView::new("r".into());
        view.baseline_at = Some(at(0));
        view.slis = snapshots.into_iter().map(|s| ("baseline".to_owned(), s)).collect();
        view
    }

    #[test]
    fn a_baseline_is_judged_on_the_snapshots_after_its_warm_up() {
        let conditions = conditions(&["checkout.success_ratio >= 0.99"]);
        // The first snapshot's window reaches into the warm-up: it is not judged.
        let view = baseline_view(vec![snapshot(3, 0.5, 10.0), snapshot(5, 1.0, 10.0), snapshot(6, 1.0, 10.0)]);
        let (judged, detail) = judge_baseline(&conditions, &[], &view).unwrap_or_default();
        assert_eq!(judged.len(), 2);
        assert_eq!(detail, "2 of 2 snapshots after the warm-up meet every success condition");
        let sick = baseline_view(vec![snapshot(5, 0.5, 10.0), snapshot(6, 1.0, 10.0)]);
        let why = judge_baseline(&conditions, &[], &sick).err().unwrap_or_default();
        assert!(why.contains("only 1 of 2") && why.contains("`checkout.success_ratio >= 0.99`"), "{why}");
        assert!(judge_baseline(&conditions, &[], &baseline_view(vec![snapshot(2, 1.0, 1.0)])).is_err());
    }

    #[test]
    fn a_fault_signal_in_most_of_the_baseline_makes_it_unhealthy() {
        let conditions = conditions(&["checkout.success_ratio >= 0.9"]);
        let signal = self::conditions(&["checkout.p95_ms > 30"]);
        let view = baseline_view(vec![snapshot(5, 1.0, 40.0), snapshot(6, 1.0, 50.0), snapshot(7, 1.0, 10.0)]);
        let why = judge_baseline(&conditions, &signal, &view).err().unwrap_or_default();
        assert!(why.contains("`checkout.p95_ms > 30`") && why.contains("2 of 3"), "{why}");
        let calm = baseline_view(vec![snapshot(5, 1.0, 40.0), snapshot(6, 1.0, 10.0), snapshot(7, 1.0, 10.0)]);
        assert!(judge_baseline(&conditions, &signal, &calm).is_ok(), "one burst is not a signal");
    }

    #[test]
    fn no_bite_says_whether_the_slis_moved_where_no_condition_looks() {
        let baseline = vec![snapshot(5, 1.0, 20.0)];
        let mut view = RunView::new("r".into());
        view.last_fault_at = Some(at(10));
        view.slis = vec![("incident".to_owned(), snapshot(12, 0.0, 20.0))];
        let browse_only = conditions(&["browse.p95_ms < 300"]);
        let why = why_no_bite(&baseline, &view, &browse_only, 7.0);
        assert!(why.starts_with("the success conditions hold under the fault"), "{why}");
        assert!(why.contains("checkout.success_ratio 1.000 → 0.000"), "{why}");
        view.slis = vec![("incident".to_owned(), snapshot(12, 1.0, 25.0))];
        let why = why_no_bite(&baseline, &view, &browse_only, 7.0);
        assert!(why.starts_with("the fault does not bite"), "{why}");
    }

    #[test]
    fn the_feed_is_read_per_run() {
        let mut view = RunView::new("a".into());
        let state =
            |id: &str, state: &str| json!({"type": "state", "state": state, "run": {"id": id, "baseline_at": at(0)}});
        view.apply(&state("b", "incident"));
        assert_eq!(view.state, "");
        view.apply(&state("a", "incident"));
        view.apply(&state("a", "recovering"));
        view.apply(
            &json!({"type": "event", "run_id": "a", "kind": "milestone", "milestone": "fault_applied", "at": at(3)}),
        );
        view.apply(&json!({"type": "hint", "run_id": "a", "index": 1}));
        view.apply(&json!({"type": "completed", "run_id": "b"}));
        assert_eq!((view.state.as_str(), view.recovering, view.faults_applied), ("recovering", 1, 1));
        assert_eq!(view.last_fault_at, Some(at(3)));
        assert_eq!(view.hints, [(1, "recovering".to_owned())]);
        assert!(view.completed.is_none(), "another run's result");
    }

    #[test]
    fn the_first_difference_of_two_documents_is_named_by_its_path() {
        let a = json!({"load": {"rate": 20.0, "mix": [1, 2]}, "id": "x"});
        assert_eq!(first_difference(&a, &json!({"load": {"rate": 20, "mix": [1, 2]}, "id": "x"}), ""), None);
        let b = json!({"load": {"rate": 20, "mix": [1, 3]}, "id": "x"});
        assert_eq!(first_difference(&a, &b, "").as_deref(), Some("load.mix[1]"));
        assert_eq!(first_difference(&a, &json!({"id": "x"}), "").as_deref(), Some("load"));
    }

    #[test]
    fn the_stack_database_is_named_on_the_given_server() {
        let url = with_database("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "v_1").ok();
        assert_eq!(url.as_deref(), Some("postgres://postgres@127.0.0.1:5432/v_1?sslmode=disable"));
        assert!(with_database("not a url", "v").is_err());
    }

    #[test]
    fn scenarios_name_the_user_gateway_as_the_control_gateway_fronts_it() {
        assert_eq!(control_name("gateway"), "gateway-user");
        assert_eq!(control_name("shop"), "shop");
    }

    #[test]
    fn a_failed_report_shows_its_reason_and_last_slis() {
        let report = Report {
            file: PathBuf::from("scenarios/x.toml"),
            id: "x".into(),
            rows: vec![
                Row { check: "baseline healthy", verdict: Verdict::Ok, detail: "3 of 3".into() },
                Row { check: "fault bites", verdict: Verdict::Failed, detail: "the fault does not bite".into() },
            ],
            failure: Some(("fault bites: the fault does not bite".into(), vec!["12:00:00 incident …".into()])),
            elapsed: Duration::from_secs(42),
        };
        let lines = report.lines();
        assert_eq!(lines[0], "x (scenarios/x.toml): FAILED in 42 s");
        assert_eq!(lines[1], "  CHECK             RESULT  DETAIL");
        assert_eq!(lines[3], "  fault bites       FAILED  the fault does not bite");
        assert!(lines.iter().any(|l| l == "  reason: fault bites: the fault does not bite"), "{lines:?}");
        assert!(lines.last().is_some_and(|l| l.contains("12:00:00 incident")), "{lines:?}");
    }
}
