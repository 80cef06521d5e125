//! An orchestrator restarted mid-run picks the run up from PostgreSQL: same run, history
//! intact, faults and hints not repeated, and the run can still be won.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Stack, fixture_scenarios, wait_for};

fn milestones<'a>(run: &'a Value, name: &str) -> Vec<&'a Value> {
    run["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "milestone" && e["milestone"] == name).collect()
}

#[tokio::test]
async fn a_restarted_orchestrator_resumes_the_run_with_its_history_intact() {
    let mut stack = Stack::start(fixture_scenarios()).await;
    let run = stack.start_run("slow-browse", 0.2).await;
    let id = run["id"].as_str().unwrap().to_owned();
    // The time hint comes 1 s into the incident; wait for it so the restart has a hint to keep.
    let before = wait_for("the first hint", Duration::from_secs(30), || async {
        let run = stack.get_json(&format!("/api/runs/{id}")).await;
        run["events"].as_array().unwrap().iter().any(|e| e["kind"] == "hint").then_some(run)
    })
    .await;
    assert_eq!(milestones(&before, "fault_applied").len(), 1);
    let mut console = stack.ws(Role::Learner).await;

    stack.restart_orchestrator().await;

    // The console on the old orchestrator was told it went away, and may reconnect.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = console.stream.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame;
            }
        }
        None
    })
    .await
    .expect("the old console is closed")
    .expect("with a close frame");
    assert_eq!(u16::from(close.code), 1001);

    // The new orchestrator answers as soon as it is ready; it resumes the run just after, so
    // the `resumed` milestone is awaited rather than expected on the first read.
    let current = wait_for("the resumed milestone", Duration::from_secs(30), || async {
        let current = stack.get_json("/api/runs/current").await;
        (!milestones(&current, "resumed").is_empty()).then_some(current)
    })
    .await;
    assert_eq!(current["id"], id.as_str(), "the same run is still the active one");
    assert!(matches!(current["state"].as_str(), Some("incident" | "recovering")), "{current}");
    let events = current["events"].as_array().unwrap();
    let old = before["events"].as_array().unwrap();
    assert_eq!(&events[..old.len()], old.as_slice(), "the history before the restart is unchanged");
    assert_eq!(milestones(&current, "resumed").len(), 1);
    // A late joiner on the new orchestrator gets the resumed run's state.
    let mut ws = stack.ws(Role::Learner).await;
    let state = ws.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(state["type"], "state");
    assert_eq!(state["run"]["id"], id.as_str());

    // The learner repairs; the resumed engine sees it through and resolves the run.
    let resp = stack.patch_config("shop", Role::Learner, &json!({"workers": {"max_concurrent": 64}})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let completed = ws.until("completed", Duration::from_secs(60), |m| m["type"] == "completed").await;
    assert_eq!(completed["run_id"], id.as_str());
    let done = stack.wait_for_state(&id, "resolved", Duration::from_secs(10)).await;
    assert_eq!(milestones(&done, "fault_applied").len(), 1, "the fault was not applied again");
    let hints: Vec<i64> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "hint")
        .map(|e| e["index"].as_i64().unwrap())
        .collect();
    let mut unique = hints.clone();
    unique.dedup();
    assert_eq!(hints, unique, "no hint was delivered twice");
    assert_eq!(done["result"]["hints_used"].as_u64().unwrap() as usize, hints.len());
    let learner_change = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "config_change" && e["source"] == "learner")
        .expect("the learner's fix is on the timeline");
    assert_eq!(learner_change["field"], "workers.max_concurrent");
    assert_eq!(learner_change["actor"], "ada");
    stack.stop().await;
}

#[tokio::test]
async fn a_run_whose_scenario_is_gone_is_abandoned_on_restart() {
    let dir = std::env::temp_dir().join(format!("orchestrator-scenarios-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_scenarios().join("slow-browse.toml"), dir.join("slow-browse.toml")).unwrap();
    let mut stack = Stack::start(dir.clone()).await;
    let run = stack.start_run("slow-browse", 0.5).await;
    let id = run["id"].as_str().unwrap().to_owned();
    stack.wait_for_state(&id, "baseline", Duration::from_secs(10)).await;

    std::fs::remove_file(dir.join("slow-browse.toml")).unwrap();
    stack.restart_orchestrator().await;

    let ended = stack.get_json(&format!("/api/runs/{id}")).await;
    assert_eq!(ended["state"], "abandoned");
    assert!(ended["end_reason"].as_str().unwrap().contains("no longer in the catalog"), "{ended}");
    assert_eq!(stack.get("/api/runs/current", Role::Learner).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.config("runner").await["enabled"], false);
    std::fs::remove_dir_all(&dir).ok();
    stack.stop().await;
}
