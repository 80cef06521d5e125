//! A validated scenario: what the orchestrator runs and the console shows. Built only by
//! `Scenario::parse`/`load_dir`, so every value here has passed lint.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::field_value;
use crate::condition::Condition;
use crate::load::LoadSpec;

/// Smallest and largest `time_scale` a run may be started with.
pub const TIME_SCALE_MIN: f64 = 0.01;
pub const TIME_SCALE_MAX: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Difficulty {
    Beginner,
    Intermediate,
    Advanced,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Kebab-case, equal to the file stem.
    pub id: String,
    pub title: String,
    pub difficulty: Difficulty,
    pub summary: String,
    pub learning_objectives: Vec<String>,
    pub baseline: Baseline,
    /// The load offered during the baseline and the incident.
    pub load: LoadSpec,
    /// In time order of `at_secs` (stable for equal offsets).
    pub faults: Vec<Fault>,
    /// What the scenario names as the cause: the fields a targeted fix changes. Grading
    /// calls a learner's change *targeted* when it touches one of them.
    pub cause: Vec<Cause>,
    pub hints: Vec<Hint>,
    pub success: Success,
    pub solution: Solution,
    pub debrief: Debrief,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    /// Healthy load before the first fault, seconds (> 0).
    pub duration_secs: f64,
}

/// A config change the orchestrator applies with an instructor token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// A service of the catalog (`shop`, `gateway`).
    pub service: String,
    /// Seconds after the incident start (the end of the baseline).
    pub at_secs: f64,
    /// RFC 7396 merge patch onto the service's `/config`.
    pub patch: Value,
    /// Shown on the timeline.
    pub note: Option<String>,
}

/// Fields of one service that count as the cause of the incident.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Cause {
    pub service: String,
    /// Dotted config paths; a change of the path or of anything under it counts.
    pub fields: Vec<String>,
}

impl Cause {
    /// Whether a change of `field` on `service` touches this cause: the same path, a path
    /// under it, or an object that holds it.
    pub fn covers(&self, service: &str, field: &str) -> bool {
        self.service == service && self.fields.iter().any(|c| dotted_overlap(c, field))
    }
}

/// `a` and `b` name the same config node, or one is inside the other.
pub fn dotted_overlap(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.'));
    a == b || inside(a, b) || inside(b, a)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hint {
    #[serde(flatten)]
    pub trigger: HintTrigger,
    pub text: String,
}

/// When a hint is shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HintTrigger {
    /// Seconds after the incident start.
    After { after_secs: f64 },
    /// Once `when` has held continuously for `for_secs` seconds (0: the first time it holds).
    When { when: Condition, for_secs: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Success {
    /// How long every condition and predicate must hold without a break, seconds (> 0).
    pub window_secs: f64,
    pub conditions: Vec<Condition>,
    /// Checked on the services' live `/config` values.
    pub config: Vec<ConfigPredicate>,
}

/// A predicate on one field of a service's live configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigPredicate {
    pub service: String,
    /// Dotted path into the service's config, e.g. `release.version`.
    pub field: String,
    #[serde(flatten)]
    pub expect: Expectation,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    Equal(Value),
    NotEqual(Value),
    OneOf(Vec<Value>),
    AtLeast(f64),
    AtMost(f64),
}

impl ConfigPredicate {
    /// Whether the predicate holds on `config` (the service's `/config` `values`); a missing
    /// field never holds.
    pub fn holds(&self, config: &Value) -> bool {
        let Some(value) = field_value(config, &self.field) else {
            return false;
        };
        match &self.expect {
            Expectation::Equal(expected) => json_eq(value, expected),
            Expectation::NotEqual(expected) => !json_eq(value, expected),
            Expectation::OneOf(options) => options.iter().any(|o| json_eq(value, o)),
            Expectation::AtLeast(min) => value.as_f64().is_some_and(|v| v >= *min),
            Expectation::AtMost(max) => value.as_f64().is_some_and(|v| v <= *max),
        }
    }
}

/// JSON equality where `2` and `2.0` are the same number, since TOML tells them apart and a
/// config does not.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// What the learner reads after the run; `patches` are what an operator would apply with a
/// learner token, and what end-to-end tests apply to prove the scenario can be solved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Solution {
    pub summary: String,
    pub steps: Vec<String>,
    pub patches: Vec<ServicePatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePatch {
    pub service: String,
    pub patch: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Debrief {
    pub what_broke: String,
    pub why: String,
    pub lessons: Vec<String>,
}

/// A `time_scale` outside `TIME_SCALE_MIN..=TIME_SCALE_MAX`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeScaleError(pub f64);

impl std::fmt::Display for TimeScaleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "time_scale must be between {TIME_SCALE_MIN} and {TIME_SCALE_MAX}; got {}", self.0)
    }
}

impl std::error::Error for TimeScaleError {}

impl Scenario {
    /// The same scenario with every duration of the run multiplied by `time_scale`: the
    /// baseline, fault offsets, hint delays and hold times, the success window, and the load
    /// plan's timeline (ramp, spike and step times). Rates, think time and thresholds stay, so
    /// a compressed run offers the same load and is judged by the same bar.
    pub fn scaled(&self, time_scale: f64) -> Result<Scenario, TimeScaleError> {
        if !(TIME_SCALE_MIN..=TIME_SCALE_MAX).contains(&time_scale) {
            return Err(TimeScaleError(time_scale));
        }
        let s = |secs: f64| secs * time_scale;
        let mut out = self.clone();
        out.baseline.duration_secs = s(out.baseline.duration_secs);
        for fault in &mut out.faults {
            fault.at_secs = s(fault.at_secs);
        }
        for hint in &mut out.hints {
            match &mut hint.trigger {
                HintTrigger::After { after_secs } => *after_secs = s(*after_secs),
                HintTrigger::When { for_secs, .. } => *for_secs = s(*for_secs),
            }
        }
        out.success.window_secs = s(out.success.window_secs);
        out.load.ramp_secs = s(out.load.ramp_secs);
        out.load.spike_at_secs = s(out.load.spike_at_secs);
        out.load.spike_secs = s(out.load.spike_secs);
        for step in &mut out.load.steps {
            step.at_secs = s(step.at_secs);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn predicate(expect: Expectation) -> ConfigPredicate {
        ConfigPredicate { service: "shop".into(), field: "db.pool_size".into(), expect }
    }

    #[test]
    fn predicates_compare_numbers_by_value_and_miss_absent_fields() {
        let config = json!({"db": {"pool_size": 10}, "release": {"version": "2.4.0"}});
        assert!(predicate(Expectation::Equal(json!(10.0))).holds(&config));
        assert!(predicate(Expectation::AtLeast(10.0)).holds(&config));
        assert!(!predicate(Expectation::AtMost(9.0)).holds(&config));
        assert!(predicate(Expectation::OneOf(vec![json!(5), json!(10)])).holds(&config));
        assert!(!predicate(Expectation::NotEqual(json!(10))).holds(&config));
        let version = ConfigPredicate {
            service: "shop".into(),
            field: "release.version".into(),
            expect: Expectation::NotEqual(json!("2.4.1")),
        };
        assert!(version.holds(&config));
        assert!(!predicate(Expectation::Equal(json!(10))).holds(&json!({})));
    }

    #[test]
    fn predicates_serialize_in_the_file_shape() {
        let json = serde_json::to_value(predicate(Expectation::AtLeast(8.0))).unwrap_or_default();
        assert_eq!(json, json!({"service": "shop", "field": "db.pool_size", "at_least": 8.0}));
    }
}
