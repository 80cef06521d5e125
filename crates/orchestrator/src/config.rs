//! The orchestrator's runtime configuration (`/config`): how the exercise is paced. Every
//! field shapes the exercise, not the system under test, so only the instructor role may
//! change them; learners read them like any service's config.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use service_kit::RuntimeConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Hint delivery.
    pub hints: HintsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HintsConfig {
    /// Deliver hints at all. `false` runs the scenario as an exam: hints stay due and are
    /// delivered once this is switched back on.
    pub enabled: bool,
    /// Least time between two hints, in seconds of the run (scaled by its `time_scale`): a hint
    /// that falls due sooner waits. 0 = as the scenario says.
    #[schemars(range(min = 0, max = 3600))]
    pub min_interval_secs: u32,
}

impl Default for HintsConfig {
    fn default() -> Self {
        Self { enabled: true, min_interval_secs: 0 }
    }
}

impl RuntimeConfig for OrchestratorConfig {
    fn instructor_only() -> &'static [&'static str] {
        &["hints"]
    }

    fn instructor_only_reason() -> &'static str {
        "the orchestrator's knobs pace the exercise, not the system under test: only the instructor role may change them"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_deliver_every_hint_when_the_scenario_says() {
        let config = OrchestratorConfig::default();
        assert!(config.hints.enabled);
        assert_eq!(config.hints.min_interval_secs, 0);
        let json = serde_json::to_value(&config).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"hints": {"enabled": true, "min_interval_secs": 0}}));
    }
}
