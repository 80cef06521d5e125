//! The facts binary: reads flags and env, starts telemetry, opens the lake and serves until
//! Ctrl-C or SIGTERM (flushing the WAL into Iceberg on the way out).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use facts::objstore::StoreConfig;
use facts::{Application, Options, Settings};

/// mimalloc: with glibc's per-thread arenas the flush/ingest churn fragmented the heap (peak RSS
/// 2.4 GB at 10M facts in `facts-bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ObservaStack facts: the request-fact lake (ingest, Iceberg, metrics_1m, Service Health).
///
/// The keys that verify tokens (ingest, SQL, maintenance, `/config`) come from the environment
/// only (`OBSERVASTACK_JWT_PUBLIC_KEYS`: a path, PEM or `base64:` PEM); the lake never holds the
/// private key.
#[derive(Debug, Parser)]
#[command(name = "facts", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "OBSERVASTACK_FACTS_LISTEN", default_value_t = facts::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory for the WAL, the Iceberg catalog and (by default) the warehouse.
    #[arg(long, env = "OBSERVASTACK_FACTS_DATA_DIR", default_value = facts::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// How often acknowledged facts are committed to Iceberg (e.g. `60s`; `100ms` to `1h`). The
    /// start value of `/config`'s `flush_interval_ms`.
    #[arg(long, env = "OBSERVASTACK_FACTS_FLUSH_INTERVAL", value_parser = parse_flush_interval,
          default_value_t = facts::pipeline::DEFAULT_FLUSH_INTERVAL.into())]
    flush_interval: humantime::Duration,
    /// How often `metrics_1m` is rolled up (`1h` as the seed asks; `1m` to `1d`). The start value
    /// of `/config`'s `rollup_interval_secs`.
    #[arg(long, env = "OBSERVASTACK_FACTS_ROLLUP_INTERVAL", value_parser = parse_rollup_interval,
          default_value_t = facts::pipeline::DEFAULT_ROLLUP_INTERVAL.into())]
    rollup_interval: humantime::Duration,
    /// Largest ingest body in bytes (bigger ones get 413).
    #[arg(long, env = "OBSERVASTACK_FACTS_MAX_BODY_BYTES", default_value_t = facts::http::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// PostgreSQL URL of the orchestrator's database (config-change markers; read-only).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Store the lake in this S3 bucket instead of the data dir (needs the `s3` build feature).
    #[arg(long, env = "OBSERVASTACK_FACTS_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// S3 endpoint for S3-compatible stores (MinIO, R2, …).
    #[arg(long, env = "OBSERVASTACK_FACTS_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "OBSERVASTACK_FACTS_S3_REGION")]
    s3_region: Option<String>,
    /// Prefix of the warehouse inside the bucket.
    #[arg(long, env = "OBSERVASTACK_FACTS_S3_PREFIX", default_value = "observastack/warehouse")]
    s3_prefix: String,
    /// OTLP/HTTP endpoint for traces; none disables export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log filter directives.
    #[arg(long, env = "RUST_LOG", default_value = facts::DEFAULT_LOG)]
    log: String,
}

/// The ranges of `/config`, so a bad flag fails at parse, naming the flag.
fn parse_flush_interval(s: &str) -> Result<humantime::Duration, String> {
    parse_within(s, Duration::from_millis(100), Duration::from_secs(3600), "100ms", "1h")
}

fn parse_rollup_interval(s: &str) -> Result<humantime::Duration, String> {
    parse_within(s, Duration::from_secs(60), Duration::from_secs(86_400), "1m", "1d")
}

fn parse_within(
    s: &str,
    min: Duration,
    max: Duration,
    min_text: &str,
    max_text: &str,
) -> Result<humantime::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min || d > max {
        return Err(format!("must be from {min_text} to {max_text}"));
    }
    Ok(d.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::server::run_main("facts", tokio::runtime::Runtime::new(), run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Without keys every ingest would be refused: better not to start at all.
    let started = service_kit::startup::start(facts::SERVICE, cli.otlp_endpoint.as_deref(), &cli.log)?;
    let mut settings = Settings::new(cli.data_dir);
    settings.flush_interval = cli.flush_interval.into();
    settings.rollup_interval = cli.rollup_interval.into();
    if let Some(bucket) = cli.s3_bucket {
        settings.warehouse = Some(format!("s3://{bucket}/{}", cli.s3_prefix.trim_matches('/')));
        settings.store = StoreConfig::S3 {
            bucket,
            region: cli.s3_region,
            allow_http: cli.s3_endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
            endpoint: cli.s3_endpoint,
        };
    }
    let options = Options {
        database_url: cli.database_url.map(Into::into),
        max_body_bytes: Some(cli.max_body_bytes),
        ..Options::new(Arc::new(started.jwt_keys))
    };
    let app = Application::build(cli.listen, settings, options).await.context("the facts service could not start")?;
    tracing::info!(addr = %app.local_addr()?, version = service_kit::VERSION, "facts listening");
    app.run(service_kit::server::shutdown_signal()).await?;
    tracing::info!("facts stopped");
    Ok(())
}
