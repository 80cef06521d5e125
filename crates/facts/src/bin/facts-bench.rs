//! `facts-bench`: the lake's benchmark (also `observastack facts bench`). Starts the facts
//! service in-process on an ephemeral port and measures, on this machine: ingest through HTTP
//! with durability (fsynced WAL), flush to Iceberg, bytes per fact, the rollup, dashboard
//! queries over 24 h and 7 days, fact-to-dashboard latency and peak memory. Prints figures.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use facts::dashboard::{self, GroupBy};
use facts::{Application, Options, Settings};
use service_kit::{JwtSigner, Role};

/// mimalloc: with glibc's per-thread arenas the flush/ingest churn fragmented the heap (peak RSS
/// 2.4 GB at 10M facts in `facts-bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "facts-bench", version)]
struct Cli {
    /// Facts to ingest.
    #[arg(long, default_value_t = 1_000_000)]
    facts: u64,
    /// Days of event time the facts spread over (ending now).
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// Facts per HTTP request.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Data dir (default: a fresh temporary directory, deleted afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const SERVICES: [&str; 3] = ["shop", "gateway-user", "orchestrator"];
const PATHS: [&str; 8] =
    ["/products", "/products/{id}", "/cart", "/cart/items", "/checkout", "/orders", "/orders/{id}", "/search"];
const METHODS: [&str; 3] = ["GET", "GET", "POST"];

fn lognormal(rng: &mut fastrand::Rng, mu: f64, sigma: f64) -> f64 {
    let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
    (mu + sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).exp()
}

/// NDJSON bodies without event ids (the service assigns UUIDv7s), so bodies can be re-sent.
fn bodies(count: usize, batch: usize, days: i64) -> Vec<Bytes> {
    let mut rng = fastrand::Rng::with_seed(7);
    let end = Utc::now().timestamp_millis() - 120_000;
    let span = days * 86_400_000;
    (0..count)
        .map(|_| {
            let mut body = String::with_capacity(batch * 200);
            for _ in 0..batch {
                let t = chrono::DateTime::from_timestamp_millis(end - rng.i64(0..span)).unwrap_or_default();
                let service = SERVICES[rng.usize(0..SERVICES.len())];
                let path = PATHS[rng.usize(0..PATHS.len())];
                let method = METHODS[rng.usize(0..METHODS.len())];
                let status = if rng.f64() < 0.015 { 500 } else { 200 };
                let latency = (lognormal(&mut rng, 3.0, 0.8) * 1000.0).round() / 1000.0;
                body.push_str(&format!(
                    "{{\"event_time\":\"{}\",\"service\":\"{service}\",\"method\":\"{method}\",\"path_template\":\"{path}\",\"status_code\":{status},\"latency_ms\":{latency},\"user_agent_family\":\"Firefox\"}}\n",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ));
            }
            Bytes::from(body)
        })
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { dir_bytes(&path) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
        })
        .sum()
}

/// A `/proc/self/status` field in kB (`VmHWM`, `VmRSS`), 0 when unreadable.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned)))
        .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse().ok()))
        .unwrap_or(0)
}

fn peak_rss_mb() -> f64 {
    status_kb("VmHWM") as f64 / 1024.0
}

/// Peak resident memory per phase of the run, sampled every 50 ms: `VmHWM` says how high the
/// process went, this says when.
struct PhasePeaks {
    phase: std::sync::atomic::AtomicUsize,
    peaks_kb: [std::sync::atomic::AtomicU64; PHASES.len()],
}

const PHASES: [&str; 4] = ["ingest", "final flush", "rollup", "dashboard"];

