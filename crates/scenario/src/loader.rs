//! Loading scenario folders: the shipped `scenarios/` plus any extra folders (community packs)
//! named by path, with ids unique across all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::catalog::ServiceCatalog;
use crate::diagnostic::{Diagnostic, FieldPath, Severity};
use crate::lint::{lint_source, position_of};
use crate::model::Scenario;

/// The scenario files `paths` name: every `*.toml` of a folder in name order, a file as given.
/// A path that does not exist is an error; a folder without scenarios, a warning.
pub fn find_files<P: AsRef<Path>>(paths: &[P]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths.iter().map(AsRef::as_ref) {
        if path.is_file() {
            files.push(path.to_owned());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
                    .collect();
                found.sort();
                if found.is_empty() {
                    let mut d =
                        Diagnostic::file_error(path, "no_scenarios", "the folder holds no `*.toml` scenario file");
                    d.severity = Severity::Warning;
                    diagnostics.push(d);
                }
                files.extend(found);
            }
            Err(err) => diagnostics.push(Diagnostic::file_error(path, "io", format!("cannot read: {err}"))),
        }
    }
    // The same file named twice (a folder and one of its files) is one file, not a duplicate id.
    let mut seen = BTreeSet::new();
    files.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));
    (files, diagnostics)
}

/// Parses and checks `files`; returns the scenarios without errors and every diagnostic. A
/// scenario whose id an earlier file already took is rejected.
pub fn load_files(files: &[PathBuf], catalog: &ServiceCatalog) -> (Vec<Scenario>, Vec<Diagnostic>) {
    let mut scenarios = Vec::new();
    let mut diagnostics = Vec::new();
    let mut first_seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let source = match std::fs::read_to_string(file) {
            Ok(source) => source,
            Err(err) => {
                diagnostics.push(Diagnostic::file_error(file, "io", format!("cannot read: {err}")));
                continue;
            }
        };
        let (scenario, found) = lint_source(&source, file, catalog);
        diagnostics.extend(found);
        let Some(scenario) = scenario else { continue };
        if let Some(first) = first_seen.get(&scenario.id) {
            let field = FieldPath::root().key("id");
            let (line, column) = position_of(&source, &field);
            diagnostics.push(Diagnostic {
                file: file.clone(),
                line,
                column,
                field: field.to_string(),
                rule: "unique_id".to_owned(),
                message: format!("id `{}` is already taken by {}", scenario.id, first.display()),
                severity: Severity::Error,
            });
            continue;
        }
        first_seen.insert(scenario.id.clone(), file.clone());
        scenarios.push(scenario);
    }
    (scenarios, diagnostics)
}

/// Loads every scenario in the folders (or files) `paths`: [`find_files`] then [`load_files`].
pub fn load_dir<P: AsRef<Path>>(paths: &[P], catalog: &ServiceCatalog) -> (Vec<Scenario>, Vec<Diagnostic>) {
    let (files, mut diagnostics) = find_files(paths);
    let (scenarios, found) = load_files(&files, catalog);
    diagnostics.extend(found);
    (scenarios, diagnostics)
}
