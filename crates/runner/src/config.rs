//! The runner's runtime configuration (`/config`): whether load is offered, the load plan, the
//! SLI window and the per-request timeout. Changing `load` while enabled restarts the plan.

use scenario::load::LoadSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use service_kit::{FieldError, RuntimeConfig};

/// Longest SLI window `/slis` can serve, in seconds (the aggregator keeps this many seconds).
pub const MAX_WINDOW_SECS: u32 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Offer load now. `false` starts no new journeys; those in flight finish.
    pub enabled: bool,
    /// The open-loop plan: pattern, rates, journey mix, think time. A change while enabled
    /// restarts the plan's clock.
    pub load: LoadSpec,
    /// How `/slis` summarises.
    pub slis: SlisConfig,
    /// A request that takes longer fails its journey.
    #[schemars(range(min = 1, max = 120000))]
    pub request_timeout_ms: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self { enabled: false, load: LoadSpec::default(), slis: SlisConfig::default(), request_timeout_ms: 5000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SlisConfig {
    /// Default trailing window of `GET /slis`, in seconds.
    #[schemars(range(min = 1, max = 300))]
    pub window_secs: u32,
}

impl Default for SlisConfig {
    fn default() -> Self {
        Self { window_secs: 10 }
    }
}

/// Why a learner may not change the runner (quoted in the 403): throttling or stopping the load
/// would "heal" any scenario without a diagnosis.
pub const INSTRUCTOR_ONLY_REASON: &str = "during a run the offered load is part of the incident: only the instructor role (the orchestrator) may change the runner";

impl RuntimeConfig for RunnerConfig {
    /// Every field: the load is the scenario's, not a knob.
    fn instructor_only() -> &'static [&'static str] {
        &["enabled", "load", "slis", "request_timeout_ms"]
    }

    fn instructor_only_reason() -> &'static str {
        INSTRUCTOR_ONLY_REASON
    }

    fn check(&self) -> Vec<FieldError> {
        self.load.check().into_iter().map(|e| FieldError::new(format!("load.{}", e.field), e.rule, e.message)).collect()
    }
}

#[cfg(test)]
mod tests {
    use scenario::load::Pattern;

    use super::*;

    #[test]
    fn plan_rules_are_reported_under_load() {
        let config = RunnerConfig {
            load: LoadSpec { pattern: Pattern::Ramp, ..LoadSpec::default() },
            ..RunnerConfig::default()
        };
        let fields: Vec<String> = config.check().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["load.target_rate"]);
        assert!(RunnerConfig::default().check().is_empty());
    }

    #[test]
    fn every_top_level_field_is_instructor_only() {
        // A field added later must not become a learner knob by omission.
        let schema = serde_json::to_value(schemars::schema_for!(RunnerConfig)).unwrap_or_default();
        let mut fields: Vec<&str> =
            schema["properties"].as_object().map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        fields.sort_unstable();
        let mut locked = RunnerConfig::instructor_only().to_vec();
        locked.sort_unstable();
        assert!(!fields.is_empty());
        assert_eq!(fields, locked);
    }
}
