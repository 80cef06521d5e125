//! The lake's runtime configuration (`/config`): the flush and rollup schedules and the limits of
//! `POST /api/v1/sql`. Every field is the instructor's: the lake is the exercise's instrument.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use service_kit::RuntimeConfig;

/// Why a learner may not change the lake (quoted in the 403).
pub const INSTRUCTOR_ONLY_REASON: &str = "the fact lake is the exercise's instrument (the Service Health page reads it): only the instructor role may change its schedules and limits";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FactsConfig {
    /// How often acknowledged facts are committed from the WAL to Iceberg, in milliseconds
    /// (also early at 200 000 unflushed facts). The dashboard reads the WAL tail as well, so
    /// this moves no fact's visibility, only the commit rate.
    #[schemars(range(min = 100, max = 3_600_000))]
    pub flush_interval_ms: u64,
    /// How often `metrics_1m` is rolled up, in seconds.
    #[schemars(range(min = 60, max = 86_400))]
    pub rollup_interval_secs: u64,
    /// Limits of `POST /api/v1/sql`.
    pub sql: SqlLimits,
}

impl Default for FactsConfig {
    fn default() -> Self {
        Self { flush_interval_ms: 60_000, rollup_interval_secs: 3_600, sql: SqlLimits::default() }
    }
}

impl FactsConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn rollup_interval(&self) -> Duration {
        Duration::from_secs(self.rollup_interval_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SqlLimits {
    /// A statement still planning or running after this long is cancelled (422 `sql_time_limit`).
    #[schemars(range(min = 100, max = 300_000))]
    pub timeout_ms: u64,
    /// Memory one statement's operators (joins, aggregates, sorts) may reserve, in MiB; beyond
    /// it the statement fails (422 `sql_memory_limit`). Nothing spills to disk.
    #[schemars(range(min = 1, max = 8_192))]
    pub memory_limit_mib: u64,
    /// Rows an answer may hold; the rest are cut off.
    #[schemars(range(min = 1, max = 10_000))]
    pub max_rows: usize,
    /// Statements running at once; one more is refused with 503 (retry).
    #[schemars(range(min = 1, max = 16))]
    pub max_concurrent: u32,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self { timeout_ms: 10_000, memory_limit_mib: 256, max_rows: 10_000, max_concurrent: 2 }
    }
}

impl SqlLimits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn memory_limit_bytes(&self) -> usize {
        usize::try_from(self.memory_limit_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

impl RuntimeConfig for FactsConfig {
    /// Every field: a learner who could stretch the SQL limits or the schedules could blind
    /// the page the exercise is diagnosed with.
    fn instructor_only() -> &'static [&'static str] {
        &["flush_interval_ms", "rollup_interval_secs", "sql"]
    }

    fn instructor_only_reason() -> &'static str {
        INSTRUCTOR_ONLY_REASON
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_top_level_field_is_instructor_only() {
        // A field added later must not become a learner knob by omission.
        let schema = serde_json::to_value(schemars::schema_for!(FactsConfig)).unwrap_or_default();
        let mut fields: Vec<&str> =
            schema["properties"].as_object().map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        fields.sort_unstable();
        let mut locked = FactsConfig::instructor_only().to_vec();
        locked.sort_unstable();
        assert!(!fields.is_empty());
        assert_eq!(fields, locked);
    }

    #[test]
    fn the_docs_name_every_knob() {
        fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value.as_object() {
                Some(map) => map.iter().for_each(|(key, child)| {
                    leaves(&if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") }, child, out)
                }),
                None => out.push(prefix.to_owned()),
            }
        }
        let mut knobs = Vec::new();
        leaves("", &serde_json::to_value(FactsConfig::default()).unwrap_or_default(), &mut knobs);
        assert!(knobs.len() >= 6, "{knobs:?}");
        for doc in ["configuration.md", "facts.md"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(doc);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let missing: Vec<&String> = knobs.iter().filter(|k| !text.contains(&format!("`{k}`"))).collect();
            assert!(missing.is_empty(), "docs/{doc} does not name {missing:?}");
        }
    }

    #[test]
    fn the_defaults_are_the_binarys_defaults() {
        let config = FactsConfig::default();
        assert_eq!(config.flush_interval(), Duration::from_secs(60));
        assert_eq!(config.rollup_interval(), Duration::from_secs(3600));
        assert_eq!(config.sql.memory_limit_bytes(), 256 << 20);
    }
}
