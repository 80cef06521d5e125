//! `observastack scenario …`: `lint` checks scenario files and folders offline (no stack
//! needed) and prints each problem as `path:line:col: field: message (rule)`; `verify` proves
//! them on a real stack (`scenario_verify`); `list`, `show`, `start`, `status`, `stop`, `give-up`, `reset`
//! and `watch` drive runs through the control gateway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use scenario::Diagnostic;

use crate::control_client::{Control, ControlArgs};
use crate::scenario_run_cmd as runs;
use crate::scenario_verify::{self, VerifyArgs};
use crate::{ui, watch};

#[derive(Debug, clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub action: ScenarioAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ScenarioAction {
    /// Check scenario files, or every `*.toml` in folders, against the format and the services'
    /// real config schemas. Exits 1 when any file has an error.
    Lint {
        /// Scenario files or folders.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Fail on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Prove scenario files on a real stack: the baseline is healthy, the fault bites, doing
    /// nothing, cutting the load or a blind reset never earn a targeted completion, and the
    /// `[solution]` does. Starts its own stack unless --control-url is given. Exits 1 when any
    /// file fails.
    Verify(VerifyArgs),
    /// The scenarios the orchestrator offers: id, difficulty, title.
    List {
        #[command(flatten)]
        control: ControlArgs,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One scenario: story, objectives, load and success conditions (instructors, and learners
    /// once a run of it was resolved or given up, also see faults, cause, hints, solution and
    /// debrief).
    Show {
        /// Scenario id, e.g. `bad-release-checkout`.
        id: String,
        #[command(flatten)]
        control: ControlArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a run: services reset, load on, a healthy baseline, then the incident.
    Start {
        /// Scenario id, e.g. `bad-release-checkout`.
        id: String,
        /// Multiplies every duration of the scenario, 0.01..=1 (0.1 = ten times faster).
        #[arg(long, value_name = "X")]
        time_scale: Option<f64>,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// The active run: scenario, state, elapsed time, hints delivered, success conditions now.
    Status {
        #[command(flatten)]
        control: ControlArgs,
        /// Print the API's JSON (`null` without an active run).
        #[arg(long)]
        json: bool,
    },
    /// Abandon the active run: load off, services back to their defaults. Reveals nothing of
    /// the scenario.
    Stop {
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Give the active run up: load off, services back to their defaults, and the debrief with
    /// the solution printed (recorded as given up, not graded).
    GiveUp {
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Abandon any active run and put every service's config back to its defaults.
    Reset {
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Follow the run live: state changes, hints, config changes, SLIs every 5 s, and the
    /// debrief when it is resolved (then exit 0). Reconnects when the connection drops.
    Watch {
        #[command(flatten)]
        control: ControlArgs,
        /// Print the raw WebSocket messages, one JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(state_dir: &Path, args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ScenarioAction::Lint { paths, deny_warnings } => lint(&paths, deny_warnings),
        ScenarioAction::Verify(args) => scenario_verify::run(state_dir, args).await,
        ScenarioAction::List { control, json } => runs::list(&Control::new(state_dir, &control)?, json).await,
        ScenarioAction::Show { id, control, json } => runs::show(&Control::new(state_dir, &control)?, &id, json).await,
        ScenarioAction::Start { id, time_scale, control } => {
            runs::start(&Control::new(state_dir, &control)?, &id, time_scale).await
        }
        ScenarioAction::Status { control, json } => runs::status(&Control::new(state_dir, &control)?, json).await,
        ScenarioAction::Stop { control } => runs::stop(&Control::new(state_dir, &control)?).await,
        ScenarioAction::GiveUp { control } => runs::give_up(&Control::new(state_dir, &control)?).await,
        ScenarioAction::Reset { control } => runs::reset(&Control::new(state_dir, &control)?).await,
        ScenarioAction::Watch { control, json } => watch::run(&Control::new(state_dir, &control)?, json).await,
    }
}

fn lint(paths: &[PathBuf], deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let services = stack_config::service_catalog()?;
    let (files, mut diagnostics) = scenario::find_files(paths);
    let (_, found) = scenario::load_files(&files, &services);
    diagnostics.extend(found);
    for diagnostic in &diagnostics {
        ui::stdout_line(&diagnostic.to_string());
    }
    ui::stdout_line(&summary(files.len(), &diagnostics));
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let failed = errors > 0 || (deny_warnings && !diagnostics.is_empty());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `5 scenario files checked: no problems` or `… 2 errors and 1 warning in 2 files`.
pub fn summary(files: usize, diagnostics: &[Diagnostic]) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let checked = format!("{} checked", plural(files, "scenario file"));
    if diagnostics.is_empty() {
        return format!("{checked}: no problems");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let mut affected: Vec<_> = diagnostics.iter().map(|d| &d.file).collect();
    affected.sort();
    affected.dedup();
    format!(
        "{checked}: {} and {} in {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(affected.len(), "file")
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use scenario::Severity;

    use super::*;

    #[test]
    fn the_summary_counts_errors_warnings_and_files() {
        assert_eq!(summary(1, &[]), "1 scenario file checked: no problems");
        let mut warning = Diagnostic::file_error(Path::new("a.toml"), "no_scenarios", "empty");
        warning.severity = Severity::Warning;
        let error = Diagnostic::file_error(Path::new("b.toml"), "io", "cannot read");
        assert_eq!(
            summary(3, &[warning, error.clone(), error]),
            "3 scenario files checked: 2 errors and 1 warning in 2 files"
        );
    }
}
