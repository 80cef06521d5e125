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
    let started = service_kit::startup::start(cli.role.service_name(), cli.otlp_endpoint.as_deref(), &cli.log)?;
    let settings = cli.into_settings(started.jwt_keys)?;
    // The admin listener and config follower share this runtime; the public listener gets
    // its own worker threads.
    let gateway = Gateway::build(settings)?;
    gateway.run_until(service_kit::server::shutdown_signal()).await
}
