//! `observastack scenario …`: scenario files. `lint` checks files and folders offline (no stack
//! needed) and prints each problem as `path:line:col: field: message (rule)`.

use std::path::PathBuf;
use std::process::ExitCode;

use scenario::Diagnostic;

use crate::{catalog, ui};

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
}

pub fn run(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ScenarioAction::Lint { paths, deny_warnings } => lint(&paths, deny_warnings),
    }
}

fn lint(paths: &[PathBuf], deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let services = catalog::services()?;
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
