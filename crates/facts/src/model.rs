//! The `RequestFact` record: one HTTP request as seen by the service that answered it.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One request fact. `event_id` is the idempotency key: the lake stores each id once.
///
/// The strings are shared (`Arc<str>`): the facts of a batch repeat a handful of services,
/// methods, routes and user agents, and up to a million facts wait in memory for a flush.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFact {
    pub event_id: Uuid,
    pub event_time: DateTime<Utc>,
    #[serde(with = "shared_str")]
    pub service: Arc<str>,
    #[serde(with = "shared_str")]
    pub method: Arc<str>,
    #[serde(with = "shared_str")]
    pub path_template: Arc<str>,
    pub status_code: u16,
    pub latency_ms: f64,
    #[serde(with = "shared_opt_str", default)]
    pub user_agent_family: Option<Arc<str>>,
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

/// Hands out one shared copy of each distinct string (per batch, so it stays small).
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.0.insert(shared.clone());
        shared
    }
}

// serde's `rc` feature would do this, but turning it on rebuilds every crate of the workspace.
mod shared_str {
    use std::sync::Arc;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        Ok(Arc::from(String::deserialize(deserializer)?))
    }
}

mod shared_opt_str {
    use std::sync::Arc;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Arc<str>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(s) => serializer.serialize_some(&**s),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(deserializer)?.map(Arc::from))
    }
}
