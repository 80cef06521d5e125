//! The `RequestFact` record: one HTTP request as seen by the service that answered it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One request fact. `event_id` is the idempotency key: the lake stores each id once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFact {
    pub event_id: Uuid,
    pub event_time: DateTime<Utc>,
    pub service: String,
    pub method: String,
    pub path_template: String,
    pub status_code: u16,
    pub latency_ms: f64,
    pub user_agent_family: Option<String>,
}

impl RequestFact {
    /// Facts with status ≥ 500 count as errors in `metrics_1m`.
    pub fn is_error(&self) -> bool {
        self.status_code >= 500
    }

    /// Minute bucket (Unix seconds, floored) the fact belongs to.
    pub fn minute(&self) -> i64 {
        self.event_time.timestamp().div_euclid(60) * 60
    }
}
