//! `gateway` binary: flags and env → settings → telemetry → serve until Ctrl-C or SIGTERM.

use clap::Parser;
use gateway::Gateway;
use gateway::cli::Cli;

/// mimalloc: glibc's malloc and free were about a tenth of a proxied request's instructions
/// (callgrind, `bench/profile-gateway.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let otlp_endpoint = cli.otlp_endpoint.clone();
    let log = cli.log.clone();
    let settings = cli.into_settings(std::env::var(service_kit::auth::ENV_JWT_PUBLIC_KEYS).ok().as_deref())?;
    let _telemetry = service_kit::telemetry::init(settings.role.service_name(), otlp_endpoint.as_deref(), &log)?;
    service_kit::server::follow_supervisor()?;
    // The admin listener and config follower share this runtime; the public listener gets
    // its own worker threads.
    let gateway = Gateway::build(settings)?;
    gateway.run_until(service_kit::server::shutdown_signal()).await
}
