//! `GET /api/ws`: one task per console connection, writing what the hub queues for it. Ordered
//! messages go first; the latest `slis` is sent whenever the queue is empty. A write that does
//! not finish in time, or a queue the hub closed for falling behind, ends the connection with
//! a close frame saying so: the console reconnects and gets the current state again.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;

use crate::hub::Hub;

/// Longest a single write to a client may take before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Close code for "too slow, reconnect" (RFC 6455 1013: try again later).
pub const CLOSE_TOO_SLOW: u16 = 1013;

/// Close code for "the orchestrator is going away" (RFC 6455 1001).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Close code for a client that floods the hub (RFC 6455 1008: policy violation).
pub const CLOSE_FLOOD: u16 = 1008;

/// Largest inbound message or frame; consoles send nothing but control frames.
pub const MAX_INBOUND_MESSAGE: usize = 64 * 1024;

/// Inbound messages a client may send per [`INBOUND_WINDOW`] before it is disconnected.
pub const MAX_INBOUND_PER_WINDOW: u32 = 100;

const INBOUND_WINDOW: Duration = Duration::from_secs(1);

pub async fn serve_client(hub: Arc<Hub>, socket: WebSocket, mut stopping: watch::Receiver<bool>) {
    let mut sub = hub.subscribe();
    // The latest snapshot (if any) counts as unseen, so a late joiner gets it after the replay.
    sub.slis.mark_changed();
    let (mut sink, mut stream) = socket.split();
    let mut window_start = tokio::time::Instant::now();
    let mut inbound = 0u32;
    loop {
        tokio::select! {
            biased;
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    let close = CloseFrame { code: CLOSE_GOING_AWAY, reason: "the orchestrator is stopping; reconnect".into() };
                    let _ = send(&mut sink, Message::Close(Some(close))).await;
                    break;
                }
            }
            frame = sub.ordered.recv() => match frame {
                Some(frame) => {
                    if !send(&mut sink, Message::Text(Utf8Bytes::from(&*frame))).await {
                        break;
                    }
                }
                None => {
                    let close = CloseFrame { code: CLOSE_TOO_SLOW, reason: "too slow: messages were dropped; reconnect".into() };
                    let _ = send(&mut sink, Message::Close(Some(close))).await;
                    break;
                }
            },
            changed = sub.slis.changed() => {
                if changed.is_err() {
                    break;
                }
                let latest = sub.slis.borrow_and_update().clone();
                if let Some(frame) = latest
                    && !send(&mut sink, Message::Text(Utf8Bytes::from(&*frame))).await
                {
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                // Pings are answered by the protocol layer; text from consoles means nothing.
                // Errors include a message past `MAX_INBOUND_MESSAGE`.
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {
                    if window_start.elapsed() >= INBOUND_WINDOW {
                        window_start = tokio::time::Instant::now();
                        inbound = 0;
                    }
                    inbound += 1;
                    if inbound > MAX_INBOUND_PER_WINDOW {
                        tracing::info!(client = sub.id, "websocket client flooding; disconnected");
                        let close = CloseFrame { code: CLOSE_FLOOD, reason: "too many messages".into() };
                        let _ = send(&mut sink, Message::Close(Some(close))).await;
                        break;
                    }
                }
            },
        }
    }
    hub.unsubscribe(sub.id);
}

async fn send(sink: &mut SplitSink<WebSocket, Message>, frame: Message) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await, Ok(Ok(())))
}
