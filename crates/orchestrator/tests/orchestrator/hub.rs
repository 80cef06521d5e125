//! The WebSocket hub: late joiners get the state, a slow client never holds the others up.

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use orchestrator::model::{Entry, EventMessage, Milestone, MilestoneName, TimelineEntry, WsMessage};
use service_kit::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Stack, fixture_scenarios, wait_for};

#[tokio::test]
async fn a_late_joiner_gets_the_state_the_hints_so_far_and_the_latest_slis() {
    let stack = Stack::start(fixture_scenarios()).await;
    let mut early = stack.ws(Role::Learner).await;
    let idle = early.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(idle["type"], "state");
    assert!(idle["run"].is_null(), "no run yet: {idle}");

    let run = stack.start_run("slow-browse", 0.1).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let hint = early.until("a hint", Duration::from_secs(30), |m| m["type"] == "hint").await;
    assert_eq!(hint["run_id"], id.as_str());
    early.until("slis", Duration::from_secs(10), |m| m["type"] == "slis").await;

    let mut late = stack.ws(Role::Learner).await;
    let state = late.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(state["type"], "state");
    assert_eq!(state["run"]["id"], id.as_str());
    assert!(matches!(state["state"].as_str(), Some("incident" | "recovering")), "{state}");
    assert!(state["run"]["incident_at"].is_string());
    let replayed = late.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(replayed["type"], "hint");
    assert_eq!(replayed["text"], hint["text"]);
    late.until("slis", Duration::from_secs(5), |m| m["type"] == "slis" && m["run_id"] == id.as_str()).await;
    stack.stop().await;
}

fn big_event(seq: i32) -> WsMessage {
    WsMessage::Event(EventMessage {
        run_id: uuid::Uuid::nil(),
        entry: TimelineEntry {
            seq,
            at: Utc::now(),
            entry: Entry::Milestone(Milestone::new(MilestoneName::Resumed).with_note("x".repeat(16 * 1024))),
        },
    })
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_without_holding_up_the_others() {
    let stack = Stack::start_with(fixture_scenarios(), |s| s.ws_queue = 64).await;
    let mut fast = stack.ws(Role::Learner).await;
    let mut slow = stack.ws(Role::Learner).await;
    assert_eq!(fast.next(Duration::from_secs(5)).await.unwrap()["type"], "state");
    wait_for("both clients registered", Duration::from_secs(5), || async { (stack.hub.clients() == 2).then_some(()) })
        .await;

    // 48 MiB for each client: far past what socket buffers absorb for the one that never reads.
    const TOTAL: i32 = 3072;
    const BATCH: i32 = 32;
    for batch in 0..TOTAL / BATCH {
        for i in 0..BATCH {
            stack.hub.publish(&big_event(batch * BATCH + i));
        }
        for i in 0..BATCH {
            let msg = fast.next(Duration::from_secs(10)).await.expect("the reading client stays connected");
            assert_eq!(msg["seq"], batch * BATCH + i, "in order, none lost");
        }
    }
    assert_eq!(stack.hub.clients(), 1, "the client that never read was dropped");

    // It finds what was buffered for it, then a close frame saying why.
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = slow.stream.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(err) => panic!("the slow client should be closed cleanly: {err}"),
            }
        }
        None
    })
    .await
    .expect("the close frame arrives");
    let frame = close.expect("a close frame with a reason");
    assert_eq!(u16::from(frame.code), 1013);
    assert!(frame.reason.contains("too slow"), "{}", frame.reason);
    stack.stop().await;
}
