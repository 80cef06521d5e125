//! The WebSocket hub: fans typed messages out to every connected console without ever waiting
//! on one. Each client has a bounded queue for ordered messages (overflow closes that client,
//! which reconnects and gets the state again) and a latest-only slot for `slis`.
//!
//! The hub also keeps what a late joiner needs (the current `state`, the run's hints, the last
//! `completed` and `slis`), and hands it over under the same lock that registers the client, so
//! nothing published meanwhile is lost or doubled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};

use crate::metrics::OrchestratorMetrics;
use crate::model::{StateMessage, WsMessage};

/// Ordered messages a client may have queued before it is considered too slow.
pub const DEFAULT_QUEUE: usize = 256;

/// A serialized message, shared by every client's queue.
pub type Frame = Arc<str>;

#[derive(Default)]
struct Replay {
    state: Option<Frame>,
    hints: Vec<Frame>,
    completed: Option<Frame>,
    slis: Option<Frame>,
}

struct Client {
    ordered: mpsc::Sender<Frame>,
    slis: watch::Sender<Option<Frame>>,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<u64, Client>,
    replay: Replay,
    /// The run the replay belongs to.
    replay_run: Option<uuid::Uuid>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    queue: usize,
    metrics: OrchestratorMetrics,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("clients", &self.clients()).field("queue", &self.queue).finish()
    }
}

/// One connected client's side of the hub.
#[derive(Debug)]
pub struct Subscription {
    pub id: u64,
    /// Ordered messages; closed by the hub when the client fell `queue` messages behind.
    pub ordered: mpsc::Receiver<Frame>,
    /// The latest `slis` message.
    pub slis: watch::Receiver<Option<Frame>>,
}

impl Hub {
    pub fn new(queue: usize, metrics: OrchestratorMetrics) -> Arc<Self> {
        Arc::new(Self { inner: Mutex::new(Inner::default()), next_id: AtomicU64::new(1), queue: queue.max(1), metrics })
    }

