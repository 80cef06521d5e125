//! The shop binary: reads flags and env, starts telemetry, builds the application and serves
//! until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use shop::{Application, Settings};

/// ObservaStack shop: catalog, carts, checkout and orders on PostgreSQL.
///
/// The public keys that verify `/config` tokens come from `OBSERVASTACK_JWT_PUBLIC_KEYS` (a
/// path, PEM or `base64:` PEM); the shop never holds the private key.
#[derive(Debug, Parser)]
#[command(name = "shop", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "OBSERVASTACK_SHOP_LISTEN", default_value_t = shop::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = shop::DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318); none disables export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log filter directives.
    #[arg(long, env = "RUST_LOG", default_value = shop::DEFAULT_LOG)]
    log: String,
    /// Products seeded into an empty catalog.
    #[arg(long, default_value_t = shop::DEFAULT_SEED_PRODUCTS)]
    seed_products: u32,
    /// Past orders seeded into an empty order history.
    #[arg(long, default_value_t = shop::DEFAULT_SEED_ORDERS)]
    seed_orders: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::server::run_main("shop", tokio::runtime::Runtime::new(), run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = service_kit::startup::start(shop::SERVICE, cli.otlp_endpoint.as_deref(), &cli.log)?;
    let settings = Settings {
        listen: cli.listen,
        database_url: cli.database_url.into(),
        jwt_keys: started.jwt_keys,
        seed_products: cli.seed_products,
        seed_orders: cli.seed_orders,
        ..Settings::default()
    };
    let app = Application::build(settings).await.context("the shop could not start")?;
    tracing::info!(port = app.port(), version = service_kit::VERSION, "shop listening");
    app.run_until(service_kit::server::shutdown_signal()).await?;
    tracing::info!("shop stopped");
    Ok(())
}