impl PhasePeaks {
    fn start() -> Arc<Self> {
        let peaks = Arc::new(Self { phase: 0.into(), peaks_kb: Default::default() });
        let sampler = peaks.clone();
        std::thread::spawn(move || {
            loop {
                let rss_kb = status_kb("VmRSS");
                let phase = sampler.phase.load(std::sync::atomic::Ordering::Relaxed).min(PHASES.len() - 1);
                sampler.peaks_kb[phase].fetch_max(rss_kb, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        peaks
    }

    fn enter(&self, phase: usize) {
        self.phase.store(phase, std::sync::atomic::Ordering::Relaxed);
    }

    fn report(&self) -> String {
        PHASES
            .iter()
            .zip(&self.peaks_kb)
            .map(|(name, kb)| format!("{name} {:.0} MB", kb.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let tmp = tempfile_dir()?;
    let data_dir = cli.data_dir.clone().unwrap_or_else(|| tmp.clone());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "facts-bench: {} facts over {} days, batch {}, {} clients, {cores} cores, data dir {}",
        cli.facts,
        cli.days,
        cli.batch,
        cli.clients,
        data_dir.display()
    );

    let settings = Settings::new(&data_dir);
    // A throwaway key pair: the bench is its own emitter and mints the token ingest asks for.
    let signer = JwtSigner::generate()?;
    let keys = Arc::new(signer.verifier());
    let token = signer.mint("facts-bench", Role::Service, Duration::from_secs(7 * 86_400))?;
    let app = Application::build("127.0.0.1:0".parse()?, settings, Options::new(keys)).await?;
    let base = format!("http://{}", app.local_addr()?);
    let engine = app.engine.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));

    let peaks = PhasePeaks::start();
    // 1. Ingest through HTTP; a 200 means fsynced.
    let pool = Arc::new(bodies(64, cli.batch, cli.days));
    let requests = cli.facts.div_ceil(cli.batch as u64);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    let client = reqwest::Client::builder().default_headers(auth).build()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cli.clients {
        let (pool, next, client, url) = (pool.clone(), next.clone(), client.clone(), format!("{base}/api/v1/facts"));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    return Ok::<(), anyhow::Error>(());
                }
                let body = pool[(i as usize) % pool.len()].clone();
                let resp = client.post(&url).header("content-type", "application/x-ndjson").body(body).send().await?;
                anyhow::ensure!(resp.status() == 200, "ingest answered {}", resp.status());
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ingest = started.elapsed().as_secs_f64();
    let ingested = requests * cli.batch as u64;
    println!(
        "ingest (HTTP, NDJSON, fsync before 200): {ingested} facts in {ingest:.2} s = {:.0} facts/s ({:.0} facts/s/core)",
        ingested as f64 / ingest,
        ingested as f64 / ingest / cores as f64
    );

    peaks.enter(1);
    let started = Instant::now();
    let flushed = engine.flush().await?;
    println!("final flush to Iceberg: {flushed} facts in {:.2} s", started.elapsed().as_secs_f64());
    let warehouse = data_dir.join("warehouse").join("observastack");
    let raw_data = dir_bytes(&warehouse.join("request_facts").join("data"));
    let raw_meta = dir_bytes(&warehouse.join("request_facts").join("metadata"));
    println!(
        "raw storage: {raw_data} bytes Parquet = {:.2} bytes/fact; Iceberg metadata {raw_meta} bytes",
        raw_data as f64 / ingested as f64
    );

    // 2. Rollup of everything.
    peaks.enter(2);
    let started = Instant::now();
    let outcome = engine.rollup(Utc::now()).await?;
    let secs = started.elapsed().as_secs_f64();
    let rolled = dir_bytes(&warehouse.join("metrics_1m").join("data"));
    println!(
        "rollup: {} facts → {} metrics_1m rows in {secs:.2} s = {:.0} facts/s; metrics_1m {rolled} bytes = {:.3} bytes/fact",
        outcome.facts,
        outcome.rows,
        outcome.facts as f64 / secs,
        rolled as f64 / ingested as f64
    );

    // 3. Dashboard queries (service shop, grouped by path_template).
    peaks.enter(3);
    for (label, hours) in [("24 h", 24), ("7 days", 24 * 7)] {
        let to = Utc::now().timestamp();
        let q = dashboard::Query {
            from: to - hours * 3600,
            to,
            step: dashboard::auto_step(to - hours * 3600, to),
            service: Some("shop".into()),
            group_by: GroupBy::PathTemplate,
        };
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let board = dashboard::dashboard(&engine, &q, Vec::new()).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(!board.series.is_empty(), "empty dashboard");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "dashboard {label} (shop, by path_template): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1]
        );
    }

    // 4. Fact-to-dashboard latency over HTTP.
    let probe = format!(
        "{{\"event_time\":\"{}\",\"service\":\"shop\",\"method\":\"GET\",\"path_template\":\"/bench-probe\",\"status_code\":200,\"latency_ms\":1}}",
        Utc::now().to_rfc3339()
    );
    let started = Instant::now();
    let resp = client
        .post(format!("{base}/api/v1/facts"))
        .header("content-type", "application/json")
        .body(probe)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "probe answered {}", resp.status());
    loop {
        let body: serde_json::Value = client
            .get(format!("{base}/api/v1/dashboard"))
            .query(&[
                ("service", "shop"),
                ("group_by", "path_template"),
                ("from", &(Utc::now() - chrono::Duration::minutes(15)).to_rfc3339()),
            ])
            .send()
            .await?
            .json()
            .await?;
        if body["series"].as_array().is_some_and(|s| s.iter().any(|x| x["group"] == "/bench-probe")) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "probe not visible after 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "fact-to-dashboard latency: {:.1} ms (ingest 200 + dashboard query showing it)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    println!("peak memory (VmHWM): {:.0} MB; sampled peak by phase: {}", peak_rss_mb(), peaks.report());

    let _ = stop.send(());
    server.await??;
    if cli.data_dir.is_none() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("facts-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
