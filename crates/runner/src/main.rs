//! The runner binary: reads flags and env, starts telemetry, builds the application and serves
//! until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use runner::{Application, Settings};

/// ObservaStack scenario runner: open-loop load of user journeys through the user gateway,
/// controlled through `/config`, reporting user-side SLIs at `/slis`.
///
/// The public keys that verify `/config` tokens come from `OBSERVASTACK_JWT_PUBLIC_KEYS` (a
/// path, PEM or `base64:` PEM).
#[derive(Debug, Parser)]
#[command(name = "runner", version)]
struct Cli {
    /// Address of the internal listener (`/slis`, `/config`, `/metrics`, health).
    #[arg(long, env = "OBSERVASTACK_RUNNER_LISTEN", default_value_t = runner::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Base URL of the user gateway that journeys go through.
    #[arg(long, env = "OBSERVASTACK_RUNNER_TARGET", default_value = runner::DEFAULT_TARGET)]
    target: String,
    /// OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318); none disables export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log filter directives.
    #[arg(long, env = "RUST_LOG", default_value = runner::DEFAULT_LOG)]
    log: String,
    /// Load worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep-alive connections to the target in all.
    #[arg(long, default_value_t = runner::DEFAULT_CONNECTIONS)]
    connections: usize,
    /// Journeys in flight at most; planned journeys beyond are dropped and counted.
    #[arg(long, default_value_t = runner::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::server::run_main(
        "runner",
        tokio::runtime::Builder::new_current_thread().enable_all().build(),
        run(cli),
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = service_kit::startup::start(runner::SERVICE, cli.otlp_endpoint.as_deref(), &cli.log)?;
    let settings = Settings {
        listen: cli.listen,
        target: cli.target,
        jwt_keys: started.jwt_keys,
        threads: cli.threads.unwrap_or_else(runner::default_threads),
        connections: cli.connections,
        max_in_flight: cli.max_in_flight,
        ..Settings::default()
    };
    let app = Application::build(settings).await.context("the runner could not start")?;
    tracing::info!(port = app.port(), version = service_kit::VERSION, "runner listening");
    app.run_until(service_kit::server::shutdown_signal()).await?;
    tracing::info!("runner stopped");
    Ok(())
}
