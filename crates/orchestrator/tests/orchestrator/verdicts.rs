//! Verdicts a learner earns: the load is the scenario's, a blind reset heals but is graded
//! blanket, a patch of the cause is graded targeted with every other change kept on the record.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Role;

use crate::helpers::{Stack, details, fixture_scenarios, wait_for};

const SCALE: f64 = 0.1;
const PHASE: Duration = Duration::from_secs(60);

/// Starts `bad-release` and waits until the run saw checkouts fail.
async fn incident(stack: &Stack) -> String {
    let run = stack.start_run("bad-release", SCALE).await;
    let id = run["id"].as_str().unwrap().to_owned();
    milestone(stack, &id, "incident_observed").await;
    id
}

async fn milestone(stack: &Stack, id: &str, name: &str) -> Value {
    wait_for(&format!("milestone {name}"), PHASE, || async {
        let run = stack.get_json(&format!("/api/runs/{id}")).await;
        run["events"].as_array().unwrap().iter().find(|e| e["milestone"] == name).cloned()
    })
    .await
}

async fn delete_config(stack: &Stack, service: &str, role: Role) -> reqwest::Response {
    let url = format!("{}/config", stack.service_url(service));
    stack.http.delete(url).bearer_auth(stack.token(role)).send().await.unwrap()
}

#[tokio::test]
async fn a_blind_reset_heals_but_is_graded_blanket_and_names_the_targeted_fix() {
    let stack = Stack::start(fixture_scenarios()).await;
    let id = incident(&stack).await;
    let resp = delete_config(&stack, "shop", Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::OK, "a learner may reset the shop when no fault field differs");
    let done = stack.wait_for_state(&id, "resolved", PHASE).await;
    let result = &done["result"];
    assert_eq!(result["outcome"], "resolved");
    assert_eq!(result["grade"], "blanket", "{result:#}");
    let note = result["grade_note"].as_str().unwrap();
    assert!(note.contains("a reset to defaults") && note.contains(r#"`shop` release.version = "2.4.0""#), "{note}");
    let changes = result["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!((changes[0]["action"].as_str(), changes[0]["verdict"].as_str()), (Some("reset"), Some("blanket")));
    assert_eq!(changes[0]["fields"][0], json!({"field": "release.version", "old": "2.4.1", "new": "2.4.0"}));
    stack.stop().await;
}

#[tokio::test]
async fn a_patch_of_the_cause_is_graded_targeted_and_a_wrong_change_stays_on_the_record() {
    let stack = Stack::start(fixture_scenarios()).await;
    let id = incident(&stack).await;
    let wrong = stack.patch_config("shop", Role::Learner, &json!({"db": {"pool_size": 20}})).await;
    assert_eq!(wrong.status(), StatusCode::OK);
    // Not healed by the wrong change: still in the incident a while later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.get_json(&format!("/api/runs/{id}")).await["state"], "incident");
    let fix = stack.patch_config("shop", Role::Learner, &json!({"release": {"version": "2.4.0"}})).await;
    assert_eq!(fix.status(), StatusCode::OK);
    let done = stack.wait_for_state(&id, "resolved", PHASE).await;
    let result = &done["result"];
    assert_eq!(result["grade"], "targeted", "{result:#}");
    let verdicts: Vec<&str> =
        result["changes"].as_array().unwrap().iter().filter_map(|c| c["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["wrong", "targeted"]);
    assert_eq!(result["hints_total"], 1);
    let detect = result["time_to_detect_secs"].as_f64().unwrap();
    let mitigate = result["time_to_mitigate_secs"].as_f64().unwrap();
    let repair = result["time_to_repair_secs"].as_f64().unwrap();
    assert!(0.0 < detect && detect < mitigate && mitigate < repair, "{detect} < {mitigate} < {repair}");
    assert!(result["hints_before_detect"].is_u64());
    assert_eq!(result["cause"], json!([{"service": "shop", "fields": ["release.version"]}]));
    stack.stop().await;
}

#[tokio::test]
async fn cutting_the_load_keeps_a_healed_run_from_completing_until_the_plan_is_back() {
    let stack = Stack::start(fixture_scenarios()).await;
    let id = incident(&stack).await;
    // A learner cannot touch the load: it is part of the incident.
    let resp = stack.patch_config("runner", Role::Learner, &json!({"load": {"rate": 1}})).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let error: Value = resp.json().await.unwrap();
    assert!(details(&error).iter().any(|(field, _)| field.starts_with("load")), "{error}");

    // Cut by someone who may (an instructor), then healed: the run must not complete.
    let plan = stack.config("runner").await["load"].clone();
    let cut = stack.patch_config("runner", Role::Instructor, &json!({"load": {"rate": 1}})).await;
    assert_eq!(cut.status(), StatusCode::OK);
    let fix = stack.patch_config("shop", Role::Learner, &json!({"release": {"version": "2.4.0"}})).await;
    assert_eq!(fix.status(), StatusCode::OK);
    let below = milestone(&stack, &id, "load_below_plan").await;
    assert!(below["note"].as_str().unwrap().contains("load plan"), "{below}");
    // Several success windows (1.5 s each at this scale) pass without completion.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let run = stack.get_json(&format!("/api/runs/{id}")).await;
    assert!(run["state"] == "incident" || run["state"] == "recovering", "{}", run["state"]);
    assert!(run["ended_at"].is_null());

    // The plan back: the healed system completes, graded on the learner's change.
    let back = stack.patch_config("runner", Role::Instructor, &json!({"load": plan})).await;
    assert_eq!(back.status(), StatusCode::OK);
    milestone(&stack, &id, "load_restored").await;
    let done = stack.wait_for_state(&id, "resolved", PHASE).await;
    assert_eq!(done["result"]["grade"], "targeted");
    let runner_changes = stack.get_json(&format!("/api/runs/{id}")).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "config_change" && e["service"] == "runner" && e["field"] == "load.rate")
        .count();
    assert!(runner_changes >= 2, "the runner's changes are on the timeline like any other");
    stack.stop().await;
}
