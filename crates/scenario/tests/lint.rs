//! Lint against the broken fixtures (each names the diagnostics it must produce in `# expect:`
//! lines) and the shipped scenarios, with a snapshot of the real services' config schemas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use scenario::catalog::{ServiceCatalog, ServiceSpec};
use scenario::{Diagnostic, Expectation, HintTrigger, Scenario, Severity, lint_source};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// The shop and user gateway as `observastack`'s catalog describes them (kept current by a
/// test there), minus their own checks, which need the service types.
fn catalog() -> ServiceCatalog {
    let text = std::fs::read_to_string(fixtures().join("services.json")).unwrap();
    let services: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    services.into_iter().fold(ServiceCatalog::new(), |catalog, (name, service)| {
        let prefixes: Vec<String> = serde_json::from_value(service["instructor_only"].clone()).unwrap();
        let spec = ServiceSpec::new(name, service["defaults"].clone(), service["schema"].clone(), prefixes).unwrap();
        catalog.with(spec)
    })
}

/// One `# expect: LINE:COL | field | rule | message fragment [| warning]` line.
#[derive(Debug, PartialEq)]
struct Expected {
    line: usize,
    column: usize,
    field: String,
    rule: String,
    severity: Severity,
}

fn expectations(source: &str) -> Vec<(Expected, String)> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|spec| {
            let parts: Vec<&str> = spec.split(" | ").collect();
            let (line, column) = parts[0].split_once(':').unwrap();
            let severity = if parts.get(4) == Some(&"warning") { Severity::Warning } else { Severity::Error };
            let expected = Expected {
                line: line.parse().unwrap(),
                column: column.parse().unwrap(),
                field: parts[1].to_owned(),
                rule: parts[2].to_owned(),
                severity,
            };
            (expected, parts[3].to_owned())
        })
        .collect()
}

fn actual(d: &Diagnostic) -> Expected {
    Expected { line: d.line, column: d.column, field: d.field.clone(), rule: d.rule.clone(), severity: d.severity }
}

#[test]
fn each_broken_fixture_yields_exactly_its_expected_diagnostics() {
    let catalog = catalog();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} fixtures", files.len());
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let expected = expectations(&source);
        assert!(!expected.is_empty(), "{} has no `# expect:` line", file.display());
        let (scenario, diagnostics) = lint_source(&source, &file, &catalog);
        let found: Vec<Expected> = diagnostics.iter().map(actual).collect();
        let wanted: Vec<&Expected> = expected.iter().map(|(e, _)| e).collect();
        assert_eq!(found.iter().collect::<Vec<_>>(), wanted, "{}:\n{diagnostics:#?}", file.display());
        for (diagnostic, (_, fragment)) in diagnostics.iter().zip(&expected) {
            assert!(diagnostic.message.contains(fragment.as_str()), "{diagnostic}\nshould contain: {fragment}");
            assert!(diagnostic.to_string().starts_with(&format!("{}:", file.display())), "{diagnostic}");
        }
        let has_errors = diagnostics.iter().any(Diagnostic::is_error);
        assert_eq!(scenario.is_some(), !has_errors, "{}", file.display());
        assert_eq!(Scenario::parse(&source, &file, &catalog).is_err(), has_errors, "{}", file.display());
    }
}

#[test]
fn every_shipped_scenario_parses_without_a_single_diagnostic() {
    let (scenarios, diagnostics) = scenario::load_dir(&[shipped()], &catalog());
    let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert!(diagnostics.is_empty(), "{shown:#?}");
    assert_eq!(scenarios.len(), 5);
}

#[test]
fn a_shipped_scenario_becomes_a_typed_model() {
    let path = shipped().join("bad-release-checkout.toml");
    let source = std::fs::read_to_string(&path).unwrap();
    let scenario = Scenario::parse(&source, &path, &catalog()).unwrap();
    assert_eq!(scenario.id, "bad-release-checkout");
    assert_eq!(scenario.baseline.duration_secs, 60.0);
    assert_eq!(scenario.load.rate, 20.0);
    assert_eq!(scenario.faults[0].patch, json!({"release": {"version": "2.4.1"}}));
    assert_eq!(scenario.hints[0].trigger, HintTrigger::After { after_secs: 30.0 });
    let HintTrigger::When { when, for_secs } = &scenario.hints[1].trigger else { panic!("a condition hint") };
    assert_eq!((when.to_string().as_str(), *for_secs), ("checkout.error_ratio > 0.05", 10.0));
    let conditions: Vec<String> = scenario.success.conditions.iter().map(ToString::to_string).collect();
    assert_eq!(conditions, ["checkout.success_ratio >= 0.99", "all.success_ratio >= 0.99", "all.p95_ms < 300"]);
    assert_eq!(scenario.success.config[0].expect, Expectation::NotEqual(json!("2.4.1")));
    assert!(scenario.success.config[0].holds(&json!({"release": {"version": "2.4.0"}})));
    assert_eq!(scenario.solution.patches[0].patch, json!({"release": {"version": "2.4.0"}}));

    let json = serde_json::to_value(&scenario).unwrap();
    assert_eq!(
        json["hints"][1],
        json!({"when": "checkout.error_ratio > 0.05", "for_secs": 10.0, "text": scenario.hints[1].text})
    );
    assert_eq!(json["success"]["config"][0]["not_equal"], "2.4.1");
}

