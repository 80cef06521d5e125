//! RequestFact emitter: every service posts one fact per answered request (route template,
//! never the raw path) to the facts service at `OBSERVASTACK_FACTS_URL`, in batches.
//!
//! The request path only does a `try_send` into a bounded queue: when the queue is full or the
//! facts service is down, facts are dropped and counted in
//! `observastack_facts_dropped_total{reason}`, so a dead facts service never slows a request.
//! Batches carry the stack's `service`-role token (`OBSERVASTACK_SERVICE_TOKEN`): the lake
//! stores nothing without one.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::Secret;

/// Env key: base URL of the facts service (e.g. `http://127.0.0.1:8104`); unset disables.
pub const ENV_FACTS_URL: &str = "OBSERVASTACK_FACTS_URL";
/// Env key: the `service`-role token sent as `Authorization: Bearer` with every batch.
pub const ENV_SERVICE_TOKEN: &str = "OBSERVASTACK_SERVICE_TOKEN";
/// Facts waiting to be sent; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Largest batch per POST.
pub const MAX_BATCH: usize = 1_000;
/// Longest a fact waits for its batch to fill.
pub const MAX_BATCH_DELAY: Duration = Duration::from_secs(1);
/// The route of a request that matched no route (also the metrics' label): such requests are
/// no facts, and raw paths never become labels.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Deadline of one POST; a slow facts service costs the sender task, never a request.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Methods the facts service accepts; requests with others are not reported.
const METHODS: &[Method] =
    &[Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// Wire form of one fact (the facts service's `RequestFact`).
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    pub event_id: Uuid,
    pub event_time: DateTime<Utc>,
    #[serde(serialize_with = "serialize_str")]
    pub service: Arc<str>,
    pub method: &'static str,
    pub path_template: String,
    pub status_code: u16,
    pub latency_ms: f64,
    pub user_agent_family: Option<&'static str>,
}

fn serialize_str<S: serde::Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

/// Where facts go, and the token they carry there.
#[derive(Debug, Clone)]
pub struct FactsTarget {
    /// Base URL of the facts service.
    pub url: String,
    /// A `service`-role token; without one the lake refuses every batch (counted as
    /// `unauthorized`).
    pub token: Option<Secret<String>>,
}

impl FactsTarget {
    pub fn new(url: impl Into<String>, token: Option<String>) -> Self {
        Self { url: url.into(), token: token.map(Secret::new) }
    }

    /// [`ENV_FACTS_URL`] and [`ENV_SERVICE_TOKEN`], read once when a service starts; `None`
    /// without a URL (no emitter).
    pub fn from_env() -> Option<Self> {
        let url = std::env::var(ENV_FACTS_URL).ok().filter(|u| !u.is_empty())?;
        let token = std::env::var(ENV_SERVICE_TOKEN).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        Some(Self::new(url, token))
    }
}

/// Handle held by [`crate::Metrics`]; cheap to call on every request.
pub struct FactEmitter {
    service: Arc<str>,
    tx: mpsc::Sender<Fact>,
    dropped: IntCounterVec,
}

impl std::fmt::Debug for FactEmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactEmitter").field("service", &self.service).finish_non_exhaustive()
    }
}

impl FactEmitter {
    /// Starts the sender task on the current runtime; `None` outside a runtime.
    pub fn start(service: &str, target: &FactsTarget, capacity: usize) -> Option<(Self, IntCounterVec)> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "observastack_facts_dropped_total",
                "RequestFacts not delivered to the facts service, by reason.",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let url = format!("{}/api/v1/facts", target.url.trim_end_matches('/'));
        handle.spawn(send_loop(url, target.token.clone(), rx, dropped.clone()));
        Some((Self { service: Arc::from(service), tx, dropped: dropped.clone() }, dropped))
    }

    /// Queues one fact; never waits.
    pub fn emit(&self, route: &str, method: &Method, status: u16, elapsed: Duration, user_agent: Option<&HeaderValue>) {
        if route == UNMATCHED_ROUTE || !route.starts_with('/') {
            return;
        }
        let Some(method) = METHODS.iter().find(|m| *m == method).map(Method::as_str) else {
            return;
        };
        let fact = Fact {
            event_id: Uuid::now_v7(),
            event_time: Utc::now(),
            service: self.service.clone(),
            method,
            path_template: route.to_owned(),
            status_code: status,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            user_agent_family: user_agent.and_then(|v| v.to_str().ok()).map(family),
        };
        match self.tx.try_send(fact) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped.with_label_values(&["queue_full"]).inc(),
            Err(mpsc::error::TrySendError::Closed(_)) => self.dropped.with_label_values(&["closed"]).inc(),
        }
    }
}

/// Coarse, low-cardinality user-agent family.
pub fn family(ua: &str) -> &'static str {
    let checks: [(&str, &'static str); 8] = [
        ("observastack-runner", "observastack-runner"),
        ("Edg/", "Edge"),
        ("Chrome/", "Chrome"),
        ("Firefox/", "Firefox"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
        ("reqwest", "reqwest"),
        ("python", "python"),
    ];
    checks.iter().find(|(needle, _)| ua.contains(needle)).map_or("other", |(_, name)| name)
}

async fn send_loop(url: String, token: Option<Secret<String>>, mut rx: mpsc::Receiver<Fact>, dropped: IntCounterVec) {
    let client = match reqwest::Client::builder().timeout(SEND_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "facts emitter disabled: no HTTP client");
            return;
        }
    };
    if token.is_none() {
        tracing::warn!("{ENV_SERVICE_TOKEN} is not set: the facts service will refuse this service's facts");
    }
    // One warning per process: a wrong token is a configuration error, not news every second.
    let mut warned = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(fact)) => batch.push(fact),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let mut request = client.post(&url).json(&batch);
        if let Some(token) = &token {
            request = request.bearer_auth(token.expose());
        }
        let reason = match request.send().await {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(status = %resp.status(), "the facts service refused this service's token; facts are dropped");
                }
                Some("unauthorized")
            }
            Ok(resp) if resp.status().is_client_error() => Some("rejected"),
            Ok(_) => Some("send_failed"),
            Err(_) => Some("send_failed"),
        };
        if let Some(reason) = reason {
            dropped.with_label_values(&[reason]).inc_by(n);
            tracing::debug!(facts = n, reason, "facts batch not delivered");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_prints_its_url_but_never_its_token() {
        let target = FactsTarget::new("http://127.0.0.1:8104", Some("eyJ.secret.sig".to_owned()));
        let printed = format!("{target:?}");
        assert!(printed.contains("127.0.0.1:8104") && !printed.contains("eyJ"), "{printed}");
        assert_eq!(target.token.as_ref().map(|t| t.expose().as_str()), Some("eyJ.secret.sig"));
    }
}
