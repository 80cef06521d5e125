//! The lifecycle API: tokens, the catalog, starting (one run at a time), stopping, resetting
//! and history.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::Role;

use crate::helpers::{Stack, details, fixture_scenarios};

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let stack = Stack::start(fixture_scenarios()).await;
    for path in ["/api/scenarios", "/api/runs", "/api/runs/current", "/api/ws"] {
        let resp = stack.http.get(stack.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let forged =
        service_kit::JwtSigner::generate().unwrap().mint("eve", Role::Instructor, Duration::from_secs(60)).unwrap();
    let resp = stack.http.post(stack.url("/api/reset")).bearer_auth(forged).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The console's cookie is as good as the header.
    let resp = stack
        .http
        .get(stack.url("/api/scenarios"))
        .header("cookie", format!("observastack_token={}", stack.token(Role::Learner)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Found by the contract run: a plain GET of the WebSocket route was a text/plain 400.
    let resp = stack.get("/api/ws", Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket_required", "{body}");
    stack.stop().await;
}

#[tokio::test]
async fn learners_see_no_spoilers_until_a_run_of_the_scenario_was_given_up_or_resolved() {
    let stack = Stack::start(fixture_scenarios()).await;
    let list = stack.get_json("/api/scenarios").await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["bad-release", "slow-browse"]);
    assert_eq!(list[1]["difficulty"], "beginner");

    let learner = stack.get_json("/api/scenarios/slow-browse").await;
    for spoiler in ["faults", "cause", "solution", "debrief", "hints"] {
        assert!(learner.get(spoiler).is_none(), "learners must not see {spoiler}: {learner}");
    }
    assert!(learner["success"].get("config").is_none());
    assert_eq!(learner["hint_count"], 2);
    assert_eq!(learner["success"]["conditions"].as_array().unwrap().len(), 2);

    let resp = stack.get("/api/scenarios/slow-browse", Role::Instructor).await;
    let full: Value = resp.json().await.unwrap();
    assert_eq!(full["solution"]["patches"][0]["service"], "shop");
    assert_eq!(full["faults"][0]["service"], "shop");

    let resp = stack.get("/api/scenarios/no-such-thing", Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Start, stop, read the answer: a stopped (or reset) run reveals nothing.
    let run = stack.start_run("slow-browse", 0.05).await;
    let resp = stack.post("/api/runs/current/stop", None, Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::OK);
    stack.wait_for_state(run["id"].as_str().unwrap(), "abandoned", Duration::from_secs(10)).await;
    let after_stop = stack.get_json("/api/scenarios/slow-browse").await;
    assert!(after_stop.get("solution").is_none(), "a stop reveals nothing: {after_stop}");
    stack.start_run("slow-browse", 0.05).await;
    assert_eq!(stack.post("/api/reset", None, Role::Learner).await.status(), StatusCode::OK);
    assert!(stack.get_json("/api/scenarios/slow-browse").await.get("solution").is_none(), "nor does a reset");

    // Giving up does: the debrief says so, with the solution.
    let run = stack.start_run("slow-browse", 0.05).await;
    let id = run["id"].as_str().unwrap();
    stack.wait_for_state(id, "incident", Duration::from_secs(20)).await;
    let resp = stack.post("/api/runs/current/give-up", None, Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ended: Value = resp.json().await.unwrap();
    assert_eq!(ended["state"], "gave_up");
    assert_eq!(ended["result"]["outcome"], "gave_up");
    assert!(ended["result"]["grade"].is_null(), "giving up is not graded as a fix: {ended}");
    assert!(ended["result"]["grade_note"].as_str().unwrap().contains("workers.max_concurrent = 64"), "{ended}");
    assert_eq!(stack.config("runner").await["enabled"], false, "load off");
    assert_eq!(stack.config("shop").await["workers"]["max_concurrent"], 64, "services reset");
    let after = stack.get_json("/api/scenarios/slow-browse").await;
    assert_eq!(after["solution"]["patches"][0]["service"], "shop");
    assert_eq!(after["cause"][0]["fields"][0], "workers.max_concurrent");
    assert_eq!(stack.post("/api/runs/current/give-up", None, Role::Learner).await.status(), StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn runs_start_one_at_a_time_and_stopping_abandons_them() {
    let stack = Stack::start(fixture_scenarios()).await;
    // Bad parameters name the field.
    for (body, field) in [
        (json!({"scenario": "slow-browse", "time_scale": 2.0}), "time_scale"),
        (json!({"scenario": "slow-browse", "time_scale": 0.001}), "time_scale"),
        (json!({"scenario": "slow-browse", "time_scale": "fast"}), "time_scale"),
        (json!({"scenario": "slow-browse", "speed": 1}), "speed"),
        (json!({"time_scale": 0.5}), "scenario"),
    ] {
        let resp = stack.post("/api/runs", Some(body.clone()), Role::Learner).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(details(&error)[0].0, field, "{body}: {error}");
    }
    let resp = stack.post("/api/runs", Some(json!({"scenario": "nope"})), Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.get("/api/runs/current", Role::Learner).await.status(), StatusCode::NOT_FOUND);

    let run = stack.start_run("slow-browse", 0.5).await;
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(run["state"], "setup");
    assert_eq!(run["time_scale"], 0.5);
    assert_eq!(run["started_by"], "ada");
    assert_eq!(run["scenario_title"], "Browsing got slow");

    let second = stack.post("/api/runs", Some(json!({"scenario": "slow-browse"})), Role::Instructor).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);

    let running = stack.wait_for_state(&id, "baseline", Duration::from_secs(10)).await;
    assert!(running["baseline_at"].is_string());
    let current = stack.get_json("/api/runs/current").await;
    assert_eq!(current["id"], id.as_str());
    let runner = stack.config("runner").await;
    assert_eq!(runner["enabled"], true, "the scenario's load runs: {runner}");
    assert_eq!(runner["load"]["mix"]["browse"], 1);

    let resp = stack.post("/api/runs/current/stop", None, Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stopped: Value = resp.json().await.unwrap();
    assert_eq!(stopped["state"], "abandoned");
    assert_eq!(stopped["end_reason"], "stopped by ada (learner)");
    assert!(stopped["result"].is_null(), "stopping never counts as a win");
    assert_eq!(stack.config("runner").await["enabled"], false);
    assert_eq!(stack.get("/api/runs/current", Role::Learner).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.post("/api/runs/current/stop", None, Role::Learner).await.status(), StatusCode::NOT_FOUND);

    let detail = stack.get_json(&format!("/api/runs/{id}")).await;
    let states: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state")
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert_eq!(states, ["setup", "baseline", "abandoned"]);
    let seqs: Vec<i64> = detail["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "events are numbered in order");

    // A new run may start once the first ended; history lists both, newest first.
    let again = stack.start_run("slow-browse", 0.5).await;
    let history = stack.get_json("/api/runs?limit=5").await;
    let ids: Vec<&str> = history.as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, [again["id"].as_str().unwrap(), id.as_str()]);
    assert_eq!(stack.get_json("/api/runs?limit=1").await.as_array().unwrap().len(), 1);

    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let runs = |outcome| crate::helpers::metric(&metrics, "orchestrator_runs_total", &[("outcome", outcome)]);
    assert_eq!((runs("started"), runs("abandoned"), runs("resolved")), (Some(2.0), Some(1.0), Some(0.0)));
    assert_eq!(crate::helpers::metric(&metrics, "orchestrator_active_run", &[]), Some(1.0));

    let resp = stack.get("/api/runs?limit=0", Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap())[0].0, "limit");
    let resp = stack.get("/api/runs/not-a-uuid", Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(details(&resp.json().await.unwrap())[0].0, "id");
    let resp = stack.get(&format!("/api/runs/{}", uuid::Uuid::now_v7()), Role::Learner).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn reset_abandons_the_run_and_puts_every_service_back_to_defaults() {
    let stack = Stack::start(fixture_scenarios()).await;
    let run = stack.start_run("slow-browse", 0.05).await;
    let id = run["id"].as_str().unwrap();
    stack.wait_for_state(id, "incident", Duration::from_secs(15)).await;
    crate::helpers::wait_for("the fault on the shop", Duration::from_secs(10), || async {
        (stack.config("shop").await["workers"]["max_concurrent"] == 1).then_some(())
    })
    .await;
    // Something a learner changed on the gateway goes back too.
    let resp = stack.patch_config("gateway", Role::Learner, &json!({"upstream": {"pool_size": 32}})).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = stack.post("/api/reset", None, Role::Instructor).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["stopped_run"], id);
    assert_eq!(report["reset"], json!(["gateway", "runner", "shop"]));
    assert_eq!(report["failed"], json!([]));

    let ended = stack.get_json(&format!("/api/runs/{id}")).await;
    assert_eq!(ended["state"], "abandoned");
    assert_eq!(ended["end_reason"], "reset by grace (instructor)");
    assert_eq!(stack.config("shop").await, serde_json::to_value(shop::ShopConfig::default()).unwrap());
    assert_eq!(stack.config("gateway").await["upstream"]["pool_size"], 256);
    assert_eq!(stack.config("runner").await["enabled"], false);
    stack.stop().await;
}

#[tokio::test]
async fn a_run_whose_setup_cannot_reach_a_service_is_abandoned_with_the_reason() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let stack = Stack::start_with(fixture_scenarios(), |s| {
        s.services.insert("runner".into(), dead.clone());
    })
    .await;
    let run = stack.start_run("slow-browse", 0.5).await;
    let ended = stack.wait_for_state(run["id"].as_str().unwrap(), "abandoned", Duration::from_secs(20)).await;
    let reason = ended["end_reason"].as_str().unwrap();
    assert!(reason.starts_with("setup failed: runner: unreachable"), "{reason}");
    assert!(ended["baseline_at"].is_null(), "it never got to the baseline");
    stack.stop().await;
}

#[tokio::test]
async fn the_orchestrator_has_a_config_that_paces_hints_and_only_instructors_change() {
    let stack = Stack::start(fixture_scenarios()).await;
    let url = stack.url("/config");
    let read = stack.http.get(&url).bearer_auth(stack.token(Role::Learner)).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["service"], "orchestrator");
    assert_eq!(read["values"]["hints"], json!({"enabled": true, "min_interval_secs": 0}));

    let exam = json!({"hints": {"enabled": false}});
    let refused = stack.http.patch(&url).bearer_auth(stack.token(Role::Learner)).json(&exam).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(details(&refused)[0].0, "hints.enabled", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("pace the exercise"), "{refused}");
    let bad = json!({"hints": {"min_interval_secs": -1}});
    let bad = stack.http.patch(&url).bearer_auth(stack.token(Role::Instructor)).json(&bad).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // An exam: no hint while hints are off, the due ones once they are back on.
    let resp = stack.http.patch(&url).bearer_auth(stack.token(Role::Instructor)).json(&exam).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let run = stack.start_run("slow-browse", 0.1).await;
    let id = run["id"].as_str().unwrap();
    stack.wait_for_state(id, "incident", Duration::from_secs(20)).await;
    // The first hint is due 0.5 s into the incident at this scale; give it several ticks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hints = |run: &Value| run["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "hint").count();
    assert_eq!(hints(&stack.get_json(&format!("/api/runs/{id}")).await), 0, "no hint during an exam");
    // Both hints are due by now; an hour between hints lets exactly one through.
    let on = json!({"hints": {"enabled": true, "min_interval_secs": 3600}});
    let resp = stack.http.patch(&url).bearer_auth(stack.token(Role::Instructor)).json(&on).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    delivered(&stack, id, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hints(&stack.get_json(&format!("/api/runs/{id}")).await), 1, "the second hint waits out the interval");
    let unpaced = json!({"hints": {"min_interval_secs": 0}});
    let resp = stack.http.patch(&url).bearer_auth(stack.token(Role::Instructor)).json(&unpaced).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    delivered(&stack, id, 2).await;
    let history: Value = stack
        .http
        .get(stack.url("/config/history"))
        .bearer_auth(stack.token(Role::Learner))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    stack.stop().await;
}

async fn delivered(stack: &Stack, id: &str, at_least: usize) {
    crate::helpers::wait_for(&format!("{at_least} hints"), Duration::from_secs(20), || async {
        let run = stack.get_json(&format!("/api/runs/{id}")).await;
        let hints = run["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "hint").count();
        (hints >= at_least).then_some(())
    })
    .await;
}