#[test]
fn scaled_multiplies_every_duration_of_the_run_and_nothing_else() {
    let path = shipped().join("database-bottleneck.toml");
    let source = std::fs::read_to_string(&path).unwrap();
    let scenario = Scenario::parse(&source, &path, &catalog()).unwrap();
    let fast = scenario.scaled(0.1).unwrap();
    assert!((fast.baseline.duration_secs - 6.0).abs() < 1e-9);
    assert!((fast.faults[1].at_secs - 2.0).abs() < 1e-9);
    assert!((fast.success.window_secs - 3.0).abs() < 1e-9);
    let HintTrigger::When { for_secs, .. } = fast.hints[0].trigger else { panic!("a condition hint") };
    assert!((for_secs - 1.0).abs() < 1e-9);
    let HintTrigger::After { after_secs } = fast.hints[1].trigger else { panic!("a time hint") };
    assert!((after_secs - 9.0).abs() < 1e-9);
    assert_eq!(fast.load.rate, scenario.load.rate);
    assert_eq!(fast.load.think_time_ms, scenario.load.think_time_ms);
    assert_eq!(fast.success.conditions, scenario.success.conditions);
    assert_eq!(scenario.scaled(1.0).unwrap(), scenario);
    for bad in [0.0, 0.005, 1.5, f64::NAN] {
        assert!(scenario.scaled(bad).is_err(), "{bad}");
    }
}

#[test]
fn naming_a_folder_and_one_of_its_files_loads_the_file_once() {
    let (scenarios, diagnostics) = scenario::load_dir(&[shipped(), shipped().join("cpu-regression.toml")], &catalog());
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert_eq!(scenarios.len(), 5);
}

#[test]
fn an_empty_folder_is_a_warning_and_a_missing_one_an_error() {
    let (_, diagnostics) = scenario::load_dir(&[fixtures(), fixtures().join("nope")], &catalog());
    let found: Vec<(&str, Severity)> = diagnostics.iter().map(|d| (d.rule.as_str(), d.severity)).collect();
    assert_eq!(found, [("no_scenarios", Severity::Warning), ("io", Severity::Error)]);
}

/// The worked example in docs/scenario-guide.md: its first draft yields exactly the lint output
/// the guide shows, and the three fixes it describes make it clean.
#[test]
fn the_guides_worked_example_lints_as_the_guide_says() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scenario-guide.md")).unwrap();
    let draft = guide.split("```toml\nid = \"flash-sale\"").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
    let draft = format!("id = \"flash-sale\"{draft}");
    let shown = guide.split("$ observastack scenario lint flash-sale.toml\n").nth(1).unwrap();
    let shown: Vec<&str> = shown.lines().take_while(|l| !l.starts_with("```")).collect();

    let catalog = catalog();
    let path = Path::new("flash-sale.toml");
    let (_, diagnostics) = lint_source(&draft, path, &catalog);
    let mut printed: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    printed.push("1 scenario file checked: 3 errors and 0 warnings in 1 file".to_owned());
    assert_eq!(printed, shown);

    let fixed = draft
        .replace("checkout.error_rate > 0.05", "checkout.error_ratio > 0.05")
        .replace(r#""search.p95_ms < 200""#, r#""checkout.p95_ms < 300""#)
        .replace("acquire_timeout = 2000", "acquire_timeout_ms = 2000");
    let (scenario, diagnostics) = lint_source(&fixed, path, &catalog);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert!(scenario.is_some());
}

#[test]
fn the_cause_defaults_to_the_learner_changeable_fields_the_faults_set() {
    let path = shipped().join("gateway-pool-lowered.toml");
    let written = std::fs::read_to_string(&path).unwrap();
    let start = written.find("[[cause]]").unwrap();
    let end = start + written[start..].find("\n\n").unwrap();
    let derived = format!("{}{}", &written[..start], &written[end..]);
    let catalog = catalog();
    let from_file = Scenario::parse(&written, &path, &catalog).unwrap();
    let from_faults = Scenario::parse(&derived, &path, &catalog).unwrap();
    // The shop's injected latency is instructor-only, so only the gateway's pool is the cause.
    let expected = vec![scenario::Cause { service: "gateway".into(), fields: vec!["upstream.pool_size".into()] }];
    assert_eq!(from_faults.cause, expected);
    assert_eq!(from_file.cause, expected);
    assert!(expected[0].covers("gateway", "upstream.pool_size"));
    assert!(expected[0].covers("gateway", "upstream"));
    assert!(!expected[0].covers("gateway", "upstream.timeout_ms"));
    assert!(!expected[0].covers("shop", "upstream.pool_size"));
}
