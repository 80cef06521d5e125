//! `observastack scenario lint` against the shipped scenarios, broken fixtures and the real
//! services' schemas, through the binary and through the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value, json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped() -> PathBuf {
    workspace().join("scenarios")
}

fn broken() -> PathBuf {
    workspace().join("crates/scenario/tests/fixtures/broken")
}

fn lint(args: &[&Path]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_observastack"))
        .arg("scenario")
        .arg("lint")
        .args(args)
        .output()
        .expect("the CLI runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_shipped_scenario_lints_clean_through_the_cli() {
    let (code, stdout) = lint(&[&shipped()]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.trim(), "5 scenario files checked: no problems");
}

#[test]
fn every_shipped_scenario_loads_through_the_library() {
    let catalog = stack_config::service_catalog().unwrap();
    let (scenarios, diagnostics) = scenario::load_dir(&[shipped()], &catalog);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let mut ids: Vec<_> = scenarios.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "bad-release-checkout",
            "cpu-regression",
            "database-bottleneck",
            "gateway-pool-lowered",
            "worker-pool-saturation"
        ]
    );
    for scenario in &scenarios {
        assert!(scenario.hints.len() >= 3, "{}: at least 3 hints", scenario.id);
        let kinds: Vec<bool> =
            scenario.hints.iter().map(|h| matches!(h.trigger, scenario::HintTrigger::After { .. })).collect();
        assert!(kinds.contains(&true) && kinds.contains(&false), "{}: time and condition hints", scenario.id);
    }
}

#[test]
fn broken_files_fail_the_lint_with_one_line_per_problem_and_a_summary() {
    let (code, stdout) = lint(&[&broken()]);
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let summary = lines.last().copied().unwrap_or_default();
    assert!(summary.contains("scenario files checked:") && summary.contains("error"), "{summary}");
    for line in &lines[..lines.len() - 1] {
        // path:line:col: field: message (rule)
        let mut parts = line.splitn(4, ':');
        let (path, row, col) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        assert!(path.ends_with(".toml"), "{line}");
        assert!(row.parse::<usize>().is_ok() && col.parse::<usize>().is_ok(), "{line}");
        assert!(line.ends_with(')'), "{line}");
    }
    let unknown_sli = lines.iter().find(|l| l.contains("unknown-sli.toml")).expect("unknown-sli.toml is reported");
    assert!(unknown_sli.contains(":30:18: hints[1].when: unknown SLI `p90_ms`"), "{unknown_sli}");
}

#[test]
fn a_fault_key_naming_no_route_is_caught_by_the_services_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(shipped().join("bad-release-checkout.toml")).unwrap();
    let source = source.replace(
        r#"patch = { release = { version = "2.4.1" } }"#,
        r#"patch = { faults = { "POST /api/chekout" = { error_rate = 1.0 } } }"#,
    );
    let file = dir.path().join("bad-release-checkout.toml");
    std::fs::write(&file, source).unwrap();
    let (code, stdout) = lint(&[&file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(": faults[0].patch.faults.POST /api/chekout: `shop` config `faults.POST /api/chekout`: `POST /api/chekout` is not a route of this service"),
        "{stdout}"
    );
    assert!(stdout.contains("(known_route)"), "{stdout}");
}

#[test]
fn a_missing_path_is_an_error_and_duplicate_ids_across_folders_are_rejected() {
    let (code, stdout) = lint(&[Path::new("/nonexistent/scenarios")]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("/nonexistent/scenarios:1:1: (file): cannot read"), "{stdout}");

    let pack = tempfile::tempdir().unwrap();
    std::fs::copy(shipped().join("cpu-regression.toml"), pack.path().join("cpu-regression.toml")).unwrap();
    let (code, stdout) = lint(&[&shipped(), pack.path()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("cpu-regression.toml:3:1: id: id `cpu-regression` is already taken by"), "{stdout}");
    assert!(stdout.contains("(unique_id)"), "{stdout}");
}

/// The scenario crate's own tests validate against this snapshot of the real services' config
/// (it may not depend on them). Regenerate with `OBSERVASTACK_BLESS=1 cargo test -p observastack`.
#[test]
fn the_service_snapshot_used_by_the_scenario_tests_is_current() {
    let catalog = stack_config::service_catalog().unwrap();
    let mut services = Map::new();
    for name in catalog.names() {
        let spec = catalog.get(name).unwrap();
        services.insert(
            name.to_owned(),
            json!({ "defaults": spec.defaults(), "schema": spec.schema(), "instructor_only": spec.instructor_only() }),
        );
    }
    let current = serde_json::to_string_pretty(&Value::Object(services)).unwrap() + "\n";
    let path = workspace().join("crates/scenario/tests/fixtures/services.json");
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    if stored != current {
        if std::env::var_os("OBSERVASTACK_BLESS").is_some() {
            std::fs::write(&path, current).unwrap();
        } else {
            panic!("{} is stale; regenerate it with OBSERVASTACK_BLESS=1 cargo test -p observastack", path.display());
        }
    }
}
