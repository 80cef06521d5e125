//! The ObservaStack command line: `up` (native launch of the whole stack), `token` (mint a JWT
//! with the stack's private key), `keys` (show or rotate the stack's token keys), `config get|set` (runtime config through the control gateway),
//! `openapi` (the services' API documents), `facts` (the request-fact lake) and `scenario` (`lint` scenario files offline,
//! `verify` them against a real stack; list, show, start, watch and stop runs through the control gateway).

pub mod config_cmd;
pub mod control_client;
pub mod facts_cmd;
pub mod load_cmd;
pub mod openapi_cmd;
pub mod scenario_cmd;
pub mod scenario_run_cmd;
pub mod scenario_verify;
pub mod state;
pub mod text;
pub mod ui;
pub mod up;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service_kit::Role;

#[derive(Debug, Parser)]
#[command(name = "observastack", version, about = "ObservaStack: an SRE training platform you run on your laptop")]
pub struct Cli {
    /// Where the stack keeps its token keys and logs.
    #[arg(long, global = true, env = "OBSERVASTACK_STATE_DIR", default_value = ".observastack")]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole stack natively (no Docker) and supervise it until Ctrl-C.
    Up(up::UpArgs),
    /// Mint a token signed with the stack's private key.
    Token {
        /// `learner` (operates the system), `instructor` (may also set faults) or `service`
        /// (may only send facts to the lake).
        #[arg(long, default_value = "learner")]
        role: Role,
        /// Who the token names; shown in config history.
        #[arg(long, default_value = "learner")]
        subject: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 12)]
        hours: u64,
    },
    /// The stack's token keys: `show` the public keys, `rotate` the private key.
    #[command(subcommand)]
    Keys(KeysAction),
    /// Read or change a service's runtime configuration through the control gateway.
    Config(config_cmd::ConfigArgs),
    /// Offer load to the user gateway (or one URL) and summarise what users saw.
    Load(load_cmd::LoadArgs),
    /// Write every service's OpenAPI document (generated from code) to `docs/api/`, or check it.
    Openapi(openapi_cmd::OpenapiArgs),
    /// The request-fact lake: `recompute --from --to`, `flush`, `rollup`, `status`, `bench`.
    Facts(facts_cmd::FactsArgs),
    /// Scenarios: `lint` files offline, `verify` them on a real stack; `list`, `show`, `start`,
    /// `status`, `watch`, `stop`, `give-up`, `reset` runs.
    Scenario(scenario_cmd::ScenarioArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Print the stack's public keys (creating the key pair if there is none).
    Show,
    /// Replace the stack's private key; the old public key stays accepted for `--grace`, then
    /// tokens it signed are refused (401).
    Rotate {
        /// How long tokens signed with the old key keep working, e.g. `12h` or `0s`.
        #[arg(long, default_value = "24h")]
        grace: humantime::Duration,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up::run(&cli.state_dir, args).await,
        Command::Keys(KeysAction::Show) => {
            let (_, _) = state::ensure_keys(&cli.state_dir)?;
            let public = state::public_keys_path(&cli.state_dir);
            ui::progress(&format!("{} (every service gets these):", public.display()));
            ui::stdout_line(std::fs::read_to_string(&public)?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysAction::Rotate { grace }) => {
            let (old, new, cut_off) = state::rotate_keys(&cli.state_dir, grace.into())?;
            ui::progress(&format!(
                "new key {new}; the old key {old} is accepted until {} ({grace} from now), then refused. \
                 Restart the stack (`observastack up`) for the services to read the new keys.",
                cut_off.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { role, subject, hours } => {
            let keys = state::load_keys(&cli.state_dir)?;
            let token = keys.mint(&subject, role, Duration::from_secs(hours * 3600))?;
            ui::stdout_line(&token);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(args) => config_cmd::run(&cli.state_dir, args).await,
        Command::Load(args) => load_cmd::run(args).await,
        Command::Openapi(args) => openapi_cmd::run(args),
        Command::Scenario(args) => scenario_cmd::run(&cli.state_dir, args).await,
        Command::Facts(args) => facts_cmd::run(&cli.state_dir, args).await,
    }
}
