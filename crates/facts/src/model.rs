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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestFact {
    /// Assigned (UUIDv7) when the fact comes without one.
    #[schema(required = false, value_type = Option<String>, format = Uuid)]
    pub event_id: Uuid,
    /// In UTC (`Z` or `+00:00`), from 2000-01-01 to at most 300 s in the future.
    #[schema(pattern = r"(Z|z|[+-]00:00)$")]
    pub event_time: DateTime<Utc>,
    /// 1–64 characters of a-z, 0-9, `-`, `_`.
    #[serde(with = "shared_str")]
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")]
    pub service: Arc<str>,
    #[serde(with = "shared_str")]
    #[schema(value_type = String, pattern = "^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$")]
    pub method: Arc<str>,
    /// The matched route template, never the raw path: starts with `/`, at most 256 characters,
    /// no query, fragment or whitespace, and ids only as placeholders (`{id}`, `:id`, `*`), never
    /// as numeric, UUID or hex segments.
    #[serde(with = "shared_str")]
    #[schema(value_type = String, min_length = 1, max_length = 256, pattern = r"^/[^?#\s\x00-\x1f\x7f-\x9f]*$")]
    pub path_template: Arc<str>,
    #[schema(minimum = 100, maximum = 599)]
    pub status_code: u16,
    /// From 0 to 3 600 000 (one hour).
    #[schema(minimum = 0, maximum = 3_600_000)]
    pub latency_ms: f64,
    /// 1–64 characters, no control characters.
    #[serde(with = "shared_opt_str", default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
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

/// UUIDv7s for the facts of one ingest batch that came without one (RFC 9562, a counter in
/// the 74 bits after the millisecond, "method 1"): a random start per batch, then +1 per fact.
/// Unique within the batch and, with a random 74-bit start, across batches; and consecutive
/// ids share most of their bytes, which Parquet then stores in about half the space of fully
/// random ones. (`Uuid::now_v7` also reads the kernel's randomness on every call, a few percent
/// of ingest's CPU at a million ids a second.)
#[derive(Debug)]
pub struct EventIds {
    millis: u128,
    counter: u128,
}

const COUNTER_BITS: u32 = 74;
const COUNTER_MASK: u128 = (1 << COUNTER_BITS) - 1;

impl EventIds {
    pub fn new(now: DateTime<Utc>) -> Self {
        let millis = u128::from(u64::try_from(now.timestamp_millis()).unwrap_or(0)) & 0xFFFF_FFFF_FFFF;
        Self { millis, counter: fastrand::u128(..) & COUNTER_MASK }
    }

    pub fn next_id(&mut self) -> Uuid {
        let c = self.counter;
        self.counter = (c + 1) & COUNTER_MASK;
        // unix_ts_ms (48) | ver 0111 | counter high 12 | var 10 | counter low 62
        Uuid::from_u128((self.millis << 80) | (0x7 << 76) | ((c >> 62) << 64) | (0b10 << 62) | (c & ((1 << 62) - 1)))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batch_ids_are_v7_rfc_variant_increasing_and_carry_the_millisecond() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T10:00:00.123Z").unwrap().with_timezone(&Utc);
        let mut ids = EventIds::new(now);
        let batch: Vec<Uuid> = (0..5_000).map(|_| ids.next_id()).collect();
        for pair in batch.windows(2) {
            assert!(pair[0] < pair[1] || pair[1].as_u128() & COUNTER_MASK == 0, "not increasing");
        }
        for id in &batch {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((secs, nanos / 1_000_000), (now.timestamp() as u64, 123));
        }
        let other: Vec<Uuid> = {
            let mut ids = EventIds::new(now);
            (0..5_000).map(|_| ids.next_id()).collect()
        };
        let all: HashSet<Uuid> = batch.iter().chain(&other).copied().collect();
        assert_eq!(all.len(), 10_000, "two batches in one millisecond collided");
    }
}
