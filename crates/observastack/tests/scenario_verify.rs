//! `observastack scenario verify` end to end: the real binary starts its own stack (the service
//! binaries built beside it, a throwaway database on the test PostgreSQL, a free port range)
//! and proves every shipped scenario; on broken fixtures it fails each with its reason.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

mod support;

/// One stack at a time: each offers tens of journeys a second through five debug builds, and
/// two at once on a 2-core machine would measure each other, not the scenarios.
static ONE_STACK: Mutex<()> = Mutex::new(());

struct Verified {
    passed: bool,
    stdout: String,
    stderr: String,
}

fn verify(paths: &[PathBuf]) -> Verified {
    // The services are siblings of the binary; fail early and clearly when they are not built.
    for service in ["shop", "gateway", "runner", "orchestrator"] {
        support::bin(service);
    }
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_observastack"))
        .args(["--state-dir", state.path().to_str().unwrap(), "scenario", "verify"])
        .args(paths)
        .env("DATABASE_URL", test_support::admin_url())
        .output()
        .unwrap();
    Verified {
        passed: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn repo(path: &str) -> PathBuf {
    // Canonical, so the tables name `/…/scenarios/x.toml`, not `…/crates/observastack/../../…`.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path).canonicalize().unwrap()
}

/// The table of one file: its header line and the indented lines under it.
fn table_of(stdout: &str, id: &str) -> String {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&format!("{id} (")));
    let header = lines.next().unwrap_or_else(|| panic!("no table for {id}:\n{stdout}"));
    let body: Vec<&str> = lines.take_while(|l| l.starts_with(' ')).collect();
    format!("{header}\n{}", body.join("\n"))
}

#[test]
fn every_shipped_scenario_passes_verify() {
    let _turn = ONE_STACK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let run = verify(&[repo("scenarios")]);
    // The tables carry each scenario's time: shown with `--nocapture`, and on failure.
    println!("{}\n(verify took {:.0} s)", run.stdout, started.elapsed().as_secs_f64());
    assert!(run.passed, "verify failed:\n{}\n{}", run.stdout, run.stderr);
    let shipped: Vec<String> = std::fs::read_dir(repo("scenarios"))
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(shipped.len(), 5, "{shipped:?}");
    for id in &shipped {
        let table = table_of(&run.stdout, id);
        assert!(table.contains("verified in"), "{table}");
        for check in [
            "control path",
            "stop reveals",
            "baseline healthy",
            "fault bites",
            "doing nothing",
            "cutting the load",
            "blind reset",
        ] {
            assert!(
                table.lines().any(|l| l.trim_start().starts_with(check) && l.contains(" ok ")),
                "{check}:\n{table}"
            );
        }
        assert!(table.contains("graded targeted"), "{table}");
    }
    assert!(run.stdout.contains("5 scenario files verified in"), "{}", run.stdout);
    assert!(run.stderr.contains("fault bites"), "progress on stderr: {}", run.stderr);
}

#[test]
fn verify_fails_each_broken_fixture_with_its_reason() {
    let _turn = ONE_STACK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let run = verify(&[repo("crates/observastack/tests/fixtures/verify")]);
    println!("{}", run.stdout);
    assert!(!run.passed, "the broken fixtures passed:\n{}", run.stdout);
    let expected = [
        ("fault-does-not-bite", "fault bites", "the fault does not bite"),
        ("conditions-hold-under-fault", "fault bites", "the success conditions hold under the fault"),
        ("solution-does-not-heal", "solution", "the solution's patches did not complete the run"),
    ];
    for (id, check, reason) in expected {
        let table = table_of(&run.stdout, id);
        assert!(table.contains("FAILED in"), "{table}");
        assert!(table.contains(&format!("reason: {check}: {reason}")), "{id} should fail with `{reason}`:\n{table}");
        assert!(table.contains("last SLI snapshots of the run"), "{table}");
    }
    // The fault of `conditions-hold-under-fault` shows where no condition looks: name it.
    let table = table_of(&run.stdout, "conditions-hold-under-fault");
    assert!(table.contains("checkout.success_ratio 1.000 →"), "{table}");
    assert!(run.stdout.contains("3 scenario files verified in"), "{}", run.stdout);
    assert!(run.stderr.contains("error: 3 of 3 scenario files failed verification"), "{}", run.stderr);
    // A failed verify keeps the stack's logs for the instructor and says where; here they
    // are expected, so they go.
    let kept = run.stderr.lines().find_map(|l| l.trim().strip_prefix("the services' logs are kept in "));
    let logs = Path::new(kept.expect("verify says where the logs are"));
    assert!(logs.join("orchestrator.log").is_file(), "{}", logs.display());
    std::fs::remove_dir_all(logs.parent().unwrap()).unwrap();
}
