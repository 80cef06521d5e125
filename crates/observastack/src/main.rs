//! `observastack`: the command line of the platform. Parses arguments and hands over to the lib.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = observastack::Cli::parse();
    match observastack::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            observastack::ui::error(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}
