//! `observastack facts …`: the fact lake's maintenance through its HTTP API (`recompute`,
//! `flush`, `rollup` with an instructor token minted from the stack's keys, `status`) and its
//! benchmark (`bench`, which runs the `facts-bench` binary built beside this one). The CLI never
//! links the lake itself: DataFusion and Iceberg stay inside the `facts` crate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use service_kit::Role;

use crate::{state, ui};

#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    /// Base URL of the facts service.
    #[arg(long, env = "OBSERVASTACK_FACTS_URL", default_value = "http://127.0.0.1:8104")]
    pub facts_url: String,
    #[command(subcommand)]
    pub action: FactsAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum FactsAction {
    /// Rebuild `metrics_1m` for a window from the raw facts (identical facts → identical rows).
    Recompute {
        /// Start, RFC 3339 (e.g. 2026-11-29T10:00:00Z).
        #[arg(long)]
        from: String,
        /// End (exclusive), RFC 3339.
        #[arg(long)]
        to: String,
    },
    /// Commit every acknowledged fact to Iceberg now.
    Flush,
    /// Run the scheduled rollup now.
    Rollup,
    /// WAL backlog, rollup watermark, dirty hours, schedules.
    Status,
    /// Benchmark the lake on this machine (runs `facts-bench`); prints figures.
    Bench {
        /// Facts to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        facts: u64,
        /// Directory holding `facts-bench` (default: this binary's directory).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Further flags for `facts-bench` (see `facts-bench --help`).
        #[arg(last = true)]
        rest: Vec<String>,
    },
}

pub async fn run(state_dir: &Path, args: FactsArgs) -> anyhow::Result<ExitCode> {
    let base = args.facts_url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3600)).build()?;
    let (method_path, query): (&str, Vec<(&str, String)>) = match args.action {
        FactsAction::Bench { facts, bin_dir, rest } => return bench(facts, bin_dir, &rest),
        FactsAction::Recompute { from, to } => ("POST /api/v1/recompute", vec![("from", from), ("to", to)]),
        FactsAction::Flush => ("POST /api/v1/flush", Vec::new()),
        FactsAction::Rollup => ("POST /api/v1/rollup", Vec::new()),
        FactsAction::Status => ("GET /api/v1/status", Vec::new()),
    };
    let (method, path) = method_path.split_once(' ').unwrap_or(("GET", method_path));
    let url = format!("{base}{path}");
    let req = if method == "POST" {
        // The lake's maintenance is the instructor's; the status is open.
        let keys = state::load_keys(state_dir).context("flush, rollup and recompute need an instructor token")?;
        http.post(&url).bearer_auth(keys.mint("cli", Role::Instructor, Duration::from_secs(300))?)
    } else {
        http.get(&url)
    };
    let resp = req.query(&query).send().await.with_context(|| format!("cannot reach the facts service at {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    ui::stdout_line(&serde_json::to_string_pretty(&body)?);
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        ui::error(&format!("{method} {path} answered {status}"));
        Ok(ExitCode::FAILURE)
    }
}

fn bench(facts: u64, bin_dir: Option<PathBuf>, rest: &[String]) -> anyhow::Result<ExitCode> {
    let dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?.parent().map(PathBuf::from).context("no directory for this binary")?,
    };
    let binary = dir.join("facts-bench");
    anyhow::ensure!(
        binary.is_file(),
        "`facts-bench` not found in {}; build it (`cargo build --release -p facts`) or pass --bin-dir",
        dir.display()
    );
    let status = std::process::Command::new(&binary)
        .arg("--facts")
        .arg(facts.to_string())
        .args(rest)
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
