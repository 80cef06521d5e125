//! The orchestrator binary: reads flags and env, starts telemetry, builds the application and
//! serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use orchestrator::console::FrameAncestor;
use orchestrator::{Application, Settings};

/// ObservaStack orchestrator: scenario catalog, run lifecycle, fault injection, success
/// evaluation and the console's WebSocket feed.
///
/// The stack's keys come from `OBSERVASTACK_JWT_PUBLIC_KEYS` and, as the one service that
/// mints tokens, `OBSERVASTACK_JWT_PRIVATE_KEY` (each a path, PEM or `base64:` PEM), never
/// from a flag, so they do not show up in process listings.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "OBSERVASTACK_ORCHESTRATOR_LISTEN", default_value_t = orchestrator::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// PostgreSQL URL (tables live in the `orchestrator` schema).
    #[arg(long, env = "DATABASE_URL", default_value = orchestrator::DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// A folder of scenario files; repeat for community packs (the first of two equal ids wins).
    #[arg(long = "scenarios", value_name = "DIR", default_value = orchestrator::DEFAULT_SCENARIOS_DIR)]
    scenarios: Vec<PathBuf>,
    // Its help lists the defaults from `orchestrator::DEFAULT_SERVICES`.
    #[arg(long = "service", value_name = "NAME=URL", value_parser = parse_service, help = service_help())]
    services: Vec<(String, String)>,
    /// Evaluation period of the active run, in milliseconds.
    #[arg(long, default_value_t = orchestrator::DEFAULT_TICK_MS, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    tick_ms: u64,
    /// OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318); none disables export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The console's built assets (`npm run build` in `console/`, or `scripts/ensure-console.sh`).
    #[arg(long, env = "OBSERVASTACK_CONSOLE_DIR", default_value = orchestrator::DEFAULT_CONSOLE_DIR)]
    console_dir: PathBuf,
    /// Grafana's address as the browser reaches it; the console's Observability tab embeds it.
    #[arg(long, env = "OBSERVASTACK_GRAFANA_URL")]
    grafana_url: Option<String>,
    /// A Grafana dashboard for the console's switch, as TITLE=PATH below the Grafana URL
    /// (e.g. "Shop=d/shop/shop?kiosk"); repeatable.
    #[arg(long = "grafana-dashboard", value_name = "TITLE=PATH", value_parser = parse_dashboard)]
    grafana_dashboards: Vec<(String, String)>,
    /// The Service Health view of the `facts` service as the browser reaches it; the console's
    /// Observability tab embeds and links to it.
    #[arg(long, env = "OBSERVASTACK_SERVICE_HEALTH_URL")]
    service_health_url: Option<String>,
    /// An origin allowed to show the console in a frame, such as an IDE's preview pane:
    /// http(s)://host[:port], the host optionally starting with `*.` (repeatable; the env var
    /// takes a comma-separated list, empty for none). None: nobody may frame the console.
    #[arg(
        long = "frame-ancestor",
        env = "OBSERVASTACK_FRAME_ANCESTORS",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = parse_frame_ancestor
    )]
    frame_ancestors: Vec<Option<FrameAncestor>>,
    /// Log filter directives.
    #[arg(long, env = "RUST_LOG", default_value = orchestrator::DEFAULT_LOG)]
    log: String,
}

fn service_help() -> String {
    let defaults: Vec<String> =
        orchestrator::DEFAULT_SERVICES.iter().map(|(name, url)| format!("{name}={url}")).collect();
    format!(
        "A service as NAME=URL (repeatable); overrides the default of that name. Defaults: {} \
         (`gateway` is the user gateway's admin listener).",
        defaults.join(", ")
    )
}

fn parse_service(s: &str) -> Result<(String, String), String> {
    let (name, url) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=URL"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(format!("`{name}`: a service name uses lowercase letters, digits, `-` and `_`"));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{url}`: a service URL starts with http:// or https://"));
    }
    Ok((name.to_owned(), url.to_owned()))
}

/// An empty item (`OBSERVASTACK_FRAME_ANCESTORS=` as Docker Compose passes an unset default, or
/// `a,,b`) means no origin; anything else must be an origin.
fn parse_frame_ancestor(s: &str) -> Result<Option<FrameAncestor>, String> {
    let s = s.trim();
    if s.is_empty() { Ok(None) } else { s.parse().map(Some) }
}

fn parse_dashboard(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((title, path)) if !title.trim().is_empty() => Ok((title.trim().to_owned(), path.trim().to_owned())),
        _ => Err(format!("`{s}`: expected TITLE=PATH")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::server::run_main("orchestrator", tokio::runtime::Runtime::new(), run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (started, jwt_signer) =
        service_kit::startup::start_signing(orchestrator::SERVICE, cli.otlp_endpoint.as_deref(), &cli.log)?;
    let mut services = orchestrator::default_services();
    services.extend(cli.services);
    let settings = Settings {
        listen: cli.listen,
        database_url: cli.database_url.into(),
        jwt_keys: started.jwt_keys,
        jwt_signer: Some(Arc::new(jwt_signer)),
        scenario_dirs: cli.scenarios,
        services,
        tick: Duration::from_millis(cli.tick_ms),
        console: orchestrator::console::ConsoleSettings {
            assets: Some(cli.console_dir),
            grafana_url: cli.grafana_url.filter(|u| !u.is_empty()),
            grafana_dashboards: cli.grafana_dashboards,
            service_health_url: cli.service_health_url.filter(|u| !u.is_empty()),
            frame_ancestors: cli.frame_ancestors.into_iter().flatten().collect(),
        },
        ..Settings::default()
    };
    let app = Application::build(settings).await.context("the orchestrator could not start")?;
    tracing::info!(port = app.port(), version = service_kit::VERSION, "orchestrator listening");
    app.run_until(service_kit::server::shutdown_signal()).await?;
    tracing::info!("orchestrator stopped");
    Ok(())
}