    fn count_clients(&self, inner: &Inner) {
        self.metrics.ws_clients.set(i64::try_from(inner.clients.len()).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// Registers a client and queues what a late joiner needs: the state, the run's hints, the
    /// last `completed`, then the latest `slis`.
    pub fn subscribe(&self) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let replay = &inner.replay;
        let backlog: Vec<Frame> = replay.state.iter().chain(&replay.hints).chain(&replay.completed).cloned().collect();
        // The queue must hold the whole replay, however many hints a scenario has.
        let (tx, rx) = mpsc::channel(self.queue.max(backlog.len() + 1));
        for frame in backlog {
            let _ = tx.try_send(frame);
        }
        let (slis_tx, slis_rx) = watch::channel(replay.slis.clone());
        inner.clients.insert(id, Client { ordered: tx, slis: slis_tx });
        self.count_clients(&inner);
        Subscription { id, ordered: rx, slis: slis_rx }
    }

    pub fn unsubscribe(&self, id: u64) {
        let mut inner = self.lock();
        inner.clients.remove(&id);
        self.count_clients(&inner);
    }

    /// Sends `message` to every client without waiting. A client whose queue is full is
    /// dropped: its writer sees the queue close and tells the client why.
    pub fn publish(&self, message: &WsMessage) {
        let frame: Frame = match serde_json::to_string(message) {
            Ok(text) => Arc::from(text),
            Err(err) => {
                tracing::error!(error = %err, "cannot serialize a hub message");
                return;
            }
        };
        let mut inner = self.lock();
        match message {
            WsMessage::State(StateMessage { run, .. }) => {
                // A new run starts a fresh replay; the same run keeps its hints and result.
                let same_run = inner.replay.state.is_some() && inner.replay_run == run.as_ref().map(|r| r.id);
                if !same_run {
                    inner.replay.hints.clear();
                    inner.replay.completed = None;
                    inner.replay.slis = None;
                }
                inner.replay_run = run.as_ref().map(|r| r.id);
                inner.replay.state = Some(frame.clone());
            }
            WsMessage::Hint(_) => inner.replay.hints.push(frame.clone()),
            WsMessage::Completed(_) => inner.replay.completed = Some(frame.clone()),
            WsMessage::Slis(_) => {
                inner.replay.slis = Some(frame.clone());
                for client in inner.clients.values() {
                    client.slis.send_replace(Some(frame.clone()));
                }
                return;
            }
            WsMessage::Event(_) => {}
        }
        inner.clients.retain(|id, client| match client.ordered.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(client = id, "websocket client too slow; closing it");
                self.metrics.ws_dropped.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        self.count_clients(&inner);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::model::{Entry, EventMessage, Hint, HintMessage, HintTrigger, Milestone, MilestoneName, TimelineEntry};

    fn hint(index: usize) -> WsMessage {
        WsMessage::Hint(HintMessage {
            run_id: Uuid::nil(),
            at: Utc::now(),
            hint: Hint { index, text: format!("hint {index}"), trigger: HintTrigger::Time },
        })
    }

    fn event(seq: i32) -> WsMessage {
        WsMessage::Event(EventMessage {
            run_id: Uuid::nil(),
            entry: TimelineEntry {
                seq,
                at: Utc::now(),
                entry: Entry::Milestone(Milestone::new(MilestoneName::Resumed)),
            },
        })
    }

    fn state(run: Option<Uuid>) -> WsMessage {
        let run = run.map(|id| crate::model::RunSummary {
            id,
            scenario_id: "s".into(),
            scenario_title: "S".into(),
            state: crate::model::RunState::Incident,
            time_scale: 1.0,
            started_by: "ada".into(),
            started_by_role: service_kit::Role::Learner,
            started_at: Utc::now(),
            baseline_at: None,
            incident_at: None,
            recovering_at: None,
            ended_at: None,
            end_reason: None,
            result: None,
        });
        WsMessage::State(StateMessage { state: run.as_ref().map(|r| r.state), run })
    }

    fn kind(frame: &Frame) -> String {
        let value: serde_json::Value = serde_json::from_str(frame).unwrap_or_default();
        format!("{} {}", value["type"].as_str().unwrap_or_default(), value["index"])
    }

    #[test]
    fn a_late_joiner_gets_state_then_hints_and_a_new_run_starts_afresh() {
        let hub = Hub::new(8, OrchestratorMetrics::unregistered());
        let run = Uuid::now_v7();
        hub.publish(&state(Some(run)));
        hub.publish(&hint(0));
        hub.publish(&event(3));
        hub.publish(&hint(1));
        hub.publish(&state(Some(run)));
        let mut late = hub.subscribe();
        let replay: Vec<String> = std::iter::from_fn(|| late.ordered.try_recv().ok()).map(|f| kind(&f)).collect();
        assert_eq!(replay, ["state null", "hint 0", "hint 1"]);

        hub.publish(&state(Some(Uuid::now_v7())));
        let mut next = hub.subscribe();
        let replay: Vec<String> = std::iter::from_fn(|| next.ordered.try_recv().ok()).map(|f| kind(&f)).collect();
        assert_eq!(replay, ["state null"], "hints of the previous run are not replayed");
    }

    #[test]
    fn a_full_queue_drops_that_client_only_and_slis_never_queue() {
        let hub = Hub::new(4, OrchestratorMetrics::unregistered());
        let mut reader = hub.subscribe();
        let mut stalled = hub.subscribe();
        for seq in 0..4 {
            hub.publish(&event(seq));
            assert!(reader.ordered.try_recv().is_ok());
        }
        assert_eq!(hub.clients(), 2, "a full queue is not yet an overflow");
        hub.publish(&event(4));
        assert_eq!(hub.clients(), 1);
        let buffered = std::iter::from_fn(|| stalled.ordered.try_recv().ok()).count();
        assert_eq!(buffered, 4, "what was queued is still delivered");
        assert!(matches!(stalled.ordered.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert!(reader.ordered.try_recv().is_ok());
        assert_eq!(hub.metrics.ws_dropped.get(), 1);
    }
}
