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

impl RuntimeConfig for RunnerConfig {
    /// The runner has no injected faults: every field is an operational knob.
    fn instructor_only() -> &'static [&'static str] {
        &[]
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
}
