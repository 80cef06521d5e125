//! WebSocket floods on `/api/ws`: a client sending as fast as it can, or one huge frame, is
//! disconnected while the other clients keep receiving `slis`, and the hub stays usable.
//! (A client that never reads is covered in `hub.rs`.)

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use service_kit::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{Stack, Ws, fixture_scenarios, wait_for};

/// How the flooding connection ended: the close code the server sent, if any, and when.
/// With `once`, the message is sent a single time and the client just waits to be closed.
async fn flood_until_closed(ws: Ws, message: Message, once: bool, within: Duration) -> (Option<u16>, Duration, u64) {
    let started = Instant::now();
    let (mut sink, mut stream) = ws.stream.split();
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    });
    let mut sent = 0u64;
    if once {
        // The server may hang up mid-frame: a failed send is the expected outcome too.
        let _ = sink.send(message.clone()).await;
        sent = 1;
    }
    while !once && !reader.is_finished() && started.elapsed() < within {
        // Batches of frames, flushed together: as fast as the socket takes them.
        let mut failed = false;
        for _ in 0..50 {
            if sink.feed(message.clone()).await.is_err() {
                failed = true;
                break;
            }
            sent += 1;
        }
        if failed || sink.flush().await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(within.saturating_sub(started.elapsed()), reader).await;
    assert!(code.is_ok(), "the flooding client is still connected after {within:?} ({sent} messages sent)");
    (code.unwrap().unwrap(), started.elapsed(), sent)
}

async fn expect_slis(observer: &mut Ws, count: usize, run_id: &str) {
    for _ in 0..count {
        observer
            .until("slis while another client floods", Duration::from_secs(10), |m| {
                m["type"] == "slis" && m["run_id"] == run_id
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_messages_is_disconnected_while_the_others_keep_their_slis() {
    let stack = Stack::start(fixture_scenarios()).await;
    let run = stack.start_run("slow-browse", 0.1).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let mut observer = stack.ws(Role::Learner).await;
    expect_slis(&mut observer, 1, &run_id).await;

    let flooder = stack.ws(Role::Learner).await;
    let flood =
        tokio::spawn(flood_until_closed(flooder, Message::text("x".repeat(512)), false, Duration::from_secs(20)));
    // The observer keeps its stream while the flood runs.
    expect_slis(&mut observer, 3, &run_id).await;
    let (code, took, sent) = flood.await.unwrap();
    assert!(
        code.is_none_or(|c| c == orchestrator::ws::CLOSE_FLOOD),
        "closed with {code:?} after {took:?}, {sent} sent"
    );
    assert!(sent > u64::from(orchestrator::ws::MAX_INBOUND_PER_WINDOW), "the flood was real: {sent} sent");
    wait_for("the flooder unsubscribed", Duration::from_secs(5), || async { (stack.hub.clients() == 1).then_some(()) })
        .await;
    expect_slis(&mut observer, 2, &run_id).await;
    // New clients are still welcome.
    let mut late = stack.ws(Role::Learner).await;
    assert_eq!(late.next(Duration::from_secs(5)).await.unwrap()["type"], "state");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_frame_is_refused_without_being_buffered_and_the_others_keep_their_slis() {
    let stack = Stack::start(fixture_scenarios()).await;
    let run = stack.start_run("slow-browse", 0.1).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let mut observer = stack.ws(Role::Learner).await;
    expect_slis(&mut observer, 1, &run_id).await;

    // 1 MiB in one frame (well under the WebSocket library default of 16 MiB), sent once: the
    // server refuses it from the frame header.
    let flooder = stack.ws(Role::Learner).await;
    let huge = Message::binary(vec![0u8; 1024 * 1024]);
    let (code, took, _) = flood_until_closed(flooder, huge, true, Duration::from_secs(20)).await;
    assert!(
        code.is_none_or(|c| c == u16::from(CloseCode::Size) || c == u16::from(CloseCode::Protocol)),
        "closed with {code:?} after {took:?}"
    );
    wait_for("the flooder unsubscribed", Duration::from_secs(5), || async { (stack.hub.clients() == 1).then_some(()) })
        .await;
    expect_slis(&mut observer, 2, &run_id).await;
    stack.stop().await;
}
